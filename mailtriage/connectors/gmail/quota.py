"""Per-mailbox quota limiter over a moving window.

Google documents 15,000 quota units per user per minute, enforced as a moving window, and
1,200,000 per project per minute (developers.google.com/workspace/gmail/api/reference/quota;
older versions of that page said 250 units per user per second). This limiter spends at
most `units_per_s` (250 by default, the minute's budget spread evenly) over a one-second
window, which keeps every minute under 15,000.

A moving-window limiter rather than a refilling bucket: a bucket of capacity C refilled at
r units/s lets C + r units through in one second, so to stay under 250 it would have to run
at 250 - C units/s (and C must be >= 100 for a single `messages.send`). The window gives the
full budget and never exceeds it; `margin_s` absorbs the difference between our clock
and Google's.

Google counts a request's units at some moment between sending and answering. Counted
from the send, a request that waited (in the process's queue for a worker thread, in
transit, in a busy server) would leave this window before it leaves Google's, and the
next request could overdraw the quota. So the caller, which sends one request at a time,
moves the units to the moment of the answer (`answered`): the window then never holds
less than Google's.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

# Quota units per method (developers.google.com/workspace/gmail/api/reference/quota).
COSTS: dict[str, int] = {
    "getProfile": 1,
    "history.list": 2,
    "labels.list": 1,
    "labels.create": 5,
    "messages.list": 5,
    "messages.get": 5,
    "messages.modify": 5,
    "messages.batchModify": 50,
    "messages.send": 100,
    "watch": 100,
    "stop": 1,
}


class QuotaLimiter:
    """Waits until `units` fit in the last `window_s` seconds of this mailbox's budget."""

    def __init__(
        self,
        units_per_s: float = 250,
        *,
        window_s: float = 1.0,
        margin_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.budget = units_per_s * window_s
        self.span = window_s + margin_s
        self._clock = clock
        self._sleep = sleep
        self._events: deque[tuple[float, int]] = deque()
        self._used = 0
        self._lock = asyncio.Lock()
        self.units_total = 0
        self.waited_s = 0.0

    def _prune(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - self.span:
            self._used -= self._events.popleft()[1]

    async def acquire(self, units: int) -> None:
        units = min(units, int(self.budget))
        async with self._lock:
            while True:
                now = self._clock()
                self._prune(now)
                if self._used + units <= self.budget:
                    self._events.append((now, units))
                    self._used += units
                    self.units_total += units
                    return
                wait = self._events[0][0] + self.span - now
                self.waited_s += max(wait, 0.0)
                await self._sleep(max(wait, 0.001))

    def answered(self) -> None:
        """The last units acquired were answered now: count them from now on.

        Only for a caller with one request in flight (the last event is that request's).
        """
        if self._events:
            self._events[-1] = (self._clock(), self._events[-1][1])
