"""The service's schedule, in process: each job must fire with no push and no new mail.

Every test here sets a sync interval far longer than the test, except the one about the
interval itself, so only the schedule under test can make the assertion pass: a paused job,
a retry that waits for the next push, or a lease attempt that waits for an interval all fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta

from mailtriage.core.ledger import Ledger, Status
from mailtriage.core.memory import MemoryMailbox
from mailtriage.core.message import Message
from mailtriage.core.pipeline import RetryPolicy
from mailtriage.core.runtime import Service
from tests.helpers import ScriptedClassifier, by_subject, example_settings, make_message

BOX = "contact@atelier-dupont.fr"


def service(
    tmp_path, box: MemoryMailbox, *, interval_s: float, owner: str = "a", **kw: object
) -> Service:
    settings = example_settings(runtime={"sync_interval_s": interval_s})
    return Service(
        settings,
        Ledger(f"sqlite:///{tmp_path / 'state.sqlite'}"),
        kw.pop("classifier", ScriptedClassifier(by_subject)),  # type: ignore[arg-type]
        [box],
        owner=owner,
        **kw,  # type: ignore[arg-type]
    )


async def eventually(predicate: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until `predicate()` held; AssertionError after `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s")


def statuses(svc: Service) -> list[str]:
    return [r.status for r in svc.ledger.recent(mailbox=BOX, limit=100)]


async def test_interval_job_brings_in_mail_without_any_push(tmp_path) -> None:
    box = MemoryMailbox(BOX)
    svc = service(tmp_path, box, interval_s=1)
    await svc.start()
    try:
        job = svc._sched.get_job(f"sync:{BOX}")  # type: ignore[union-attr]
        assert job is not None and job.next_run_time is not None  # not paused
        await svc.coordinator.sync_now(BOX)  # the start-up sync has run: nothing there
        box.deliver(make_message("[rh] Candidature", mailbox=BOX))
        took = await eventually(lambda: len(box.sent) == 1, timeout_s=2 * 2.1)
        assert took <= 2 * 2.1  # interval 1 s + up to 1 s jitter, twice
        runs = svc.coordinator.runs[BOX]
        await asyncio.sleep(2.5)
        assert svc.coordinator.runs[BOX] > runs  # and it keeps firing
    finally:
        await svc.shutdown()


async def test_failed_message_is_retried_on_its_own_schedule(tmp_path) -> None:
    box = MemoryMailbox(BOX)
    failures = iter(["!error"])

    def flaky(message: Message) -> tuple[str, float]:
        return ("!error", 0.0) if next(failures, None) else by_subject(message)

    box.deliver(make_message("[rh] Candidature", mailbox=BOX))
    svc = service(
        tmp_path,
        box,
        interval_s=3600,
        classifier=ScriptedClassifier(flaky),
        retry=RetryPolicy(base_delay_s=1.0, max_delay_s=1.0),
    )
    await svc.start()
    try:
        await eventually(lambda: statuses(svc) == [Status.FAILED], timeout_s=5)
        await eventually(lambda: svc._sched.get_job(f"retry:{BOX}") is not None, timeout_s=1)  # type: ignore[union-attr]
        # No new mail, no push, the interval is an hour away: only the retry job can do it.
        took = await eventually(lambda: statuses(svc) == [Status.DONE], timeout_s=5)
        assert 0.5 < took < 4 and len(box.sent) == 1
    finally:
        await svc.shutdown()


async def test_restart_takes_over_as_soon_as_the_dead_holders_lease_lapses(tmp_path) -> None:
    box = MemoryMailbox(BOX)
    box.deliver(make_message("[rh] Candidature", mailbox=BOX))
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.sqlite'}")
    # The previous incarnation, killed with -9: its lease is still live for 3 s.
    assert ledger.acquire_lease(BOX, "host:123:dead", timedelta(seconds=3))
    started = time.monotonic()
    svc = service(tmp_path, box, interval_s=3600, owner="host:456:new")
    await svc.start()
    try:
        await svc.coordinator.sync_now(BOX)
        assert box.sent == [] and svc.health[BOX].held is False
        assert svc._sched.get_job(f"lease:{BOX}") is not None  # type: ignore[union-attr]
        await eventually(lambda: len(box.sent) == 1, timeout_s=6)
        assert time.monotonic() - started < 3 + 2.5  # at expiry, not an interval later
        assert ledger.lease_owner(BOX) == "host:456:new"
    finally:
        await svc.shutdown()


async def test_lease_is_renewed_while_a_long_sync_runs(tmp_path) -> None:
    box = MemoryMailbox(BOX)
    box.deliver(make_message("[rh] Candidature", mailbox=BOX))
    gate = asyncio.Event()

    class Slow(ScriptedClassifier):
        async def classify(self, message: Message):  # type: ignore[no-untyped-def]
            await gate.wait()
            return await super().classify(message)

    svc = service(tmp_path, box, interval_s=3600, classifier=Slow(by_subject))
    svc.lease_ttl = timedelta(seconds=0.6)
    task = asyncio.create_task(svc.sync(BOX))
    await asyncio.sleep(1.5)  # longer than the TTL: without renewal the lease would lapse
    assert not svc.ledger.acquire_lease(BOX, "intruder", timedelta(seconds=5))
    gate.set()
    assert (await task) is not None and len(box.sent) == 1
