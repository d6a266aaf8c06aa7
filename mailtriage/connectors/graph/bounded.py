"""Message reads from Graph with a memory ceiling: long JSON strings are cut as they stream.

A Graph message's only unbounded field is its body (attachments are listed apart, metadata
only), and a delta page holds up to `graph.page_size` messages. `BoundedTransport` sits
under the SDK's client and passes every JSON response of a request on messages (reads, and
the move, PATCH and forward calls that echo the message) through `JsonStringCap`, which
forwards the JSON unchanged except that any string value longer than `STRING_CAP` bytes is
cut there, on a character boundary. The SDK then holds at most `STRING_CAP` bytes per
string: a page of 50 messages with 40 MB bodies
costs about 25 MB instead of 2 GB. The text kept is 20 times what extraction uses.

gzip and deflate bodies are decompressed in the stream (the filter needs the JSON text),
and such requests ask for nothing else.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import AsyncIterator

import httpx

__all__ = ["STRING_CAP", "BoundedTransport", "JsonStringCap"]

STRING_CAP = 512 * 1024
_SPECIAL = re.compile(rb'["\\]')
_HIGH_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}")


class JsonStringCap:
    """Streams one JSON document through, cutting each string value after `limit` bytes.

    Escape sequences are written whole or not at all (a high surrogate only with its low
    half), and a cut inside a UTF-8 character completes that character, so what comes out
    is valid JSON whatever the chunking. Past the cut, the rest of the string is skipped
    with `find` on quotes, without looking at every escape.
    """

    def __init__(self, limit: int = STRING_CAP) -> None:
        self.limit = limit
        self.cut = 0  # strings cut so far
        self._in_string = False
        self._kept = 0  # bytes of the current string written
        self._unit = bytearray()  # an escape sequence (or surrogate pair) being read
        self._cutting = False
        self._owed = 0  # continuation bytes owed to a character written before the cut
        self._backslashes = 0  # trailing backslashes of the last chunk, while cutting
        self._last = b""  # the current string's last bytes written (a character may go on)

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        i, n = 0, len(chunk)
        while i < n:
            if not self._in_string:
                j = chunk.find(b'"', i)
                if j < 0:
                    out += chunk[i:]
                    break
                out += chunk[i : j + 1]
                i = j + 1
                self._in_string, self._kept, self._cutting, self._last = True, 0, False, b""
            elif self._cutting:
                i = self._skip(chunk, i, out)
            elif self._unit:
                i = self._escape(chunk, i, out)
            else:
                match = _SPECIAL.search(chunk, i)
                j = match.start() if match else n
                self._plain(chunk[i:j], out)
                if match is None:
                    break
                if chunk[j] == 0x22:
                    out += b'"'
                    self._in_string = False
                elif self._cutting:  # cut just before this backslash: skip what it escapes
                    self._backslashes = 1
                else:
                    self._unit.append(0x5C)
                i = j + 1
        return bytes(out)

    def _plain(self, run: bytes, out: bytearray) -> None:
        if self._cutting or not run:
            return
        room = self.limit - self._kept
        if len(run) <= room:
            out += run
            self._kept += len(run)
            self._last = (self._last + run)[-4:]
            return
        end = room  # complete a character the limit falls into
        while end < len(run) and 0x80 <= run[end] <= 0xBF:
            end += 1
        out += run[:end]
        self._kept += end
        owed = _owed(self._last + run[:end]) if end == len(run) else 0
        self._start_cutting(owed=owed)

    def _escape(self, chunk: bytes, i: int, out: bytearray) -> int:
        """Read one escape (two for a surrogate pair) whole, then write it or cut."""
        unit = self._unit
        lone = False
        while i < len(chunk) and _escape_size(unit) is None:
            if len(unit) == 6 and chunk[i] != 0x5C:  # a lone high surrogate: it ends here
                lone = True
                break
            unit.append(chunk[i])
            i += 1
        if not lone and _escape_size(unit) is None:
            return i  # the rest of the escape is in the next chunk
        whole = bytes(unit)
        unit.clear()
        if self._kept + len(whole) <= self.limit:
            out += whole
            self._kept += len(whole)
            self._last = b""
        else:
            self._start_cutting()
        return i

    def _start_cutting(self, owed: int = 0) -> None:
        self._cutting = True
        self._owed = owed
        self._backslashes = 0
        self.cut += 1

    def _skip(self, chunk: bytes, i: int, out: bytearray) -> int:
        """Past the cut: owed continuation bytes, then everything up to the closing quote."""
        while self._owed and i < len(chunk):
            if not 0x80 <= chunk[i] <= 0xBF:
                self._owed = 0  # malformed input: nothing more to complete
                break
            out.append(chunk[i])
            self._owed -= 1
            i += 1
        if i >= len(chunk):
            return i
        start = i
        while True:
            j = chunk.find(b'"', i)
            if j < 0:
                run = _backslashes_before(chunk, len(chunk), start)
                self._backslashes = run + (self._backslashes if run == len(chunk) - start else 0)
                return len(chunk)
            run = _backslashes_before(chunk, j, start)
            if run == j - start:
                run += self._backslashes
            self._backslashes = 0
            if run % 2 == 0:
                out += b'"'
                self._in_string = False
                self._cutting = False
                return j + 1
            i = j + 1


def _backslashes_before(data: bytes, index: int, floor: int) -> int:
    run = 0
    while index - run > floor and data[index - run - 1] == 0x5C:
        run += 1
    return run


def _escape_size(unit: bytearray) -> int | None:
    """The byte length of the escape in `unit` once it is known: 2, 6, or 8/12 for a high
    surrogate and what follows it; None while more bytes are needed."""
    if len(unit) < 2:
        return None
    if unit[1] != 0x75:
        return 2
    if len(unit) < 6:
        return None
    if not _HIGH_SURROGATE.fullmatch(bytes(unit[:6])):
        return 6
    if len(unit) < 8:
        return None
    if unit[7] != 0x75:
        return 8
    return 12 if len(unit) >= 12 else None


def _owed(written: bytes) -> int:
    """Continuation bytes still missing from the last character of `written`."""
    for back in range(1, min(4, len(written)) + 1):
        byte = written[-back]
        if 0x80 <= byte <= 0xBF:
            continue
        need = (
            1 if 0xC0 <= byte <= 0xDF else 2 if 0xE0 <= byte <= 0xEF else 3 if byte >= 0xF0 else 0
        )
        return max(0, need - (back - 1))
    return 0


class BoundedTransport(httpx.AsyncBaseTransport):
    """Wraps a transport: message reads come back with their long strings cut."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, limit: int = STRING_CAP) -> None:
        self._inner = inner
        self.limit = limit
        self.cut = 0

    @staticmethod
    def applies(request: httpx.Request) -> bool:
        """Requests on messages: reads, and the move/PATCH/forward calls that echo one."""
        return "/messages" in request.url.path

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.applies(request):
            return await self._inner.handle_async_request(request)
        request.headers["Accept-Encoding"] = "gzip, deflate"
        response = await self._inner.handle_async_request(request)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        json_body = response.headers.get("content-type", "").lower().startswith("application/json")
        if encoding not in ("identity", "gzip", "deflate") or not json_body:
            return response  # a MIME download ($value) or an error page: left alone
        headers = [
            (k, v)
            for k, v in response.headers.raw
            if k.lower() not in (b"content-length", b"content-encoding")
        ]
        return httpx.Response(
            response.status_code,
            headers=headers,
            stream=_CappedStream(response, encoding, JsonStringCap(self.limit), self),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedStream(httpx.AsyncByteStream):
    def __init__(
        self,
        response: httpx.Response,
        encoding: str,
        cap: JsonStringCap,
        owner: BoundedTransport,
    ) -> None:
        self._response = response
        self._cap = cap
        self._owner = owner
        self._inflate = zlib.decompressobj(47 if encoding == "gzip" else zlib.MAX_WBITS)
        self._inflating = encoding != "identity"

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stream = self._response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        async for chunk in stream:
            data = self._inflate.decompress(chunk) if self._inflating else chunk
            yield self._cap.feed(data)
        if self._inflating:
            yield self._cap.feed(self._inflate.flush())
        self._owner.cut += self._cap.cut

    async def aclose(self) -> None:
        await self._response.aclose()
