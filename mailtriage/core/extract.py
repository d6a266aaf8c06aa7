"""Raw RFC 822 bytes to a `Message`.

The structure is parsed with `email.policy.compat32`, which never raises on malformed
input (it records defects instead); headers, charsets and transfer encodings are then decoded
here, leniently, because real mail declares charsets Python does not know ("default",
"unknown-8bit", "chinesebig5"…), folds encoded words mid-character and forgets boundaries. The
modern `policy.default` raises on such input when a header or body is read, so it is not used.

Attachments are described (name, type, size), never decoded into the text; TNEF (winmail.dat)
is opened to recover the body and the real attachment names; attached messages (forwards) add a
bounded excerpt of their text; delivery and read reports keep only their human-readable part.
"""

from __future__ import annotations

import binascii
import codecs
import mimetypes
import re
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.errors import MissingHeaderBodySeparatorDefect
from email.message import Message as MimePart
from email.parser import BytesParser
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from functools import lru_cache
from itertools import islice

import tnefparse

from mailtriage.core.errors import MessageParseError
from mailtriage.core.message import KEPT_HEADERS, Address, Attachment, Message
from mailtriage.core.skeleton import skeleton
from mailtriage.core.text import clean_body, html_to_text, truncate

__all__ = ["decode_header_value", "decode_text", "parse_head", "parse_rfc822"]

UNEXPECTED = "unexpected parser failure"
MAX_HEADER_CHARS = 2_000
# Bytes of a too-large message's header block read by `parse_head`.
HEAD_LIMIT = 256 * 1024
MAX_SUBJECT_CHARS = 1_000
MAX_ADDRESSES = 200
MAX_FILENAME_CHARS = 255
MAX_TEXT_CHARS = 100_000
# Encoded characters of one text part that are decoded; the rest is never read.
MAX_TEXT_PART_CHARS = 2_000_000
MAX_TNEF_BYTES = 20_000_000
MAX_DEPTH = 30
MAX_FORWARDS = 5
FORWARD_EXCERPT_CHARS = 5_000

_BODY_SUBTYPES = frozenset({"plain", "html", "enriched", "richtext"})
_TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
_REPORT_MACHINE_PARTS = frozenset(
    {"delivery-status", "disposition-notification", "feedback-report", "global-delivery-status"}
)
_PARSER = BytesParser(policy=compat32)
# The marker header naming the decoded size of bodies `skeleton` left out (per parse).
_SIZE_HEADER: ContextVar[str | None] = ContextVar("mailtriage_size_header", default=None)
_NOT_MAIL = (
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "Outlook .msg (OLE compound file), not RFC 822"),
    (b"\x78\x9f\x3e\x22", "bare TNEF (winmail.dat) data, not RFC 822"),
    (b"%PDF", "PDF document, not a mail message"),
    (b"\x89PNG", "PNG image, not a mail message"),
    (b"PK\x03\x04", "ZIP archive, not a mail message"),
)
_HEADER_FIELD = re.compile(rb"^(?:From |[\x21-\x39\x3b-\x7e]+:)")

_BOGUS_CHARSETS = frozenset(
    {"default", "default_charset", "unknown-8bit", "x-unknown", "unknown", "x-user-defined",
     "charset", "none", "us-ascii", "ascii", "7bit", "8bit", "_autodetect_all", "auto"}
)  # fmt: skip
_CHARSET_ALIASES = {
    "chinesebig5": "big5hkscs",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "iso8859-1": "cp1252",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "windows-874": "cp874",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "iso-8859-8-i": "iso-8859-8",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "utf8": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
}
_STATEFUL_7BIT = ("utf-7", "iso2022", "hz")
_SINGLE_BYTE = ("cp1", "cp8", "iso8859", "latin", "koi8", "mac", "ascii", "cp437", "cp850")

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_BETWEEN_WORDS = re.compile(r"(?<=\?=)[ \t\r\n]+(?==\?)")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]+")
_WS = re.compile(r"\s+")
_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_BOUNDARY_LINE = re.compile(r"^--(\S[^\r\n]{0,68}?)[ \t]*\r?\n[\w-]+:", re.M)
_HTML_START = re.compile(r"\s*<(?:!doctype\s+html|html|head|body)\b", re.I)
# Plain alternatives that only say to look at the HTML one ("your e-mail program does not
# support HTML", "version HTML de ce message"...).
_STUB_MAX_CHARS = 600
_HTML_STUB = re.compile(
    r"\bhtml\b.{0,80}\b(?:support|enabled|capable|version|format|view|display|affich|lire|"
    r"navigateur|browser)|(?:support|view|display|affich|version|lire|read)\w*\b.{0,80}\bhtml\b",
    re.I | re.S,
)
_ENRICHED_TAG = re.compile(r"<(/?)[A-Za-z0-9-]{1,60}>")


