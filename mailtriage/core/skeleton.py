"""A large raw message reduced to what extraction reads, before the MIME parser sees it.

The standard library's parser holds every line of a message as a string and then joins them
again per part: about six times the message size for a 50 MB mail, most of it for
attachments whose content is never read. `skeleton()` cuts the message down first, with a
single scan over the bytes and no decoding:

- the parts are found from the boundaries the message declares (delimiter lines);
- every header block is kept (up to `HEADER_KEEP` bytes each);
- a text body (and a nested message's opening) keeps its first `TEXT_KEEP` bytes, which is
  more than the extractor decodes of one part anyway;
- an attachment body keeps nothing; its decoded size is written in a marker header named
  with a random token per call (so a sender cannot forge it), which the extractor reads
  in place of the missing payload;
- all kept bodies together stay under `BODY_BUDGET` bytes, and at most `MAX_PARTS` parts
  are kept.

Messages up to `SHRINK_ABOVE` bytes are parsed as they are: the reduction only changes
what the parser would have spent on data it then discards. Known difference: a delimiter
line of some declared boundary quoted inside a large text part (a MIME tutorial sent as
text) may end that text early, where the parser, which scopes boundaries, reads on. Over
the 3,769 public test messages parsed with every body reduced, two differ, both that way.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

__all__ = ["SHRINK_ABOVE", "Skeleton", "skeleton"]

SHRINK_ABOVE = 1024 * 1024
# Bodies up to this size are kept whole, whatever they hold.
SMALL_BODY = 64 * 1024
# A text part's (or nested message's) opening kept; the extractor decodes 2 M characters.
TEXT_KEEP = 2 * 1024 * 1024 + 4096
# Bytes of winmail.dat kept so that its body and file names can still be read.
TNEF_KEEP = 8 * 1024 * 1024
BODY_BUDGET = 8 * 1024 * 1024
HEADER_KEEP = 256 * 1024
MAX_PARTS = 1000
MAX_BOUNDARIES = 100

_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.I)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_FIRST_NEWLINE = re.compile(rb"\r?\n")
_TEXT = frozenset({"plain", "html", "enriched", "richtext"})
_TNEF = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
_HEADERS = BytesHeaderParser(policy=compat32)


@dataclass(frozen=True, slots=True)
class Skeleton:
    """The reduced message and the name of the header carrying cut parts' sizes."""

    data: bytes
    size_header: str
    cut: int  # parts whose body was shortened or dropped


def skeleton(data: bytes) -> Skeleton | None:
    """The reduced message, or None when `data` is small enough to parse as it is."""
    if len(data) <= SHRINK_ABOVE:
        return None
    marker = f"X-Mailtriage-Size-{secrets.token_hex(8)}"
    out: list[bytes] = []
    budget = BODY_BUDGET
    cut = parts = position = 0
    delimiters: list[re.Match[bytes] | None] = [*_delimiters(data), None]
    for match in delimiters:  # the segment before each delimiter line, then the last one
        end = match.start() if match is not None else len(data)
        if parts < MAX_PARTS:
            parts += 1
            piece, spent, shortened = _segment(
                data, position, end, marker, budget, top=not out, delimited=match is not None
            )
            out.append(piece)
            budget -= spent
            cut += shortened
        elif end > position:
            cut += 1
        if match is not None:
            out.append(match.group(0))
            position = match.end()
    return Skeleton(b"".join(out), marker, cut)


def _delimiters(data: bytes) -> list[re.Match[bytes]]:
    """Every delimiter line of a boundary the message declares somewhere."""
    found: dict[bytes, None] = {}
    for match in _BOUNDARY.finditer(data):
        found[(match.group(1) or match.group(2)).rstrip()] = None
        if len(found) >= MAX_BOUNDARIES:
            break
    if not found:
        return []
    names = b"|".join(re.escape(b) for b in sorted(found, key=len, reverse=True))
    line = re.compile(rb"^--(?:" + names + rb")(?:--)?[ \t]*(?:\r?\n|\Z)", re.M)
    return list(line.finditer(data))


