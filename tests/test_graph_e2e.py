"""End to end: emulator → GraphMailbox/GraphPush → Pipeline + Ledger + sandbox LLM → emulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailtriage.connectors.graph import GraphMailbox, GraphPush
from mailtriage.core.config import Settings
from mailtriage.core.errors import AccessDeniedError
from mailtriage.core.ledger import Ledger
from mailtriage.core.llm import LLMClassifier
from mailtriage.core.pipeline import Outcome, Pipeline
from mailtriage.core.pipeline import RetryPolicy as PipelineRetry
from mailtriage.core.runtime import Service, sync_all
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.graph.config import sandbox_settings
from mailtriage.sandbox.llm import DEFAULT_MODEL, SandboxLLM
from mailtriage.sandbox.server import LoopServer
from tests.test_graph_connector import _no_backoff

__all__ = ["_no_backoff"]

SHARED = "contact@atelier-dupont.fr"
INFO = "info@atelier-dupont.fr"
DEPARTMENTS = {
    "rh": "rh@atelier-dupont.fr",
    "fournisseurs": "compta@atelier-dupont.fr",
    "clients": "sav@atelier-dupont.fr",
    "devis": "commercial@atelier-dupont.fr",
}
CUSTOMER = "jeanne.martin@example.org"
MAILS = {  # subject/body → the category the sandbox LLM's keyword policy picks
    "rh": ("Candidature spontanée", "Bonjour, je vous adresse ma candidature et mon CV."),
    "devis": ("Demande de devis", "Pourriez-vous nous faire un devis pour 40 chaises ?"),
    "publicite": ("Newsletter", "Promotion exclusive, -30% ce week-end. Se désabonner."),
}


@pytest.fixture
def emu() -> Iterator[GraphEmulator]:
    with GraphEmulator() as e:
        for a in (SHARED, INFO, *DEPARTMENTS.values()):
            e.add_mailbox(a)
        yield e


def settings_for(emu: GraphEmulator, llm: SandboxLLM, *boxes: str, **kw: Any) -> Settings:
    return sandbox_settings(
        emu.base_url,
        list(boxes or [SHARED]),
        llm={"base_url": llm.base_url, "model": DEFAULT_MODEL, "few_shot": 0},
        classifier="llm",
        **kw,
    )


@dataclass
class Stack:
    settings: Settings
    ledger: Ledger
    pipeline: Pipeline
    classifier: LLMClassifier
    mailboxes: list[GraphMailbox]

    async def sync(self) -> Any:
        return await sync_all(self.pipeline, self.mailboxes)

    async def aclose(self) -> None:
        for m in self.mailboxes:
            await m.aclose()
        await self.classifier.aclose()


async def stack(settings: Settings, db: Path) -> Stack:
    ledger = Ledger(f"sqlite:///{db}")
    classifier = LLMClassifier(settings)
    pipeline = Pipeline(settings, ledger, classifier, retry=PipelineRetry(0, 0))
    boxes = [GraphMailbox.from_settings(settings, m, ledger) for m in settings.mailboxes]
    return Stack(settings, ledger, pipeline, classifier, boxes)


@pytest.fixture
async def cleanup() -> AsyncIterator[list[Stack]]:
    stacks: list[Stack] = []
    yield stacks
    for s in stacks:
        await s.aclose()


def send(emu: GraphEmulator, key: str, to: str = SHARED, **kw: Any) -> Any:
    subject, body = MAILS[key]
    return emu.deliver(to, subject=subject, body=body, sender=CUSTOMER, **kw)


def forwards(emu: GraphEmulator, key: str) -> list[Any]:
    return emu.folder_messages(DEPARTMENTS[key], "Inbox")


async def test_push_notification_to_native_actions(
    emu: GraphEmulator, llm: SandboxLLM, tmp_path: Path
) -> None:
    """New mail → notification → webhook → coalesced delta sync → label, move, forward."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.db'}")
    app: dict[str, Any] = {}

    async def proxy(scope: Any, receive: Any, send: Any) -> None:
        await app["app"](scope, receive, send)

    async with LoopServer(proxy) as srv:
        settings = settings_for(emu, llm, runtime={"public_url": srv.url})
        mailbox = GraphMailbox.from_settings(settings, settings.mailboxes[0], ledger)
        push = GraphPush.from_settings(settings, ledger)
        service = Service(settings, ledger, LLMClassifier(settings), [mailbox], [push])
        app["app"] = service.app()
        await push.install()
        await service.sync(SHARED)  # the start-up sync: takes the "from now" cursor
        stored = send(emu, "rh", reply_to=["jeanne@perso.example"])
        deadline = time.monotonic() + 10
        while emu.where(SHARED, stored.immutable_id) != "Inbox/Triage/RH":
            assert time.monotonic() < deadline, "the notification did not lead to a sync"
            await asyncio.sleep(0.02)
        while not forwards(emu, "rh"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await service.shutdown()
        await push.aclose()
    moved = emu.message(SHARED, stored.immutable_id)
    assert moved.categories == ["RH"]
    (fwd,) = forwards(emu, "rh")
    assert [r["emailAddress"]["address"] for r in fwd.reply_to] == ["jeanne@perso.example"]
    assert {h["name"].lower(): h["value"] for h in fwd.headers}["x-mailtriage"].startswith(
        "forward"
    )
    assert emu.message(SHARED, stored.immutable_id).ext_props  # processed marker set
    assert [n.status for n in emu.notifications] == [202]
    assert all(forwards(emu, k) == [] for k in ("devis", "fournisseurs", "clients"))


async def test_restart_reprocesses_nothing(
    emu: GraphEmulator, llm: SandboxLLM, tmp_path: Path, cleanup: list[Stack]
) -> None:
    settings = settings_for(emu, llm)
    first = await stack(settings, tmp_path / "state.db")
    cleanup.append(first)
    await first.sync()
    for key in ("rh", "devis", "publicite"):
        send(emu, key)
    report = (await first.sync())[SHARED]
    assert report.count(Outcome.DONE) == 3, report.results
    assert [len(forwards(emu, k)) for k in ("rh", "devis")] == [1, 1]
    assert len(emu.folder_messages(SHARED, "Inbox/Triage/Publicité")) == 1
    gets, deltas = emu.count("GET"), emu.count(contains="delta")
    writes = emu.count() - gets
    second = await stack(settings, tmp_path / "state.db")  # the process restarts
    cleanup.append(second)
    again = (await second.sync())[SHARED]
    assert again.processed == 0
    # One delta round trip on the Inbox and one per existing category folder (staff
    # moves); the other requests are read-only lookups of the two folders not yet made.
    assert emu.count(contains="delta") - deltas == 1 + 3
    assert emu.count() - emu.count("GET") == writes  # nothing written
    assert emu.count("GET") - gets == 4 + 2 * 2  # + 'Triage', then the missing child
    assert [len(forwards(emu, k)) for k in ("rh", "devis")] == [1, 1]


async def test_lost_ledger_marker_prevents_second_forward(
    emu: GraphEmulator, llm: SandboxLLM, tmp_path: Path, cleanup: list[Stack]
) -> None:
    """The category stays in the Inbox (no move): only the extended property protects it."""
    base = settings_for(emu, llm, mailbox={"backfill_days": 1})
    cats = [
        c.model_copy(update={"actions": c.actions.model_copy(update={"move_to": None})})
        for c in base.categories
    ]
    settings = base.model_copy(update={"categories": cats})
    send(emu, "rh")
    first = await stack(settings, tmp_path / "one.db")
    cleanup.append(first)
    assert (await first.sync())[SHARED].count(Outcome.DONE) == 1
    assert len(forwards(emu, "rh")) == 1
    assert len(emu.folder_messages(SHARED, "Inbox")) == 1  # still there, categorised
    fresh = await stack(settings, tmp_path / "two.db")  # ledger deleted
    cleanup.append(fresh)
    report = (await fresh.sync())[SHARED]
    assert report.count(Outcome.DONE) == 0 and report.count(Outcome.SKIPPED) == 1
    assert len(forwards(emu, "rh")) == 1


async def test_throttling_storm_every_message_processed(
    emu: GraphEmulator, llm: SandboxLLM, tmp_path: Path, cleanup: list[Stack]
) -> None:
    # A forward refused with 503 may have been sent (graph/errors): it is forwarded again
    # only when no copy shows in Sent Items after the grace (here 0.5 s: the emulator files
    # the copy as it answers).
    settings = settings_for(emu, llm, graph={"sent_copy_grace_s": 0.5})
    s = await stack(settings, tmp_path / "state.db")
    cleanup.append(s)
    await s.sync()
    keys = ["rh", "devis", "publicite"] * 6
    for k in keys:
        send(emu, k)
    emu.set_latency(0.005)
    emu.inject(429, times=60, mailbox=SHARED, retry_after=0, every=2)
    emu.inject(503, times=10, mailbox=SHARED, retry_after=None, every=3)
    report = (await s.sync())[SHARED]
    # A message whose retries ran out is retried by the pipeline (zero backoff here).
    for _ in range(3):
        if len({r.provider_id for r in report.results if r.status == Outcome.DONE}) == 18:
            break
        await asyncio.sleep(0.6)
        report.results += (await s.sync())[SHARED].results
    done = {r.provider_id for r in report.results if r.status == Outcome.DONE}
    assert len(done) == len(keys), [r.detail for r in report.results]
    assert [len(forwards(emu, k)) for k in ("rh", "devis")] == [6, 6]  # none twice
    assert emu.max_inflight(SHARED) <= 4
    assert emu.mailbox(SHARED).rejected_concurrency == 0
    assert sum(1 for r in emu.requests if r.status in (429, 503)) == 70


async def test_access_denied_mailbox_is_skipped_others_processed(
    emu: GraphEmulator, llm: SandboxLLM, tmp_path: Path, cleanup: list[Stack]
) -> None:
    settings = settings_for(emu, llm, SHARED, INFO, mailbox={"backfill_days": 1})
    emu.mailbox(INFO).access_denied = True
    send(emu, "devis")
    send(emu, "rh", to=INFO)
    s = await stack(settings, tmp_path / "state.db")
    cleanup.append(s)
    out = await s.sync()
    assert isinstance(out[INFO], AccessDeniedError) and INFO in str(out[INFO])
    assert out[SHARED].count(Outcome.DONE) == 1
    assert len(forwards(emu, "devis")) == 1


async def test_dry_run_changes_nothing_in_the_mailbox(
    emu: GraphEmulator, llm: SandboxLLM, tmp_path: Path, cleanup: list[Stack]
) -> None:
    settings = settings_for(emu, llm, mailbox={"backfill_days": 1}, dry_run=True)
    for key in ("rh", "devis", "publicite"):
        send(emu, key)
    before = emu.snapshot()
    s = await stack(settings, tmp_path / "state.db")
    cleanup.append(s)
    report = (await s.sync())[SHARED]
    assert report.count(Outcome.DRY_RUN) == 3
    assert emu.snapshot() == before
    assert {r.method for r in emu.requests} == {"GET"}
