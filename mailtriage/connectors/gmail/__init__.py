"""Google Workspace connector: Gmail API through a service account with domain-wide delegation.

`build_gmail_mailboxes()` and `build_gmail_push()` are what `mailtriage.connectors`
calls to assemble the service; the rest is exported for tests, doctor and benchmarks.
"""

from __future__ import annotations

from mailtriage.connectors.gmail.auth import (
    Delegation,
    delegation_from_settings,
    service_account_info,
)
from mailtriage.connectors.gmail.client import ClientStats, GmailClient, RetryPolicy, shared_for
from mailtriage.connectors.gmail.mailbox import GmailMailbox
from mailtriage.connectors.gmail.push import GmailPush, GmailWatch, PushVerifier, webhook_routes
from mailtriage.connectors.gmail.quota import COSTS, QuotaLimiter
from mailtriage.connectors.gmail.shared import GmailShared
from mailtriage.core.config import Settings
from mailtriage.core.ports import StateStore


def build_gmail_mailboxes(
    settings: Settings, store: StateStore, *, delegation: Delegation | None = None
) -> list[GmailMailbox]:
    """One GmailMailbox per `provider = "gmail"` mailbox; the credentials are read once, and
    the mailboxes share one service, one pool of threads and connections (`shared`)."""
    wanted = [m for m in settings.mailboxes if m.provider == "gmail"]
    if not wanted:
        return []
    delegation = delegation or delegation_from_settings(settings.gmail)
    shared = shared_for(settings.gmail, len(wanted))
    return [
        GmailMailbox.from_settings(settings, m, store, delegation=delegation, shared=shared)
        for m in wanted
    ]


def build_gmail_push(settings: Settings, mailboxes: list[GmailMailbox]) -> GmailPush | None:
    """The Gmail PushChannel, or None when no Pub/Sub topic is configured (polling only)."""
    if not mailboxes or not settings.gmail.pubsub_topic:
        return None
    return GmailPush(settings.gmail, mailboxes)


__all__ = [
    "COSTS",
    "ClientStats",
    "Delegation",
    "GmailClient",
    "GmailMailbox",
    "GmailPush",
    "GmailShared",
    "GmailWatch",
    "PushVerifier",
    "QuotaLimiter",
    "RetryPolicy",
    "build_gmail_mailboxes",
    "build_gmail_push",
    "delegation_from_settings",
    "service_account_info",
    "shared_for",
    "webhook_routes",
]
