"""The provider-neutral message model.

A `Message` holds what classification and routing need and nothing more: attachment
metadata but never attachment bytes, the cleaned text but never the raw MIME.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox address with its optional display name."""

    email: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class Attachment:
    """Attachment metadata only: content never reaches the prompt or the ledger."""

    filename: str
    content_type: str
    size: int


# Recorded with the decision of a message read by its headers only (`Message.too_large`).
TOO_LARGE = "too large: routed by headers and subject"

# Header names (lower case) kept on a Message: the ones rules and audits need.
KEPT_HEADERS: frozenset[str] = frozenset(
    {
        "auto-submitted",
        "x-autoreply",
        "x-autorespond",
        "x-auto-response-suppress",
        "precedence",
        "list-id",
        "list-unsubscribe",
        "return-path",
        "content-type",
        "x-mailtriage",
        "x-mailtriage-origin",
        "in-reply-to",
        "references",
        "x-failed-recipients",
        "x-ms-exchange-generated-message-source",
        "x-spam-flag",
    }
)


@dataclass(slots=True)
class Message:
    """One incoming message, as the core sees it.

    `provider_id` is the id the connector needs to act on the message (Graph immutable id,
    Gmail message id, or a file path for previews). `text` is the cleaned, quote-stripped
    plain text; it is not stored in the ledger unless `store_text = true`.
    """

    mailbox: str
    provider_id: str
    subject: str = ""
    sender: Address | None = None
    reply_to: list[Address] = field(default_factory=list)
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    date: datetime | None = None
    internet_message_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    size: int = 0
    # Categories / labels already on the message in the provider (used by rules and learning).
    categories: list[str] = field(default_factory=list)
    # Set when the provider already shows mailtriage's processed marker on the message.
    processed_marker: bool = False
    # Set when the message was larger than `runtime.max_message_mb`: only its headers were
    # read, so `text` and `attachments` are empty and `size` is the provider's estimate.
    too_large: bool = False

    def header(self, name: str) -> str:
        """Return a kept header's value ('' when absent); `name` is case-insensitive."""
        return self.headers.get(name.lower(), "")

    @property
    def reply_address(self) -> Address | None:
        """Where an answer should go: Reply-To when set, else From."""
        if self.reply_to:
            return self.reply_to[0]
        return self.sender
