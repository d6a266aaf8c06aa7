"""Graph message JSON → the core `Message`.

Intake reads the raw JSON of SDK requests (`send_primitive_async(..., "bytes")`) rather
than msgraph-sdk models: deserialising one `Message` model costs ~20 ms of CPU in
msgraph-sdk 1.65 (the Entity field table is rebuilt per object), which would cap
intake at a few dozen messages per second per core.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mailtriage.core.extract import MAX_TEXT_CHARS
from mailtriage.core.message import KEPT_HEADERS, Address, Attachment, Message
from mailtriage.core.text import clean_body

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

Json = dict[str, Any]


def _address(r: Any) -> Address | None:
    ea = r.get("emailAddress") if isinstance(r, dict) else None
    if not isinstance(ea, dict) or not ea.get("address"):
        return None
    return Address(email=str(ea["address"]).strip().lower(), name=str(ea.get("name") or "").strip())


def _addresses(rs: Any) -> list[Address]:
    return [a for a in (_address(r) for r in rs or []) if a is not None]


def has_marker(gm: Json) -> bool:
    return any(
        str(p.get("id", "")).lower() == MARKER_ID.lower() and p.get("value")
        for p in gm.get("singleValueExtendedProperties") or []
    )


def is_removed(gm: Json) -> bool:
    return "@removed" in gm


def _date(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def attachments_of(items: Any) -> list[Attachment]:
    return [
        Attachment(
            str(a.get("name") or ""),
            str(a.get("contentType") or "application/octet-stream"),
            int(a.get("size") or 0),
        )
        for a in items or []
        if isinstance(a, dict) and not a.get("isInline")
    ]


def to_message(mailbox: str, gm: Json, attachments: list[Attachment] | None = None) -> Message:
    """Build the core Message; raises ValueError/TypeError when the item is unusable."""
    if not gm.get("id"):
        raise ValueError("message without id")
    headers: dict[str, str] = {}
    for h in gm.get("internetMessageHeaders") or []:
        name = str(h.get("name") or "").lower()
        if name in KEPT_HEADERS and name not in headers:
            headers[name] = str(h.get("value") or "")
    body = gm.get("body") or {}
    content = str(body.get("content") or "")
    is_html = str(body.get("contentType") or "").lower() == "html"
    subject = str(gm.get("subject") or "")
    # The same bound as RFC 822 extraction: the model reads far less than this anyway.
    text = clean_body(content, html=is_html, subject=subject)[:MAX_TEXT_CHARS] if content else ""
    return Message(
        mailbox=mailbox,
        provider_id=str(gm["id"]),
        subject=subject,
        sender=_address(gm.get("from")) or _address(gm.get("sender")),
        reply_to=_addresses(gm.get("replyTo")),
        to=_addresses(gm.get("toRecipients")),
        cc=_addresses(gm.get("ccRecipients")),
        date=_date(gm.get("receivedDateTime")),
        internet_message_id=gm.get("internetMessageId"),
        headers=headers,
        text=text,
        attachments=attachments or [],
        size=len(text.encode()),
        categories=[str(c) for c in gm.get("categories") or []],
        processed_marker=has_marker(gm),
    )
