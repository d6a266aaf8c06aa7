"""Bounded webhook bodies: what any unauthenticated POST may cost the service.

A webhook is reachable by anyone who knows its URL, and Graph's clientState sits inside the
body, so the body must be read before the sender is known. These helpers keep that read
cheap whatever arrives:

- a `Content-Length` above `MAX_BODY_BYTES` is refused with 413 before a byte is read, and a
  chunked body is counted as it streams and refused as soon as it passes the limit;
- JSON is parsed in a worker thread (a megabyte of JSON takes milliseconds, but the event
  loop serves every other request meanwhile), after a nesting-depth check that refuses what
  the parser would recurse into (a 100,000-deep array) with 400.

Both providers' notifications are small: a Graph notification batch holds at most a few
hundred items of about 1 KB, a Pub/Sub push one message of a few hundred bytes.
"""

from __future__ import annotations

import asyncio
import json
from itertools import accumulate
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response

__all__ = ["MAX_BODY_BYTES", "MAX_DEPTH", "BadBody", "parse_json", "read_body", "read_json"]

MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 32

_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")  # every byte but the brackets


class BadBody(Exception):
    """A body refused before or while reading it; `response()` is what the sender gets."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text

    def response(self) -> Response:
        # A refused body may still be on the wire: close the connection rather than read it.
        return PlainTextResponse(
            self.text, status_code=self.status, headers={"Connection": "close"}
        )


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, at most `limit` bytes; BadBody(413) past it, nothing more read."""
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        raise BadBody(413, f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadBody(413, f"body larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadBody(400, "body not received") from None
    return b"".join(chunks)


def nesting_depth(data: bytes) -> int:
    """The deepest bracket nesting of a JSON text, brackets inside strings ignored.

    Linear in the size: strings are skipped with `find`, brackets counted in C.
    """
    outside = bytearray()
    position = 0
    while (start := data.find(b'"', position)) >= 0:
        outside += data[position:start]
        end = data.find(b'"', start + 1)
        while end >= 0 and _escaped(data, end):
            end = data.find(b'"', end + 1)
        if end < 0:
            return 0  # unterminated string: the parser refuses it anyway
        position = end + 1
    outside += data[position:]
    brackets = bytes(outside).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(accumulate(1 if b in b"[{" else -1 for b in brackets))


def _escaped(data: bytes, index: int) -> bool:
    """True when the quote at `index` follows an odd run of backslashes."""
    run = 0
    while index - run > 0 and data[index - run - 1] == 0x5C:
        run += 1
    return run % 2 == 1


def parse_json(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """JSON from bytes; BadBody(400) when malformed or nested deeper than `max_depth`."""
    if nesting_depth(data) > max_depth:
        raise BadBody(400, f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadBody(400, "body is not valid JSON") from None


async def read_json(
    request: Request, *, limit: int = MAX_BODY_BYTES, max_depth: int = MAX_DEPTH
) -> Any:
    """Read at most `limit` bytes and parse them off the event loop."""
    data = await read_body(request, limit)
    return await asyncio.to_thread(parse_json, data, max_depth)