@dataclass(slots=True)
class _Parts:
    """What a walk over the MIME tree collected, in reading order."""

    segments: list[tuple[bool, str]] = field(default_factory=list)  # (is_html, text)
    attachments: list[Attachment] = field(default_factory=list)
    forwards: list[str] = field(default_factory=list)

    def has_text(self, *, html: bool) -> bool:
        return any(is_html is html and text.strip() for is_html, text in self.segments)

    def extend(self, other: _Parts) -> None:
        self.segments += other.segments
        self.attachments += other.attachments
        self.forwards += other.forwards


def parse_rfc822(raw: bytes, *, mailbox: str, provider_id: str) -> Message:
    """Parse one raw message; raise `MessageParseError` only when nothing usable is in it.

    Any other failure inside the standard library's parser on hostile input is reported as a
    `MessageParseError` too (reason prefixed with UNEXPECTED), so the message is recorded and
    left alone instead of stopping the sync; tests assert that prefix never shows up.

    Memory: above `skeleton.SHRINK_ABOVE` (1 MiB) the message is first reduced to its
    headers, text openings and attachment sizes (`core.skeleton`), so parsing adds at most
    about 50 MB whatever the size of `raw`; callers cap `raw` itself (`max_message_mb`).
    """
    token = _SIZE_HEADER.set(None)
    try:
        return _parse_message(raw, mailbox=mailbox, provider_id=provider_id)
    except MessageParseError:
        raise
    except (
        ValueError,
        LookupError,
        UnicodeError,
        TypeError,
        IndexError,
        AttributeError,
        RecursionError,
    ) as error:
        raise MessageParseError(f"{UNEXPECTED}: {type(error).__name__}: {error}") from error
    finally:
        _SIZE_HEADER.reset(token)


def parse_head(head: bytes, *, mailbox: str, provider_id: str, size: int) -> Message:
    """A message too large to read whole, from its header block: routed by its headers
    and subject (`Message.too_large`). Reads at most `HEAD_LIMIT` bytes of `head`."""
    head = head[:HEAD_LIMIT].removeprefix(b"\xef\xbb\xbf").lstrip(b"\r\n\t ")
    blank = re.search(rb"\r?\n\r?\n", head)
    if blank is not None:
        head = head[: blank.start()]
    elif len(head) == HEAD_LIMIT:
        head = head[: head.rfind(b"\n") + 1]
    try:
        mime = _PARSER.parsebytes(head + b"\r\n\r\n", headersonly=True)
        headers = _index_headers(mime)
        subject = _subject(headers)
    except (ValueError, LookupError, UnicodeError, TypeError, IndexError) as error:
        raise MessageParseError(f"{UNEXPECTED}: {type(error).__name__}: {error}") from error
    if len(mime) == 0:
        raise MessageParseError("no RFC 822 header found: not a mail message")
    message = _message(headers, subject, "", [], mailbox, provider_id, size)
    message.too_large = True
    return message


def _parse_message(raw: bytes, *, mailbox: str, provider_id: str) -> Message:
    mime = _parse(raw)
    headers = _index_headers(mime)
    subject = _subject(headers)
    text, attachments = _extract(mime, subject, depth=0)
    message = _message(headers, subject, text, attachments, mailbox, provider_id, len(raw))
    if not (message.subject or message.text or message.sender or message.attachments):
        raise MessageParseError("no sender, subject, text or attachment found")
    return message


