"""Graph message JSON (as msgraph-sdk models) → the core `Message`."""

from __future__ import annotations

from typing import Any

from msgraph.generated.models.message import Message as GraphMessage
from msgraph.generated.models.recipient import Recipient

from mailtriage.core.message import KEPT_HEADERS, Address, Attachment, Message

# mailtriage's processed marker: a named single-value extended property (MAPI string).
MARKER_GUID = "{6c2f0b8e-3d41-4a7e-9b55-7a1d2e4c9f30}"
MARKER_ID = f"String {MARKER_GUID} Name MailtriageProcessed"

# What the core needs from a message; the delta query selects exactly this.
SELECT = [
    "id",
    "subject",
    "from",
    "sender",
    "replyTo",
    "toRecipients",
    "ccRecipients",
    "receivedDateTime",
    "internetMessageId",
    "internetMessageHeaders",
    "body",
    "categories",
    "hasAttachments",
    "isRead",
]
EXPAND_MARKER = f"singleValueExtendedProperties($filter=id eq '{MARKER_ID}')"


def _clean(text: str, html: bool) -> str:
    try:
        from mailtriage.core.text import clean_body
    except ImportError:  # the shared cleaner is not there yet: keep the provider's text
        return text.strip()
    return str(clean_body(text, html=html))


def _address(r: Recipient | None) -> Address | None:
    ea = r.email_address if r is not None else None
    if ea is None or not ea.address:
        return None
    return Address(email=ea.address.strip().lower(), name=(ea.name or "").strip())


def _addresses(rs: list[Recipient] | None) -> list[Address]:
    return [a for a in (_address(r) for r in rs or []) if a is not None]


def has_marker(gm: GraphMessage) -> bool:
    return any(
        (p.id or "").lower() == MARKER_ID.lower() and p.value
        for p in gm.single_value_extended_properties or []
    )


def is_removed(gm: GraphMessage) -> bool:
    return "@removed" in (gm.additional_data or {})


def to_message(
    mailbox: str, gm: GraphMessage, attachments: list[Attachment] | None = None
) -> Message:
    """Build the core Message; raises ValueError when the item is unusable."""
    if not gm.id:
        raise ValueError("message without id")
    headers: dict[str, str] = {}
    for h in gm.internet_message_headers or []:
        name = (h.name or "").lower()
        if name in KEPT_HEADERS and name not in headers:
            headers[name] = h.value or ""
    body_text, is_html = "", False
    if gm.body is not None and gm.body.content:
        ctype: Any = gm.body.content_type
        is_html = str(getattr(ctype, "value", ctype)).lower() == "html"
        body_text = _clean(gm.body.content, is_html)
    sender = _address(gm.from_) or _address(gm.sender)
    return Message(
        mailbox=mailbox,
        provider_id=gm.id,
        subject=gm.subject or "",
        sender=sender,
        reply_to=_addresses(gm.reply_to),
        to=_addresses(gm.to_recipients),
        cc=_addresses(gm.cc_recipients),
        date=gm.received_date_time,
        internet_message_id=gm.internet_message_id,
        headers=headers,
        text=body_text,
        attachments=attachments or [],
        size=len(body_text.encode()),
        categories=list(gm.categories or []),
        processed_marker=has_marker(gm),
    )
