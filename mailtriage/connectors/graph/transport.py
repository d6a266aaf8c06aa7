"""The HTTP transport under msgraph-sdk: budgets, pacing and retries.

The SDK's own RetryHandler is switched off and replaced by `GraphTransport`, because:
- it falls back to a ≥3 s backoff when `Retry-After: 0` is sent and cannot be zeroed in tests;
- it honours any Retry-After below 180 s without a bound of our choosing;
- it sits above the transport, so a semaphore placed there would be held while it sleeps.

`GraphTransport` holds three limits, taken in this order, each outside the next:

1. pacing: each mailbox spends at most 10,000 requests in any 10 minutes ("Outlook
   service limits": 10,000 API requests in a 10-minute period per app ID and mailbox,
   learn.microsoft.com/graph/throttling-limits), as a token bucket that never lets more
   through in any window;
2. at most 4 requests in flight per mailbox (the same page: "4 concurrent requests");
3. one budget of requests in flight for the whole process, equal to the size of the
   connection pool under it, so that requests wait here, in FIFO order and at no cost,
   rather than in httpcore's pool (whose assignment of queued requests to connections
   costs O(queued × connections) per event: with 800 queued requests it took 80 % of the
   CPU, and requests waiting for a connection hit the 30 s pool timeout). The pool keeps
   as many connections alive as it may open, so connections are reused, not reopened.

A slot is held until the response body has been read (or the response closed), because
that is when the connection is free again and when Outlook stops counting the request.

Throttled requests (429/503/504) are retried honouring Retry-After, sleeping outside every
limit. A write that is not idempotent (send, createForward, forward, move, a new message
or subscription) is retried here only on 429, which Graph documents as a refused request
("the requests fail", learn.microsoft.com/graph/throttling); after a 503/504 it may have
been done, so it goes back to the connector, which looks for its evidence first.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

import httpx

from mailtriage.core.metrics import THROTTLED

RETRY_STATUSES = frozenset({429, 503, 504})
# Statuses after which a non-idempotent request is known not to have been processed.
REFUSED_STATUSES = frozenset({429})
# Transport failures after which a request may have been done (its answer is lost); a
# request that is safe to repeat is repeated up to LOST_ANSWER_RETRIES times.
_LOST_ANSWER = (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout)
LOST_ANSWER_RETRIES = 2
# POSTs that are safe to repeat: a second folder or master category create answers 409.
_IDEMPOTENT_POSTS = ("/childfolders", "/mailfolders", "/mastercategories")
_USER = re.compile(r"/users/([^/]+)", re.I)

# Outlook: 10,000 requests per 10 minutes per app and mailbox (throttling-limits).
MAILBOX_REQUESTS = 10_000
MAILBOX_WINDOW_S = 600.0
# Requests in flight per process, and connections in the pool (`graph.max_in_flight`).
DEFAULT_IN_FLIGHT = 32


@dataclass
class RetryPolicy:
    """How throttled requests are retried; tests set `delay_scale = 0`."""

    max_retries: int = 8
    base_delay_s: float = 0.5
    max_backoff_s: float = 30.0
    # A Retry-After above this is not waited for: the error surfaces as ThrottledError.
    max_retry_after_s: float = 120.0

    delay_scale = 1.0  # class attribute, shared: 0 in tests

    def delay(self, attempt: int, retry_after: str | None) -> float | None:
        """Seconds to wait before retry `attempt` (0-based); None means give up."""
        wait = parse_retry_after(retry_after)
        if wait is None:
            wait = min(self.base_delay_s * 2**attempt, self.max_backoff_s)
        elif wait > self.max_retry_after_s:
            return None
        return wait * RetryPolicy.delay_scale


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (delta-seconds or HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def mailbox_of(url: httpx.URL | str) -> str:
    """The mailbox a request targets ('/users/{id}/...'), '' for tenant-level calls."""
    path = urlsplit(str(url)).path
    m = _USER.search(path)
    return unquote(m.group(1)).lower() if m else ""


def is_idempotent(request: httpx.Request) -> bool:
    """Whether repeating `request` after a lost answer is harmless."""
    if request.method != "POST":
        return True  # GET, and PATCH/PUT/DELETE, which set state rather than add to it
    return urlsplit(str(request.url)).path.lower().rstrip("/").endswith(_IDEMPOTENT_POSTS)


class MailboxPacer:
    """At most `requests` per mailbox in any `window_s`: a token bucket per mailbox.

    A bucket of `burst` tokens refilled at (requests − burst) / window_s lets at most
    burst + rate × window = `requests` through in any window, whatever the timing. Two
    floats per mailbox; a caller that must wait reserves its token first (the bucket goes
    negative), so waiters leave in arrival order without a lock.
    """

    def __init__(
        self,
        requests: int = MAILBOX_REQUESTS,
        window_s: float = MAILBOX_WINDOW_S,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = float(burst if burst is not None else max(1, requests // 10))
        self.rate = (requests - self.burst) / window_s
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, updated]
        self.waited_s = 0.0

    def reserve(self, key: str) -> float:
        """Take one token for `key`; the seconds to wait before using it (0: now)."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate) - 1
        bucket[0], bucket[1] = tokens, now
        wait = -tokens / self.rate if tokens < 0 else 0.0
        self.waited_s += wait
        return wait