def _message(
    headers: _Headers,
    subject: str,
    text: str,
    attachments: list[Attachment],
    mailbox: str,
    provider_id: str,
    size: int,
) -> Message:
    return Message(
        mailbox=mailbox,
        provider_id=provider_id,
        subject=subject,
        sender=_first(_addresses(headers, "from") or _addresses(headers, "sender")),
        reply_to=_addresses(headers, "reply-to"),
        to=_addresses(headers, "to"),
        cc=_addresses(headers, "cc"),
        date=_date(headers),
        internet_message_id=_message_id(headers),
        headers=_kept_headers(headers),
        text=text,
        attachments=attachments,
        size=size,
    )


def _parse(raw: bytes) -> MimePart:
    data = raw.removeprefix(b"\xef\xbb\xbf").lstrip(b"\r\n\t ")
    if not data:
        raise MessageParseError("empty message")
    for signature, reason in _NOT_MAIL:
        if data.startswith(signature):
            raise MessageParseError(reason)
    reduced = skeleton(data)
    if reduced is not None:
        data = reduced.data
        _SIZE_HEADER.set(reduced.size_header)
    mime = _PARSER.parsebytes(data)
    if any(isinstance(d, MissingHeaderBodySeparatorDefect) for d in mime.defects) and len(mime):
        mime = _PARSER.parsebytes(_repair_headers(data))
    if len(mime) == 0:
        raise MessageParseError("no RFC 822 header found: not a mail message")
    return mime


def _repair_headers(data: bytes) -> bytes:
    """Re-indent header lines that lost their folding whitespace (seen from Exchange).

    Only lines followed by more header fields before the blank line are re-indented: a
    message whose body simply lacks the blank separator is left as it is.
    """
    end = data.find(b"\n\n") if b"\r\n\r\n" not in data else data.find(b"\r\n\r\n")
    if end < 0:
        return data
    lines = data[:end].split(b"\n")
    last_field = max(i for i, line in enumerate(lines) if _HEADER_FIELD.match(line) or i == 0)
    fixed = [
        line
        if i == 0 or i > last_field or _HEADER_FIELD.match(line) or line[:1] in b" \t"
        else b" " + line
        for i, line in enumerate(lines)
    ]
    return b"\n".join(fixed) + data[end:]


# --- charsets ------------------------------------------------------------------------------


def decode_text(data: bytes, charset: str | None) -> str:
    """Bytes to text whatever the declared charset says; never raises.

    Order: the declared charset (or a known alias), UTF-8, then cp1252 with replacement. For
    single-byte charsets UTF-8 is tried first, since valid UTF-8 mislabelled as Latin-1 is
    common and the reverse practically never decodes.
    """
    codecs_to_try = _codecs_for(charset)
    if data.isascii() and not (codecs_to_try and codecs_to_try[0].startswith(_STATEFUL_7BIT)):
        return data.decode("ascii")
    for codec in codecs_to_try:
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    declared = next((c for c in codecs_to_try if c != "utf-8"), "cp1252")
    return data.decode(declared, errors="replace")


@lru_cache(maxsize=256)
def _codecs_for(charset: str | None) -> tuple[str, ...]:
    name = (charset or "").strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(name, name)
    if not name or name in _BOGUS_CHARSETS:
        return ("utf-8", "cp1252")
    try:
        codec = codecs.lookup(name).name
    except (LookupError, ValueError):  # unknown name, or one with a NUL in it
        return ("utf-8", "cp1252")
    if codec == "utf-8":
        return ("utf-8",)
    if codec.startswith(_SINGLE_BYTE):
        return ("utf-8", codec)
    return (codec, "utf-8")


# --- headers -------------------------------------------------------------------------------