def _segment(
    data: bytes, start: int, end: int, marker: str, budget: int, *, top: bool, delimited: bool
) -> tuple[bytes, int, int]:
    """(kept bytes, body bytes spent from the budget, 1 if the body was cut)."""
    unix_from = b""
    if top and data.startswith(b"From ", start):
        line_end = data.find(b"\n", start, end)
        if line_end >= 0:
            unix_from, start = data[start : line_end + 1], line_end + 1
    if data.startswith((b"\r\n", b"\n"), start) and not top:  # a part without headers
        blank: re.Match[bytes] | None = _FIRST_NEWLINE.match(data, start, end)
    else:
        blank = _BLANK_LINE.search(data, start, min(end, start + HEADER_KEEP))
    if blank is None:
        if end - start <= HEADER_KEEP:
            return unix_from + data[start:end], 0, 0
        # No blank line in the first HEADER_KEEP bytes: keep whole lines of them only.
        last = data.rfind(b"\n", start, start + HEADER_KEEP)
        return unix_from + data[start : last + 1 if last > start else start], 0, 1
    head_end, body_start = blank.start(), blank.end()
    size = end - body_start
    if size <= SMALL_BODY:
        return unix_from + data[start:end], 0, 0
    head = data[start:head_end]
    keep = min(_keep_for(head, top=top), size, max(budget, 0))
    if keep >= size:
        return unix_from + data[start:end], size, 0
    if keep:
        line_end = data.rfind(b"\n", body_start, body_start + keep)
        keep = line_end + 1 - body_start if line_end > body_start else keep
    cte = _cte(head)
    # The line break before a delimiter belongs to the delimiter (RFC 2046, 5.1.1).
    body_end = end - (2 if data.startswith(b"\r\n", end - 2) else data.startswith(b"\n", end - 1))
    decoded = _decoded_size(data, body_start, body_end if delimited else end, cte)
    note = f"{marker}: {decoded}\r\n".encode()
    kept = unix_from + note + data[start:body_start] + data[body_start : body_start + keep]
    return kept, keep, 1


def _keep_for(head: bytes, *, top: bool) -> int:
    """How much of a large body extraction will read, judged by its part headers.

    The same rules as the extractor's walk: a top-level text body is read even when it
    names a file; a nested one only when inline.
    """
    part = _HEADERS.parsebytes(head + b"\r\n\r\n")
    ctype = part.get_content_type()
    main, _, sub = ctype.partition("/")
    if ctype in _TNEF or _filename(part).lower() == "winmail.dat":
        return TNEF_KEEP
    attached = part.get_content_disposition() == "attachment" or bool(_filename(part))
    if main == "text" and sub in _TEXT and (top or not attached):
        return TEXT_KEEP
    if main in ("message", "multipart"):  # a nested message's headers, a broken multipart
        return TEXT_KEEP
    return 0


def _filename(part: object) -> str:
    try:
        name = part.get_filename()  # type: ignore[attr-defined]
    except (ValueError, LookupError, UnicodeError, TypeError, IndexError):
        return ""
    return str(name) if name else ""


def _cte(head: bytes) -> str:
    match = re.search(rb"(?im)^content-transfer-encoding[ \t]*:[ \t]*([\w-]+)", head)
    return match.group(1).decode("ascii", "replace").lower() if match else ""


def _decoded_size(data: bytes, start: int, end: int, cte: str) -> int:
    """What the body decodes to, counted without decoding it (base64: 3 bytes per 4)."""
    size = end - start
    if cte != "base64":
        return size
    blanks = sum(data.count(c, start, end) for c in (b"\r", b"\n", b"\t", b" "))
    tail = data[max(start, end - 4) : end].rstrip()
    return max((size - blanks) * 3 // 4 - tail[-2:].count(b"="), 0)
