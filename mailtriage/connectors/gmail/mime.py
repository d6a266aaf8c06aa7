"""MIME for Gmail: turn a raw message into a core `Message`, and build forwards.

Gmail has no native forward, so a forward is a new message sent with `messages.send`: the
original goes along as a `message/rfc822` attachment (or inline), `Reply-To` is the
original sender so the department answers the customer directly, and the loop-guard header
lets mailtriage recognise its own forwards.
"""

from __future__ import annotations

import email
import email.policy
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid, parsedate_to_datetime
from typing import Any

from mailtriage.core.actions import Forward
from mailtriage.core.errors import MessageParseError
from mailtriage.core.message import KEPT_HEADERS, Address, Attachment, Message

try:  # the core's RFC 822 parser (mailtriage/core/extract.py), written concurrently
    from mailtriage.core.extract import parse_rfc822 as _core_parse  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - until core/extract.py lands on main
    _core_parse = None

try:
    from mailtriage.core.rules import LOOP_HEADER  # type: ignore[import-not-found,unused-ignore,attr-defined]
except ImportError:  # pragma: no cover - until core/rules.py lands on main
    LOOP_HEADER = "X-Mailtriage"


def parse_raw(raw: bytes, *, mailbox: str, provider_id: str) -> Message:
    """A core `Message` from RFC 822 bytes (Gmail `format=raw`)."""
    if _core_parse is not None:
        parsed: Message = _core_parse(raw, mailbox=mailbox, provider_id=provider_id)
        return parsed
    return _temporary_parse(raw, mailbox=mailbox, provider_id=provider_id)


def _addresses(values: list[str]) -> list[Address]:
    return [Address(email=a.lower(), name=n) for n, a in getaddresses(values) if a]


def _temporary_parse(raw: bytes, *, mailbox: str, provider_id: str) -> Message:
    """TEMPORARY minimal stdlib parse, used only until `core/extract.parse_rfc822` lands."""
    try:
        msg: Any = email.message_from_bytes(raw, policy=email.policy.default)
        subject = str(msg.get("subject", ""))
        body = msg.get_body(preferencelist=("plain", "html"))
        text = str(body.get_content()) if body is not None else ""
    except Exception as exc:
        raise MessageParseError(f"unreadable MIME: {exc}") from exc
    date: datetime | None
    try:
        date = parsedate_to_datetime(str(msg["date"])) if msg["date"] else None
    except (TypeError, ValueError):
        date = None
    senders = _addresses([str(v) for v in msg.get_all("from", [])])
    attachments = [
        Attachment(
            filename=part.get_filename() or "",
            content_type=part.get_content_type(),
            size=len(part.get_payload(decode=True) or b""),
        )
        for part in msg.iter_attachments()
    ]
    return Message(
        mailbox=mailbox,
        provider_id=provider_id,
        subject=subject,
        sender=senders[0] if senders else None,
        reply_to=_addresses([str(v) for v in msg.get_all("reply-to", [])]),
        to=_addresses([str(v) for v in msg.get_all("to", [])]),
        cc=_addresses([str(v) for v in msg.get_all("cc", [])]),
        date=date,
        internet_message_id=(str(msg["message-id"]).strip() or None) if msg["message-id"] else None,
        headers={k.lower(): str(v) for k, v in msg.items() if k.lower() in KEPT_HEADERS},
        text=text,
        attachments=attachments,
        size=len(raw),
    )


def build_forward(
    original: bytes,
    message: Message,
    forward: Forward,
    *,
    mode: str = "attach",
) -> bytes:
    """The RFC 822 bytes of a forward of `original` to `forward.to`."""
    out = EmailMessage()
    domain = message.mailbox.rpartition("@")[2] or "localhost"
    out["From"] = message.mailbox
    out["To"] = ", ".join(forward.to)
    subject = message.subject or "(no subject)"
    out["Subject"] = subject if subject.lower().startswith(("fwd:", "tr:")) else f"Fwd: {subject}"
    reply_to = forward.reply_to or (str(message.reply_address) if message.reply_address else None)
    if reply_to:
        out["Reply-To"] = reply_to
    out["Date"] = format_datetime(datetime.now().astimezone())
    out["Message-ID"] = make_msgid(domain=domain)
    out[LOOP_HEADER] = f"forwarded; mailbox={message.mailbox}"
    if message.internet_message_id:
        out["X-Mailtriage-Origin"] = message.internet_message_id
    note = forward.note.strip()
    if mode == "inline":
        original_msg: Any = email.message_from_bytes(original, policy=email.policy.default)
        body = original_msg.get_body(preferencelist=("plain", "html"))
        text = str(body.get_content()) if body is not None else ""
        header = "\n".join(
            f"{name}: {original_msg[name]}"
            for name in ("From", "Date", "Subject", "To")
            if original_msg[name]
        )
        out.set_content(f"{note}\n\n---------- Forwarded message ---------\n{header}\n\n{text}")
        for part in original_msg.iter_attachments():
            data = part.get_payload(decode=True) or b""
            maintype, _, subtype = part.get_content_type().partition("/")
            if maintype in ("message", "multipart"):  # attached mail: pass it on as a file
                data, maintype, subtype = part.as_bytes(), "application", "octet-stream"
            out.add_attachment(
                data, maintype=maintype, subtype=subtype, filename=part.get_filename() or "part"
            )
    else:
        out.set_content(note or f"Forwarded by mailtriage from {message.mailbox}.")
        out.add_attachment(email.message_from_bytes(original, policy=email.policy.default))
    return out.as_bytes()