def decode_header_value(
    value: str, *, limit: int = MAX_HEADER_CHARS, charset: str | None = None
) -> str:
    """A header as readable text: unfolded, RFC 2047 words decoded, raw 8-bit bytes decoded.

    `charset` is the guess for raw 8-bit bytes (the body's charset: senders that put raw
    bytes in headers write them in the same charset as the body).
    """
    value = _FOLD.sub("", value[: limit * 8])
    if _has_surrogates(value):
        value = decode_text(_to_bytes(value), charset)
    if "=?" in value:
        value = _decode_words(value)
    value = _WS.sub(" ", _CONTROL.sub(" ", value)).strip()
    return value[:limit]


def _has_surrogates(value: str) -> bool:
    return not value.isascii() and any("\udc80" <= char <= "\udcff" for char in value)


def _decode_words(value: str) -> str:
    """RFC 2047, joining adjacent words of one charset before decoding (split characters)."""
    value = _BETWEEN_WORDS.sub("", value)
    out: list[str] = []
    pending = bytearray()
    pending_charset = ""
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        charset = match.group(1).split("*", 1)[0].lower()
        if match.start() != position or charset != pending_charset:
            out.append(decode_text(bytes(pending), pending_charset))
            pending.clear()
            out.append(value[position : match.start()])
        pending += _word_bytes(match.group(2), match.group(3))
        pending_charset = charset
        position = match.end()
    out.append(decode_text(bytes(pending), pending_charset))
    out.append(value[position:])
    return "".join(out)


def _word_bytes(encoding: str, payload: str) -> bytes:
    data = _to_bytes(payload)
    try:
        if encoding in "bB":
            return binascii.a2b_base64(data + b"=" * (-len(data) % 4)) or data
        return binascii.a2b_qp(data, header=True)
    except (binascii.Error, ValueError):
        return data


@dataclass(frozen=True, slots=True)
class _Headers:
    """Raw header values by lower-cased name, read once and looked up many times."""

    values: dict[str, list[str]]
    charset: str | None  # guess for raw 8-bit header bytes

    def first(self, name: str, *, limit: int = MAX_HEADER_CHARS) -> str:
        found = self.values.get(name)
        return decode_header_value(found[0], limit=limit, charset=self.charset) if found else ""


def _index_headers(mime: MimePart) -> _Headers:
    values: dict[str, list[str]] = {}
    for key, value in mime.raw_items():
        values.setdefault(key.lower(), []).append(str(value))
    charsets = (_charset(part) for part in islice(mime.walk(), 8))
    return _Headers(values, next((c for c in charsets if c), None))


def _subject(headers: _Headers) -> str:
    return headers.first("subject", limit=MAX_SUBJECT_CHARS)


def _kept_headers(headers: _Headers) -> dict[str, str]:
    return {name: headers.first(name) for name in KEPT_HEADERS if name in headers.values}


def _addresses(headers: _Headers, name: str) -> list[Address]:
    raw = headers.values.get(name)
    if not raw:
        return []
    values = [_FOLD.sub("", value[: MAX_HEADER_CHARS * 8]) for value in raw]
    values = [
        decode_text(_to_bytes(v), headers.charset) if _has_surrogates(v) else v for v in values
    ]
    found = [
        Address(email=email, name=decode_header_value(name, limit=200))
        for name, email in ((n, _clean_email(e)) for n, e in getaddresses(values))
        if email
    ]
    if not found:  # malformed list: keep whatever looks like an address
        found = [Address(email=email) for value in values for email in _EMAIL.findall(value)]
    return found[:MAX_ADDRESSES]


def _clean_email(value: str) -> str:
    value = value.strip()
    if _EMAIL.fullmatch(value):
        return value
    match = _EMAIL.search(value)
    return match.group(0) if match else ""


def _first(addresses: list[Address]) -> Address | None:
    return addresses[0] if addresses else None


def _date(headers: _Headers) -> datetime | None:
    value = headers.first("date", limit=200)
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _message_id(headers: _Headers) -> str | None:
    value = headers.first("message-id", limit=998)
    if not value:
        return None
    match = _MESSAGE_ID.search(value)
    return match.group(0) if match else value.split()[0]


