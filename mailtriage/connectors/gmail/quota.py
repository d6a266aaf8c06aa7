"""Per-mailbox quota limiter over a moving window.

Google documents 15,000 quota units per user per minute, enforced as a moving window, and
1,200,000 per project per minute (developers.google.com/workspace/gmail/api/reference/quota;
older versions of that page said 250 units per user per second). This limiter spends at
most `units_per_s` (250 by default, the minute's budget spread evenly) over a one-second
window, which keeps every minute under 15,000.

A moving-window limiter rather than a refilling bucket: a bucket of capacity C refilled at
r units/s lets C + r units through in one second, so to stay under 250 it would have to run
at 250 - C units/s (and C must be >= 100 for a single `messages.send`). The window gives the
full budget and never exceeds it; `margin_s` absorbs the network jitter between our clock
and Google's.
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
