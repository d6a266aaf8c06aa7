"""Service pieces in process: health, readiness, metrics, leases, coalesced syncs."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from mailtriage.core.ledger import Ledger
from mailtriage.core.memory import MemoryMailbox
from mailtriage.core.pipeline import RetryPolicy
from mailtriage.core.runtime import Service
from mailtriage.core.sync import SyncCoordinator
from tests.helpers import ScriptedClassifier, by_subject, example_settings, make_message

BOX = "contact@atelier-dupont.fr"


def service(url: str, *boxes: MemoryMailbox, owner: str) -> Service:
    settings = example_settings()
    return Service(
        settings,
        Ledger(url),
        ScriptedClassifier(by_subject),
        boxes,
        owner=owner,
        retry=RetryPolicy(0, 0),
    )


async def test_health_ready_and_metrics(tmp_path) -> None:
    box = MemoryMailbox(BOX)
    box.deliver(make_message("[rh] Candidature"))
    svc = service(f"sqlite:///{tmp_path / 's.sqlite'}", box, owner="a")
    transport = httpx.ASGITransport(app=svc.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/healthz")).text == "ok\n"
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["mailboxes"][BOX]["recent"] is False
        await svc.sync(BOX)
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["database"] is True
        text = (await client.get("/metrics")).text
    assert 'mailtriage_messages_total{category="rh",mailbox="contact@atelier-dupont.fr"' in text
    assert "mailtriage_sync_lag_seconds" in text
    assert "mailtriage_classifier_latency_seconds_bucket" in text


async def test_two_services_share_mailboxes_by_lease(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    box1, box2 = MemoryMailbox(BOX), MemoryMailbox("info@atelier-dupont.com")
    for i in range(10):
        box1.deliver(make_message(f"[rh] Candidature {i}", mailbox=BOX))
        box2.deliver(make_message(f"[clients] Commande {i}", mailbox=box2.address))
    a = service(url, box1, box2, owner="a")
    b = service(url, box1, box2, owner="b")
    await asyncio.gather(a.sync(BOX), b.sync(BOX), a.sync(box2.address), b.sync(box2.address))
    assert len(box1.sent) == 10 and len(box2.sent) == 10
    holders = {a.health[BOX].held, b.health[BOX].held}
    assert holders == {True, False}  # exactly one process works on each mailbox
    await a.shutdown()
    # after a's shutdown its leases are free: b takes over
    assert await b.sync(BOX) is not None


async def test_coordinator_coalesces_bursts() -> None:
    runs: list[str] = []
    gate = asyncio.Event()

    async def slow_sync(address: str) -> None:
        runs.append(address)
        await gate.wait()

    coord = SyncCoordinator(slow_sync)
    for _ in range(50):
        await coord.trigger(BOX)
    await asyncio.sleep(0)
    gate.set()
    await coord.sync_now(BOX)
    assert 2 <= len(runs) <= 3  # one running, one follow-up (plus sync_now's own request)
    await coord.aclose()


@pytest.mark.parametrize("interval", [5.0, 600.0])
def test_scheduler_has_one_job_per_mailbox(tmp_path, interval: float) -> None:
    svc = service(f"sqlite:///{tmp_path / 's.sqlite'}", MemoryMailbox(BOX), owner="a")
    svc.interval_s = interval
    jobs = svc.scheduler().get_jobs()
    assert [j.id for j in jobs] == [f"sync:{BOX}", "fleet"]  # and the fleet heartbeat
    assert jobs[0].max_instances == 1


async def test_one_shot_sync_leaves_a_mailbox_held_by_a_service_alone(tmp_path) -> None:
    from datetime import timedelta

    from mailtriage.core.errors import MailboxBusyError
    from mailtriage.core.pipeline import Pipeline
    from mailtriage.core.runtime import sync_all

    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    ledger = Ledger(url)
    box = MemoryMailbox(BOX)
    box.deliver(make_message("[rh] Candidature"))
    assert ledger.acquire_lease(BOX, "service-1", timedelta(minutes=5))
    pipeline = Pipeline(example_settings(), ledger, ScriptedClassifier(by_subject))
    reports = await sync_all(pipeline, [box])
    assert isinstance(reports[BOX], MailboxBusyError) and "service-1" in str(reports[BOX])
    assert box.sent == []
    ledger.release_lease(BOX, "service-1")
    reports = await sync_all(pipeline, [box])
    assert reports[BOX].count("done") == 1  # type: ignore[union-attr]
    assert ledger.lease_owner(BOX) is None  # released after the one-shot sync