# --- body ----------------------------------------------------------------------------------


def _extract(mime: MimePart, subject: str, *, depth: int) -> tuple[str, list[Attachment]]:
    """The cleaned text and the attachments of one message (top-level or attached)."""
    parts = _Parts()
    _walk(mime, parts, depth, top=True)
    return _compose(parts, subject), parts.attachments


def _compose(parts: _Parts, subject: str) -> str:
    body = "\n\n".join(
        html_to_text(text) if is_html else text[:MAX_TEXT_PART_CHARS]
        for is_html, text in parts.segments
    )
    text = clean_body(body, html=False, subject=subject)
    if parts.forwards:
        text = "\n\n".join([text, *parts.forwards[:MAX_FORWARDS]]).strip()
    return text[:MAX_TEXT_CHARS]


def _walk(part: MimePart, parts: _Parts, depth: int, *, top: bool = False) -> None:
    if depth > MAX_DEPTH:
        return
    ctype = part.get_content_type()
    main, _, sub = ctype.partition("/")
    if main == "message":
        _walk_message(part, sub, parts, depth)
    elif part.is_multipart():
        _walk_multipart(part, sub, parts, depth)
    elif main == "multipart":
        _walk_broken_multipart(part, parts, depth)
    elif ctype in _TNEF_TYPES or _filename(part).lower() == "winmail.dat":
        _walk_tnef(part, parts)
    elif main == "text" and sub in _BODY_SUBTYPES and (top or _is_inline(part)):
        _add_text(part, sub, parts)
    else:
        parts.attachments.append(_attachment(part))


def _raw_payload(part: MimePart) -> object:
    """The payload as parsed: a list of parts, or text with 8-bit bytes surrogate-escaped.

    `get_payload()` is not used for this: without decode=True it re-decodes 8-bit text with
    the declared charset (replacing bytes, or raising TypeError on an RFC 2231 charset).
    """
    return getattr(part, "_payload", None)


def _children(part: MimePart) -> list[MimePart]:
    payload = _raw_payload(part)
    if not isinstance(payload, list):
        return []
    return [child for child in payload if isinstance(child, MimePart)]


def _walk_multipart(part: MimePart, sub: str, parts: _Parts, depth: int) -> None:
    children = _children(part)
    if sub == "alternative":
        parts.extend(_best_alternative(children, depth + 1))
    elif sub == "signed" and children:
        _walk(children[0], parts, depth + 1)
    elif sub == "report" and children:
        _walk(children[0], parts, depth + 1)
        for child in children[1:]:
            _walk_report_part(child, parts)
    else:
        for child in children:
            _walk(child, parts, depth + 1)


def _best_alternative(children: list[MimePart], depth: int) -> _Parts:
    """Plain text wins over HTML, unless it is blank or a "your client can't show HTML" stub."""
    candidates = []
    for child in children:
        candidate = _Parts()
        _walk(child, candidate, depth)
        candidates.append(candidate)
    plain = next((c for c in candidates if c.has_text(html=False)), None)
    html = next((c for c in candidates if c.has_text(html=True)), None)
    if plain is not None and not (html is not None and _is_html_stub(plain)):
        return plain
    return html or plain or (candidates[-1] if candidates else _Parts())


def _is_html_stub(parts: _Parts) -> bool:
    text = " ".join(text for is_html, text in parts.segments if not is_html)
    return len(text) < _STUB_MAX_CHARS and bool(_HTML_STUB.search(text))


def _walk_report_part(part: MimePart, parts: _Parts) -> None:
    """DSN/MDN: the machine-readable part is skipped, the returned message only listed."""
    main, _, sub = part.get_content_type().partition("/")
    if main == "message" and sub in _REPORT_MACHINE_PARTS:
        return
    parts.attachments.append(_attachment(part))


