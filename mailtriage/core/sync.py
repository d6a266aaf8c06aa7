"""Coalesced, one-at-a-time syncs per mailbox.

Webhooks and the scheduler both call `trigger(address)`. A mailbox is never synced twice at
once; triggers that arrive while a sync runs collapse into exactly one follow-up sync, which
is what makes a burst of notifications cost one delta query instead of one per message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger("mailtriage.sync")


class SyncCoordinator:
    """Runs `run_sync(address)` with per-mailbox mutual exclusion and coalescing."""

    def __init__(self, run_sync: Callable[[str], Awaitable[Any]]) -> None:
        self._run_sync = run_sync
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._closed = False
        self.runs: dict[str, int] = {}

    def trigger_nowait(self, address: str) -> None:
        """Ask for a sync of `address` soon; returns at once."""
        if self._closed:
            return
        task = self._tasks.get(address)
        if task is not None and not task.done():
            self._dirty.add(address)
            return
        self._tasks[address] = asyncio.get_running_loop().create_task(self._loop(address))

    async def trigger(self, address: str) -> None:
        self.trigger_nowait(address)

    async def sync_now(self, address: str) -> None:
        """Trigger and wait until a sync that started after this call has finished."""
        self.trigger_nowait(address)
        while (task := self._tasks.get(address)) is not None and not task.done():
            await asyncio.shield(task)

    async def _loop(self, address: str) -> None:
        while True:
            self._dirty.discard(address)
            self.runs[address] = self.runs.get(address, 0) + 1
            try:
                await self._run_sync(address)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("sync failed", mailbox=address, error=f"{type(exc).__name__}: {exc}")
            if address not in self._dirty or self._closed:
                return

    def busy(self, address: str) -> bool:
        task = self._tasks.get(address)
        return task is not None and not task.done()

    async def aclose(self, timeout_s: float = 30.0) -> None:
        """Stop accepting triggers and let running syncs finish (or cancel after timeout)."""
        self._closed = True
        pending = [t for t in self._tasks.values() if not t.done()]
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=timeout_s)
        for task in still:
            task.cancel()
        if still:
            await asyncio.gather(*still, return_exceptions=True)
