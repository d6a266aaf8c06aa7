"""A stateful loopback emulator of the Gmail API, for tests, demos and benchmarks.

It serves the paths google-api-python-client calls (`/gmail/v1/users/{userId}/...`), the
multipart batch endpoint, a service-account token endpoint that checks JWT signatures and
domain-wide delegation, a Google-style certs endpoint, and pushes Pub/Sub-style
notifications signed with a test OIDC key.
"""

from mailtriage.sandbox.gmail.keys import PushSigner, ServiceAccountKey, new_rsa_key
from mailtriage.sandbox.gmail.server import GmailEmulator, PushSubscription
from mailtriage.sandbox.gmail.state import COSTS, LABEL_PALETTE, GmailError, GmailState

__all__ = [
    "COSTS",
    "LABEL_PALETTE",
    "GmailEmulator",
    "GmailError",
    "GmailState",
    "PushSigner",
    "PushSubscription",
    "ServiceAccountKey",
    "new_rsa_key",
]
