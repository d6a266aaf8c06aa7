"""Rules that run before any model: what to skip, and deterministic sender/domain routes.

Skipping is recorded in the ledger with its reason, never silent.
"""

from __future__ import annotations

import re

from mailtriage.core.config import Settings
from mailtriage.core.decision import ConfidenceSource, Decision, Skip
from mailtriage.core.intents import is_forward_message_id
from mailtriage.core.message import Message

# Set on every message mailtriage sends (forwards), so it never triages its own mail.
LOOP_HEADER = "X-Mailtriage"
# Carries the forwarded original's Message-ID.
ORIGIN_HEADER = "X-Mailtriage-Origin"

_OOO_SUBJECT = re.compile(
    r"^\s*(?:"
    r"out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?reply|autoreply|auto:|"
    r"away from (?:the )?office|on vacation|vacation reply|"
    r"r[ée]ponse automatique|absence du bureau|absent(?:e)? du bureau|message d'absence|"
    r"je suis absent|en cong[ée]s?\b|"
    r"abwesenheitsnotiz|automatische antwort"
    r")",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"^\s*(?:"
    r"undeliver(?:ed|able)|delivery status notification|delivery (?:has )?failed|"
    r"mail delivery failed|returned mail|failure notice|message not delivered|"
    r"non remis|remise impossible|[ée]chec de (?:la )?remise|message non distribu[ée]|"
    r"unzustellbar"
    r")",
    re.IGNORECASE,
)
_BOUNCE_SENDER = re.compile(r"^(?:mailer-daemon|postmaster|mail-daemon)@", re.IGNORECASE)


def skip_reason(message: Message, settings: Settings | None = None) -> Skip | None:
    """Why this message must not be routed at all, or None.

    The loop guard does not rest on one header, which a relay may strip: mailtriage's own
    forwards are also known by their Message-ID (Gmail) and, with `settings`, by a sender
    that is one of the configured (triaged) mailboxes.
    """
    if message.header(LOOP_HEADER) or message.header(ORIGIN_HEADER):
        return Skip("sent by mailtriage (loop guard)")
    if is_forward_message_id(message.internet_message_id):
        return Skip("sent by mailtriage (loop guard: Message-ID)")
    if (
        settings is not None
        and message.sender is not None
        and settings.mailbox(message.sender.email) is not None
    ):
        return Skip(f"sent by triaged mailbox {message.sender.email} (loop guard)")
    auto = message.header("auto-submitted").strip().lower()
    if auto and auto != "no":
        return Skip(f"auto-reply (Auto-Submitted: {auto[:40]})")
    if message.header("x-autoreply") or message.header("x-autorespond"):
        return Skip("auto-reply (X-Autoreply)")
    precedence = message.header("precedence").strip().lower()
    if precedence == "auto_reply":
        return Skip("auto-reply (Precedence: auto_reply)")
    if _OOO_SUBJECT.match(message.subject or ""):
        return Skip("auto-reply (out-of-office subject)")
    ctype = message.header("content-type").lower()
    if "multipart/report" in ctype and "delivery-status" in ctype:
        return Skip("delivery status notification")
    if message.header("x-failed-recipients"):
        return Skip("bounce (X-Failed-Recipients)")
    if message.sender and _BOUNCE_SENDER.match(message.sender.email):
        return Skip("bounce (mailer-daemon sender)")
    if _BOUNCE_SUBJECT.match(message.subject or ""):
        return Skip("bounce (delivery failure subject)")
    return None


def route_by_sender(message: Message, settings: Settings) -> Decision | None:
    """A configured sender or domain decides without a model."""
    if message.sender is None:
        return None
    email = message.sender.email.lower()
    domain = message.sender.domain
    for category in settings.categories_for(message.mailbox):
        if email in category.senders:
            return _rule(category.key, f"sender {email} is routed to {category.name}")
        for d in category.domains:
            if domain == d or domain.endswith("." + d):
                return _rule(category.key, f"domain {domain} is routed to {category.name}")
    return None


def _rule(key: str, reason: str) -> Decision:
    return Decision(
        category=key,
        confidence=1.0,
        reason=reason,
        classifier="rule",
        confidence_source=ConfidenceSource.RULE,
    )