def _walk_message(part: MimePart, sub: str, parts: _Parts, depth: int) -> None:
    inner = next(iter(_children(part)), None)
    if sub in _REPORT_MACHINE_PARTS:
        return
    if sub == "partial":
        _walk_partial(part, inner, parts, depth)
        return
    parts.attachments.append(_attachment(part, inner))
    if sub in ("rfc822", "global") and inner is not None and len(inner) > 0:
        _add_forward(inner, parts, depth + 1)


def _add_forward(inner: MimePart, parts: _Parts, depth: int) -> None:
    """An attached message: a bounded excerpt of its text, and its attachments listed."""
    headers = _index_headers(inner)
    subject = _subject(headers)
    text, attachments = _extract(inner, subject, depth=depth)
    parts.attachments += attachments
    if len(parts.forwards) >= MAX_FORWARDS:
        return
    head = ["---------- Forwarded message ----------"]
    sender = headers.first("from", limit=300)
    if sender:
        head.append(f"From: {sender}")
    if subject:
        head.append(f"Subject: {subject}")
    excerpt = truncate("", text, FORWARD_EXCERPT_CHARS)
    parts.forwards.append("\n".join(head) + ("\n\n" + excerpt if excerpt else ""))


def _walk_partial(part: MimePart, inner: MimePart | None, parts: _Parts, depth: int) -> None:
    """message/partial: only fragment 1 carries the original headers and start of body."""
    number = _param(part, "number") or "?"
    total = _param(part, "total") or "?"
    parts.attachments.append(
        Attachment(f"fragment {number} of {total}", "message/partial", _tree_size(part))
    )
    if number == "1" and inner is not None and len(inner) > 0:
        _walk(inner, parts, depth + 1, top=True)


def _param(part: MimePart, name: str) -> str:
    value = part.get_param(name)
    return value if isinstance(value, str) else ""


def _walk_broken_multipart(part: MimePart, parts: _Parts, depth: int) -> None:
    """A multipart without usable boundary: guess it from the body, else read it as text."""
    payload = _raw_payload(part)
    if not isinstance(payload, str):
        return
    boundary = _sniff_boundary(payload)
    if boundary is None:
        parts.segments.append((False, _decoded_text(part)))
        return
    header = f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
    rebuilt = _PARSER.parsebytes(_to_bytes(header) + _to_bytes(payload))
    if rebuilt.is_multipart():
        _walk_multipart(rebuilt, "mixed", parts, depth + 1)
    else:
        parts.segments.append((False, _decoded_text(part)))


def _sniff_boundary(payload: str) -> str | None:
    for match in _BOUNDARY_LINE.finditer(payload[:100_000]):
        candidate = match.group(1)
        if payload.count(f"--{candidate}") >= 2:
            return candidate
    return None


def _walk_tnef(part: MimePart, parts: _Parts) -> None:
    """winmail.dat: its body joins the text and its files replace it in the list."""
    data = _payload_bytes(part) if _encoded_size(part) <= MAX_TNEF_BYTES else b""
    try:
        tnef = tnefparse.TNEF(data, do_checksum=False)
        body, is_html = _tnef_body(tnef)
        files = [_tnef_attachment(item) for item in tnef.attachments]
    except Exception:  # tnefparse raises anything on damaged input: keep the file listed
        parts.attachments.append(_attachment(part))
        return
    if body:
        parts.segments.append((is_html, body))
    # Nothing readable inside (an RTF-only body, say): keep winmail.dat itself listed.
    parts.attachments += files if files or body else [_attachment(part)]


def _tnef_body(tnef: tnefparse.TNEF) -> tuple[str, bool]:
    for value, is_html in ((tnef.body, False), (tnef.htmlbody, True)):
        if isinstance(value, bytes):
            value = decode_text(value.rstrip(b"\x00"), tnef.codepage)
        if isinstance(value, str) and value.strip("\x00 \r\n"):
            return value.rstrip("\x00"), is_html
    return "", False


def _tnef_attachment(item: tnefparse.tnef.TNEFAttachment) -> Attachment:
    name = item.long_filename()
    if isinstance(name, bytes):
        name = decode_text(name, None)
    name = decode_header_value(str(name).strip("\x00"), limit=MAX_FILENAME_CHARS)
    data = item.data if isinstance(item.data, bytes) else b""
    return Attachment(name, _guess_type(name), len(data))


