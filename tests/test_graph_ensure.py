"""Master categories and folders are ensured once per mailbox, whatever the concurrency.

Through msgraph-sdk against the emulator: messages labelled and moved at the same moment
share one lookup and one creation (no 409 herd); a folder deleted by staff is found again
through the 404 of the move that met it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from mailtriage.connectors.graph.client import RetryPolicy
from mailtriage.connectors.graph.mailbox import GraphMailbox
from mailtriage.core.actions import ActionPlan, Label, Move
from mailtriage.core.message import Message
from mailtriage.core.ports import MemoryStateStore
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.graph.config import sandbox_settings

SHARED = "contact@atelier-dupont.fr"
PLAN = ActionPlan("rh", (Label("RH", "preset7"), Move("Triage/RH")))


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RetryPolicy, "delay_scale", 0.0)


@pytest.fixture
def emu() -> Iterator[GraphEmulator]:
    with GraphEmulator() as e:
        e.add_mailbox(SHARED)
        yield e


@pytest.fixture
async def box(emu: GraphEmulator) -> AsyncIterator[GraphMailbox]:
    settings = sandbox_settings(emu.base_url, [SHARED])
    mb = GraphMailbox.from_settings(settings, settings.mailboxes[0], MemoryStateStore())
    yield mb
    await mb.aclose()


async def arrivals(emu: GraphEmulator, box: GraphMailbox, n: int) -> list[Message]:
    stored = [
        emu.deliver(SHARED, subject=f"CV {i}", body="cv", sender=f"c{i}@example.org")
        for i in range(n)
    ]
    return [await box.fetch(s.immutable_id) for s in stored]


def calls(emu: GraphEmulator, method: str, contains: str) -> list[int]:
    return [
        r.status for r in emu.requests if r.method == method and contains.lower() in r.path.lower()
    ]


async def test_concurrent_messages_share_one_ensure(emu: GraphEmulator, box: GraphMailbox) -> None:
    messages = await arrivals(emu, box, 8)
    results = await asyncio.gather(*(box.apply(m, PLAN) for m in messages))
    assert all(r.ok for rs in results for r in rs)
    # one read and one creation of the master category, no 409
    assert calls(emu, "GET", "masterCategories") == [200]
    assert calls(emu, "POST", "masterCategories") == [201]
    # one lookup per path segment, one creation each, no 409
    assert calls(emu, "POST", "childFolders") == [201, 201]
    assert len(calls(emu, "GET", "childFolders")) == 2
    # and the next messages cost nothing but their own PATCH and move
    more = await arrivals(emu, box, 3)
    before = len(emu.requests)
    await asyncio.gather(*(box.apply(m, PLAN) for m in more))
    assert sorted(r.method for r in emu.requests[before:]) == ["PATCH"] * 3 + ["POST"] * 3


async def test_a_category_made_elsewhere_meanwhile_is_not_an_error(
    emu: GraphEmulator, box: GraphMailbox
) -> None:
    (first,) = await arrivals(emu, box, 1)
    await box.apply(first, ActionPlan("rh", (Label("Compta", None),)))  # list read: no RH
    with emu.state.lock:  # another process creates RH now
        emu.mailbox(SHARED).master_categories.append(
            {"id": "x", "displayName": "RH", "color": "preset7"}
        )
    (second,) = await arrivals(emu, box, 1)
    (result,) = await box.apply(second, ActionPlan("rh", (Label("RH", "preset7"),)))
    assert result.ok and calls(emu, "POST", "masterCategories")[-1] == 409
    assert emu.message(SHARED, second.provider_id).categories == ["RH"]


async def test_a_folder_deleted_by_staff_is_found_again_on_404(
    emu: GraphEmulator, box: GraphMailbox
) -> None:
    (first,) = await arrivals(emu, box, 1)
    assert all(r.ok for r in await box.apply(first, ActionPlan("rh", (Move("Triage/RH"),))))
    emu.move(SHARED, first.provider_id, "Archives")
    emu.delete_folder(SHARED, "Inbox/Triage/RH")  # the cached id now answers 404
    (second,) = await arrivals(emu, box, 1)
    (result,) = await box.apply(second, ActionPlan("rh", (Move("Triage/RH"),)))
    assert result.ok, result
    assert emu.where(SHARED, second.provider_id) == "Inbox/Triage/RH"
    moves = calls(emu, "POST", "/move")
    assert moves == [201, 404, 201]  # the stale id once, then the folder made again
