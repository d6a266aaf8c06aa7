"""Google Workspace connector: Gmail API through a service account with domain-wide delegation."""

from mailtriage.connectors.gmail.client import ClientStats, GmailClient, RetryPolicy
from mailtriage.connectors.gmail.mailbox import GmailMailbox
from mailtriage.connectors.gmail.push import GmailWatch, PushVerifier, webhook_routes
from mailtriage.connectors.gmail.quota import COSTS, QuotaLimiter

__all__ = [
    "COSTS",
    "ClientStats",
    "GmailClient",
    "GmailMailbox",
    "GmailWatch",
    "PushVerifier",
    "QuotaLimiter",
    "RetryPolicy",
    "webhook_routes",
]