def _add_text(part: MimePart, sub: str, parts: _Parts) -> None:
    text = _decoded_text(part)
    if sub == "html" or (sub == "plain" and _HTML_START.match(text)):
        parts.segments.append((True, text))
    elif sub in ("enriched", "richtext"):
        parts.segments.append((False, _ENRICHED_TAG.sub("", text).replace("<<", "<")))
    else:
        parts.segments.append((False, text))


def _decoded_text(part: MimePart) -> str:
    return decode_text(_payload_bytes(part, limit=MAX_TEXT_PART_CHARS), _charset(part))


def _charset(part: MimePart) -> str | None:
    # The stdlib helper raises on some RFC 2231 values (a NUL byte, an unknown charset).
    try:
        return part.get_content_charset()
    except (ValueError, LookupError, UnicodeError, TypeError):
        return None


def _payload_bytes(part: MimePart, *, limit: int | None = None) -> bytes:
    """Transfer-decoded bytes of a leaf part, reading at most `limit` encoded characters."""
    cte = _cte(part)
    if cte not in ("base64", "quoted-printable"):
        # decode=True hands back the raw 8-bit bytes; decode=False would already have
        # replaced them using the declared charset.
        decoded = part.get_payload(decode=True)
        return decoded[:limit] if isinstance(decoded, bytes) else b""
    payload = _raw_payload(part)
    if not isinstance(payload, str):
        return b""
    if limit is not None and len(payload) > limit:
        payload = payload[: payload.rfind("\n", 0, limit) + 1 or limit]
    raw = _to_bytes(payload)
    return _base64(raw) if cte == "base64" else binascii.a2b_qp(raw)


def _to_bytes(payload: str) -> bytes:
    # The bytes parser leaves 8-bit data as surrogate escapes: this restores the raw bytes.
    try:
        return payload.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return payload.encode("utf-8", "surrogateescape")


def _base64(raw: bytes) -> bytes:
    data = _BASE64_JUNK.sub(b"", raw.split(b"=", 1)[0])
    data = data[: len(data) - len(data) % 4 if len(data) % 4 == 1 else len(data)]
    try:
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except binascii.Error:
        return b""


def _cte(part: MimePart) -> str:
    return str(part.get("content-transfer-encoding", "")).strip().lower()


def _is_inline(part: MimePart) -> bool:
    return part.get_content_disposition() != "attachment" and not _filename(part)


def _filename(part: MimePart) -> str:
    try:
        name = part.get_filename()
    except (ValueError, LookupError, UnicodeError, TypeError, IndexError):
        return ""
    return decode_header_value(str(name), limit=MAX_FILENAME_CHARS) if name else ""


def _attachment(part: MimePart, inner: MimePart | None = None) -> Attachment:
    name = _filename(part)
    if not name and inner is not None:
        name = f"{_subject(_index_headers(inner)) or 'message'}.eml"[:MAX_FILENAME_CHARS]
    return Attachment(name, part.get_content_type(), _tree_size(part))


def _guess_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def _tree_size(part: MimePart) -> int:
    """Decoded size of a leaf, or the sum over an attached message's leaves, never decoding."""
    children = _children(part)
    if children:
        return sum(_tree_size(child) for child in children)
    return _encoded_size(part)


def _encoded_size(part: MimePart) -> int:
    marker = _SIZE_HEADER.get()
    if marker is not None:
        recorded = str(part.get(marker, "")).strip()
        if recorded.isdigit():  # the body was left out by `skeleton`: its size was noted
            return int(recorded)
    payload = _raw_payload(part)
    if not isinstance(payload, str):
        return 0
    if _cte(part) != "base64":
        return len(payload)
    blanks = sum(payload.count(char) for char in "\r\n\t ")
    padding = payload.rstrip()[-2:].count("=")
    return max((len(payload) - blanks) * 3 // 4 - padding, 0)
