"""MIME for Gmail: turn a raw message into a core `Message`, and build forwards.

Gmail has no native forward, so a forward is a new message sent with `messages.send`: the
original goes along as a `message/rfc822` attachment (or inline), `Reply-To` is the
original sender so the department answers the customer directly, and the loop-guard header
lets mailtriage recognise its own forwards. A message too large to send gets a notice
instead (`build_notice`): the same headers, and where to find the original.
"""

from __future__ import annotations

import email
import email.policy
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import quote

from mailtriage.core.actions import Forward
from mailtriage.core.extract import parse_rfc822
from mailtriage.core.message import Message
from mailtriage.core.rules import LOOP_HEADER, ORIGIN_HEADER


def parse_raw(raw: bytes, *, mailbox: str, provider_id: str) -> Message:
    """A core `Message` from RFC 822 bytes (Gmail `format=raw`), by the core's own parser."""
    return parse_rfc822(raw, mailbox=mailbox, provider_id=provider_id)


def _forward_headers(message: Message, forward: Forward, message_id: str | None) -> EmailMessage:
    """A new message from the shared mailbox to `forward.to`, with the forward's headers:
    Fwd: subject, Reply-To, its (deterministic) Message-ID and the loop guard."""
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
    out["Message-ID"] = message_id or make_msgid(domain=domain)
    out[LOOP_HEADER] = f"forwarded; mailbox={message.mailbox}"
    if message.internet_message_id:
        out[ORIGIN_HEADER] = message.internet_message_id
    return out


def build_forward(
    original: bytes,
    message: Message,
    forward: Forward,
    *,
    mode: str = "attach",
    message_id: str | None = None,
) -> bytes:
    """The RFC 822 bytes of a forward of `original` to `forward.to`.

    `message_id`: the forward's deterministic Message-ID (`core.intents`), by which its
    sent copy is found again after a lost answer.
    """
    out = _forward_headers(message, forward, message_id)
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


def web_link(message: Message) -> str:
    """Where staff with access to the shared mailbox open the original in Gmail: a search by
    its Message-ID (the `rfc822msgid:` operator, support.google.com/mail/answer/7190), or
    by its id when it has none."""
    base = f"https://mail.google.com/mail/?authuser={quote(message.mailbox)}"
    if message.internet_message_id:
        term = "rfc822msgid:" + message.internet_message_id.strip().strip("<>")
        return f"{base}#search/{quote(term, safe='')}"
    return f"{base}#all/{quote(message.provider_id, safe='')}"


def build_notice(
    message: Message, forward: Forward, *, size: int, limit: int, message_id: str | None
) -> bytes:
    """What is forwarded when the message is too large to send: a note with the original's
    subject, sender, date and a link to it in the shared mailbox."""
    out = _forward_headers(message, forward, message_id)
    mb = 1024 * 1024
    lines = [
        forward.note.strip(),
        "",
        f"This message is too large to forward ({size / mb:.1f} MB; Gmail sends at most "
        f"{limit / mb:.0f} MB). It is in the shared mailbox {message.mailbox}:",
        "",
        f"  From:    {message.sender or '(unknown)'}",
        f"  Subject: {message.subject or '(no subject)'}",
    ]
    if message.date is not None:
        lines.append(f"  Date:    {format_datetime(message.date)}")
    lines += [f"  Link:    {web_link(message)}", ""]
    out.set_content("\n".join(lines).lstrip("\n"))
    return out.as_bytes()
