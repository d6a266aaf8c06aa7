"""The Graph transport's limits: the process budget, the per-mailbox cap and pacing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from mailtriage.connectors.graph.client import build_client
from mailtriage.connectors.graph.mailbox import GraphMailbox
from mailtriage.connectors.graph.transport import GraphTransport, MailboxPacer, RetryPolicy
from mailtriage.core.errors import ConnectorError
from mailtriage.core.ports import MemoryStateStore
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.graph.config import sandbox_settings

SHARED = "contact@atelier-dupont.fr"


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RetryPolicy, "delay_scale", 0.0)


@pytest.fixture
def emu() -> Iterator[GraphEmulator]:
    with GraphEmulator() as e:
        e.add_mailbox(SHARED)
        yield e


async def test_one_budget_caps_requests_in_flight_across_mailboxes() -> None:
    """40 mailboxes × 3 requests: never more than the budget in flight, nor 4 per mailbox,
    and every request completes (they wait in the transport, not in the pool)."""
    live: dict[str, int] = {}
    peak = {"all": 0}
    per_box: dict[str, int] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        box = request.url.path.split("/")[3]
        live[box] = live.get(box, 0) + 1
        per_box[box] = max(per_box.get(box, 0), live[box])
        peak["all"] = max(peak["all"], sum(live.values()))
        await asyncio.sleep(0.005)
        live[box] -= 1
        return httpx.Response(200, json={})

    transport = GraphTransport(httpx.MockTransport(handler), max_in_flight=6)
    async with httpx.AsyncClient(transport=transport, base_url="http://g/v1.0") as client:
        boxes = [f"box{i}" for i in range(40)]
        answers = await asyncio.gather(*(client.get(f"/users/{b}/messages") for b in boxes * 3))
    assert {a.status_code for a in answers} == {200}
    assert peak["all"] == 6 and transport.max_total_in_flight == 6
    assert max(per_box.values()) <= 4 and transport.total_in_flight == 0


async def test_a_slot_is_held_until_the_body_is_read(emu: GraphEmulator) -> None:
    """A streamed response keeps its slot until read or closed: budget 1, two requests."""
    transport = GraphTransport(max_in_flight=1)
    async with httpx.AsyncClient(transport=transport, base_url=emu.base_url) as client:
        async with client.stream("GET", f"/users/{SHARED}/mailFolders") as first:
            second = asyncio.ensure_future(client.get(f"/users/{SHARED}/mailFolders"))
            await asyncio.sleep(0.2)
            assert not second.done() and transport.total_in_flight == 1
            await first.aread()
        assert (await second).status_code == 200
    assert transport.total_in_flight == 0


def test_the_pacer_never_lets_more_than_its_limit_through_any_window() -> None:
    """A caller that always waits what `reserve` says: 1,000 requests at 100 per 10 s."""
    now = [0.0]
    pacer = MailboxPacer(100, 10.0, clock=lambda: now[0])
    sent: list[float] = []
    for _ in range(1000):
        wait = pacer.reserve("box")
        now[0] += wait
        sent.append(now[0])
    for i, start in enumerate(sent):
        in_window = sum(1 for t in sent[i:] if t < start + 10.0)
        assert in_window <= 100, (i, start, in_window)
    # and no slower than the limit allows: 1,000 requests need about 90 windows' worth
    assert sent[-1] == pytest.approx((1000 - pacer.burst) / pacer.rate, rel=0.01)
    assert pacer.reserve("other") == 0.0  # each mailbox has its own bucket


async def test_pacing_keeps_a_mailbox_under_outlooks_request_limit(emu: GraphEmulator) -> None:
    """The emulator refuses past 20 requests per second on a mailbox: paced at 18 per
    second, 45 requests get no 429; unpaced, the same burst does."""
    emu.limit_mailbox_rate(20, 1.0)
    settings = sandbox_settings(emu.base_url, [SHARED])
    mailbox = emu.mailbox(SHARED)

    async def burst(pacer: MailboxPacer) -> float:
        client = build_client(settings.graph, pacer=pacer, policy=RetryPolicy(max_retries=0))
        started = time.monotonic()
        try:
            await asyncio.gather(
                *(
                    client.http.get(f"{client.base_url}/users/{SHARED}/mailFolders")
                    for _ in range(45)
                )
            )
        finally:
            await client.aclose()
        return time.monotonic() - started

    took = await burst(MailboxPacer(18, 1.0))
    assert mailbox.rejected_rate == 0 and took >= 1.5
    await asyncio.sleep(1.1)  # the emulator's window empties
    await burst(MailboxPacer(10_000, 600.0))
    assert mailbox.rejected_rate > 0


async def test_a_timeout_names_its_type(emu: GraphEmulator) -> None:
    """httpx timeouts carry no text: the error says which one it was."""
    emu.set_latency(1.0)
    settings = sandbox_settings(emu.base_url, [SHARED], graph={"timeout_s": 0.2})
    box = GraphMailbox.from_settings(settings, settings.mailboxes[0], MemoryStateStore())
    try:
        with pytest.raises(
            ConnectorError,
            match=r"Graph transport error .*: ReadTimeout: no answer within 0.2 s \(GET ",
        ):
            await box.changes(None)
    finally:
        await box.aclose()