class _Slot:
    """What one request holds (its limits and its count), given back exactly once."""

    __slots__ = ("_free", "_freed")

    def __init__(self, free: Callable[[], None]) -> None:
        self._free = free
        self._freed = False

    def release(self) -> None:
        if not self._freed:
            self._freed = True
            self._free()


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives the request's slots back when it is read or closed."""

    def __init__(self, inner: httpx.AsyncByteStream, slot: _Slot) -> None:
        self._inner = inner
        self._slot = slot

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        finally:
            self._slot.release()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._slot.release()


class GraphTransport(httpx.AsyncBaseTransport):
    """Paces and caps requests (per mailbox and per process) and retries throttled ones."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        max_concurrency: int = 4,
        max_in_flight: int = DEFAULT_IN_FLIGHT,
        pacer: MailboxPacer | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._inner = inner or pooled_transport(max_in_flight)
        self._limit = max_concurrency
        self._sems: dict[str, asyncio.Semaphore] = {}
        self.budget = max_in_flight
        self._budget = asyncio.Semaphore(max_in_flight)
        self.pacer = pacer or MailboxPacer()
        self.policy = policy or RetryPolicy()
        self.requests = 0
        self.retries = 0
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self.total_in_flight = 0
        self.max_total_in_flight = 0

    def _sem(self, key: str) -> asyncio.Semaphore:
        sem = self._sems.get(key)
        if sem is None:
            sem = self._sems[key] = asyncio.Semaphore(self._limit)
        return sem

    async def _take(self, key: str) -> tuple[asyncio.Semaphore, ...]:
        """Pace, then a slot of the mailbox, then one of the process (in that order)."""
        wait = self.pacer.reserve(key)
        if wait > 0:
            await asyncio.sleep(wait)
        mailbox = self._sem(key)
        await mailbox.acquire()
        try:
            await self._budget.acquire()
        except BaseException:
            mailbox.release()
            raise
        return mailbox, self._budget

    async def _send(self, key: str, request: httpx.Request) -> httpx.Response:
        """One attempt; its slots stay held until the response body is consumed."""
        sems = await self._take(key)
        self.requests += 1
        n = self.in_flight[key] = self.in_flight.get(key, 0) + 1
        self.max_in_flight[key] = max(self.max_in_flight.get(key, 0), n)
        self.total_in_flight += 1
        self.max_total_in_flight = max(self.max_total_in_flight, self.total_in_flight)

        def free() -> None:
            self.in_flight[key] -= 1
            self.total_in_flight -= 1
            for sem in reversed(sems):
                sem.release()

        slot = _Slot(free)
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            slot.release()
            raise
        if response.is_closed:  # a body read in advance (a mock, a cached answer): done
            slot.release()
        else:
            response.stream = _ReleasingStream(response.stream, slot)  # type: ignore[arg-type]
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = mailbox_of(request.url)
        retry_on = RETRY_STATUSES if is_idempotent(request) else REFUSED_STATUSES
        attempt = 0
        while True:
            try:
                response = await self._send(key, request)
            except _LOST_ANSWER:
                # The answer of a request that is safe to repeat was lost: repeat it.
                if not is_idempotent(request) or attempt >= LOST_ANSWER_RETRIES:
                    raise
                attempt += 1
                self.retries += 1
                continue
            if response.status_code not in retry_on or attempt >= self.policy.max_retries:
                return response
            delay = self.policy.delay(attempt, response.headers.get("retry-after"))
            if delay is None:
                return response
            await response.aread()
            await response.aclose()
            attempt += 1
            self.retries += 1
            THROTTLED.labels("graph", key).inc()
            if delay:
                await asyncio.sleep(delay)

    async def aclose(self) -> None:
        await self._inner.aclose()


def pooled_transport(size: int) -> httpx.AsyncHTTPTransport:
    """An HTTP transport whose pool keeps alive every connection it may open.

    httpx keeps only 20 idle connections by default: beyond that, each request opened a
    new TCP connection (8,903 connections for 16,064 requests at 200 mailboxes).
    """
    return httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=size, max_keepalive_connections=size)
    )


__all__ = [
    "DEFAULT_IN_FLIGHT",
    "GraphTransport",
    "MailboxPacer",
    "RetryPolicy",
    "is_idempotent",
    "mailbox_of",
    "parse_retry_after",
    "pooled_transport",
]
