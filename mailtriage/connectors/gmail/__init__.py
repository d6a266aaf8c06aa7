"""Google Workspace connector: Gmail API through a service account with domain-wide delegation.

`build_gmail_mailboxes()` and `build_gmail_push()` are what `mailtriage.connectors`
calls to assemble the service; the rest is exported for tests, doctor and benchmarks.
"""

from __future__ import annotations

from mailtriage.connectors.gmail.client import (
    ClientStats,
    GmailClient,
    RetryPolicy,
    service_account_info,
)
from mailtriage.connectors.gmail.mailbox import GmailMailbox
from mailtriage.connectors.gmail.push import GmailPush, GmailWatch, PushVerifier, webhook_routes
from mailtriage.connectors.gmail.quota import COSTS, QuotaLimiter
from mailtriage.core.config import Settings
from mailtriage.core.ports import StateStore


def build_gmail_mailboxes(settings: Settings, store: StateStore) -> list[GmailMailbox]:
    """One GmailMailbox per `provider = "gmail"` mailbox; the key file is read once."""
    wanted = [m for m in settings.mailboxes if m.provider == "gmail"]
    if not wanted:
        return []
    info = None if settings.gmail.anonymous else service_account_info(settings.gmail)
    return [GmailMailbox.from_settings(settings, m, store, info=info) for m in wanted]


def build_gmail_push(settings: Settings, mailboxes: list[GmailMailbox]) -> GmailPush | None:
    """The Gmail PushChannel, or None when no Pub/Sub topic is configured (polling only)."""
    if not mailboxes or not settings.gmail.pubsub_topic:
        return None
    return GmailPush(settings.gmail, mailboxes)


__all__ = [
    "COSTS",
    "ClientStats",
    "GmailClient",
    "GmailMailbox",
    "GmailPush",
    "GmailWatch",
    "PushVerifier",
    "QuotaLimiter",
    "RetryPolicy",
    "build_gmail_mailboxes",
    "build_gmail_push",
    "service_account_info",
    "webhook_routes",
]
