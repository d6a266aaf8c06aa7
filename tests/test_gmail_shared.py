"""What a process's Gmail mailboxes share (one service, a bounded pool of threads and
connections), and the per-user quota holding when answers are slow."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from mailtriage.connectors.gmail import QuotaLimiter, build_gmail_mailboxes
from mailtriage.core.ports import MemoryStateStore
from mailtriage.sandbox.gmail import GmailEmulator
from tests.gmail_fixtures import SHARED, gmail_settings, rfc822

USERS = [f"box{i}@atelier-dupont.com" for i in range(12)]


def _settings(gm: GmailEmulator, addresses: list[str], **gmail: Any) -> Any:
    return gmail_settings(
        gm,
        gmail=gmail,
        mailbox=[{"provider": "gmail", "address": a, "categories": []} for a in addresses],
    )


async def test_mailboxes_share_one_service_and_a_bounded_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """12 mailboxes, budget 3: one service, at most 3 worker threads and 3 connection
    sets, and every mailbox reads its new mail."""
    with GmailEmulator(users=USERS) as gm:
        monkeypatch.setenv("MT_TEST_GMAIL_KEY", gm.service_account_json())
        boxes = build_gmail_mailboxes(_settings(gm, USERS, max_in_flight=3), MemoryStateStore())
        shared = boxes[0].client.shared
        assert all(b.client.shared is shared for b in boxes)
        assert all(b.client.users is shared.users for b in boxes)
        cursors = await asyncio.gather(*(b.changes(None) for b in boxes))
        for address in USERS:
            gm.deliver(address, rfc822(subject=f"pour {address}", to=address))
        pages = await asyncio.gather(
            *(b.changes(c.cursor) for b, c in zip(boxes, cursors, strict=True))
        )
        assert [p.messages[0].subject for p in pages] == [f"pour {a}" for a in USERS]
        assert shared.http.made <= 3
        assert 1 <= len(shared.executor._threads) <= 3  # the worker threads
        for box in boxes:
            await box.aclose()
        assert shared.executor._shutdown  # closed with the last mailbox


async def test_the_quota_holds_when_a_request_waits_for_a_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request that waits for the process's one worker (busy 0.5 s with another
    mailbox) reaches Gmail later than the limiter's 0.1 s margin. Counted from its answer,
    the next request waits long enough: no window of Gmail's holds more than the budget."""
    budget = 100
    with GmailEmulator(users=[SHARED], quota_units_per_s=budget, enforce_quota=False) as gm:
        monkeypatch.setenv("MT_TEST_GMAIL_KEY", gm.service_account_json())
        settings = _settings(gm, [SHARED], quota_units_per_s=budget, max_in_flight=1)
        (box,) = build_gmail_mailboxes(settings, MemoryStateStore())
        ids = [gm.deliver(SHARED, rfc822(subject=f"m{i}")) for i in range(16)]
        gets = [lambda u, m=m: u.messages().get(userId=SHARED, id=m, format="minimal") for m in ids]
        try:
            await box.profile()  # the token, outside the measured window
            box.client.shared.executor.submit(time.sleep, 0.5)  # another mailbox's request
            first = await box.client.batch("messages.get", gets)  # 80 units, waits 0.5 s
            second = await box.client.batch("messages.get", gets)  # 80 more
        finally:
            await box.aclose()
        assert all(isinstance(r, dict) for r in first + second)
        assert gm.max_units_per_s(SHARED) <= budget


def test_units_count_from_the_answer() -> None:
    """A slow answer moves its units later: the next request waits for them from there."""
    now = [0.0]

    async def sleep(s: float) -> None:
        now[0] += s

    limiter = QuotaLimiter(100, margin_s=0.0, clock=lambda: now[0], sleep=sleep)

    async def run() -> None:
        await limiter.acquire(80)
        now[0] = 0.4  # answered 0.4 s after it was sent
        limiter.answered()
        await limiter.acquire(80)

    asyncio.run(run())
    assert now[0] == pytest.approx(1.4, abs=0.01)
