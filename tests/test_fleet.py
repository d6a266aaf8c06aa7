"""Processes sharing one state database divide the mailboxes: fair shares, a newcomer gets
its share, a stopped or dead process's mailboxes are taken over.

Two `Service`s in one event loop stand for two processes (owner ids of other hosts, so
that only the registry and the leases, not /proc, can tell who is alive). The sync
interval is short only so that held leases are renewed; taking and giving up mailboxes is
the `fleet` job's alone, so these tests fail when it does not fire.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta

from mailtriage.core.fleet import fair_share, limit_for
from mailtriage.core.ledger import Ledger, Status
from mailtriage.core.memory import MemoryMailbox
from mailtriage.core.pipeline import RetryPolicy
from mailtriage.core.runtime import Service
from tests.helpers import ScriptedClassifier, by_subject, example_settings, make_message

BOXES = [f"box{i:02d}@atelier-dupont.fr" for i in range(20)]
TTL = timedelta(seconds=3)  # heartbeat every 0.75 s; a registry row counts for 1.5 s


def service(url: str, boxes: list[MemoryMailbox], owner: str) -> Service:
    svc = Service(
        example_settings(runtime={"sync_interval_s": 1}),
        Ledger(url),
        ScriptedClassifier(by_subject),
        boxes,
        owner=owner,
        retry=RetryPolicy(0, 0),
    )
    svc.interval_s = 0.5  # held leases renewed by syncs well within the TTL
    svc.lease_ttl = TTL
    return svc


def kill(svc: Service) -> None:
    """As kill -9 would leave it: no more heartbeats or syncs, leases and row left behind."""
    assert svc._sched is not None
    svc._sched.shutdown(wait=False)
    for task in svc.coordinator._tasks.values():
        task.cancel()
    svc.coordinator._closed = True


async def eventually(predicate: Callable[[], bool], timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s")


def test_shares_and_limits() -> None:
    assert fair_share(400, 4) == 100 and limit_for(100) == 110
    assert fair_share(400, 1) == 400  # alone: everything
    assert fair_share(10, 3) == 4 and fair_share(1, 2) == 1 and fair_share(0, 3) == 0
    assert limit_for(4) == 4  # a tenth rounds down


async def test_a_process_that_joins_gets_its_share_and_one_that_dies_is_replaced(
    tmp_path,
) -> None:
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    boxes = [MemoryMailbox(a) for a in BOXES]
    a = service(url, boxes, "host-a:1:a")
    b = service(url, boxes, "host-b:1:b")
    await a.start()
    try:
        await eventually(lambda: a.held_count == 20, 2)  # alone, it takes everything
        await b.start()
        # A, above its limit, gives up mailboxes down to its share at its next heartbeat;
        # B takes them at one of its own.
        took = await eventually(lambda: a.held_count == 10 and b.held_count == 10, 4)
        assert took < 2 * TTL.total_seconds() / 4 + 1.0
        assert a.ledger.lease_counts() == {"host-a:1:a": 10, "host-b:1:b": 10}
        readiness = await a.readiness()
        assert readiness["fleet"] == {"processes": 2, "share": 10, "held": 10}

        for box in boxes:
            box.deliver(make_message("[rh] Candidature", mailbox=box.address))
        await eventually(lambda: all(len(box.sent) == 1 for box in boxes), 5)

        kill(b)
        killed = time.monotonic()
        await eventually(lambda: a.held_count == 20, TTL.total_seconds() + 2)
        assert time.monotonic() - killed <= TTL.total_seconds() + 1.0  # at the leases' expiry
        for box in boxes:
            box.deliver(make_message("[rh] Relance", mailbox=box.address))
        await eventually(lambda: all(len(box.sent) == 2 for box in boxes), 5)
    finally:
        await a.shutdown()
    assert all(len(box.sent) == 2 for box in boxes)  # nothing lost, nothing sent twice
    rows = Ledger(url).recent(limit=100)
    assert len(rows) == 40 and {r.status for r in rows} == {Status.DONE}


async def test_a_process_that_stops_hands_its_mailboxes_over_at_once(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    boxes = [MemoryMailbox(a) for a in BOXES]
    a = service(url, boxes, "host-a:1:a")
    b = service(url, boxes, "host-b:1:b")
    await a.start()
    await b.start()
    try:
        await eventually(lambda: a.held_count + b.held_count == 20 and b.held_count >= 9, 4)
        await b.shutdown()  # releases its leases and leaves the registry
        took = await eventually(lambda: a.held_count == 20, 3)
        assert took <= TTL.total_seconds() / 4 + 0.5  # the next heartbeat, no lease expiry
    finally:
        await a.shutdown()
