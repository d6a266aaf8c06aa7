"""Graph forwards and moves after a crash, a lost answer, a timeout: never done twice.

Each resume path of an intent, through msgraph-sdk against the emulator: a sent copy
exists, a draft only (left by the two-request protocol of earlier versions), nothing, and a
write that was done although its answer was lost.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from mailtriage.connectors.graph.client import RetryPolicy
from mailtriage.connectors.graph.forwards import FORWARD_PROP, GraphForwards
from mailtriage.connectors.graph.mailbox import GraphMailbox
from mailtriage.core.actions import ActionPlan, Forward, Move
from mailtriage.core.intents import Intent, forward_key
from mailtriage.core.message import Message
from mailtriage.core.ports import MemoryStateStore
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.graph.config import sandbox_settings
from tests.helpers import ScriptedJournal

SHARED = "contact@atelier-dupont.fr"
RH = "rh@atelier-dupont.fr"
FORWARD = ActionPlan("rh", (Forward((RH,), note="Pour RH", reply_to="jean@example.org"),))
MOVE = ActionPlan("rh", (Move("Triage/RH"),))


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RetryPolicy, "delay_scale", 0.0)
    monkeypatch.setattr(GraphForwards, "retry_delay_s", 0.0)


@pytest.fixture
def emu() -> Iterator[GraphEmulator]:
    with GraphEmulator() as e:
        e.add_mailbox(SHARED)
        e.add_mailbox(RH)
        yield e


@pytest.fixture
async def box(emu: GraphEmulator) -> AsyncIterator[GraphMailbox]:
    settings = sandbox_settings(emu.base_url, [SHARED])
    mb = GraphMailbox.from_settings(settings, settings.mailboxes[0], MemoryStateStore())
    yield mb
    await mb.aclose()


async def arrived(emu: GraphEmulator, box: GraphMailbox) -> tuple[Message, str]:
    """A new application in the shared Inbox, read by the connector; and its forward id."""
    stored = emu.deliver(
        SHARED,
        subject="Candidature",
        body="Mon CV",
        sender="jean@example.org",
        internet_message_id=f"<cv-{time.monotonic_ns()}@example.org>",
    )
    message = await box.fetch(stored.immutable_id)
    return message, forward_key(SHARED, message.provider_id, "rh")


def writes(emu: GraphEmulator, *kinds: str) -> list[str]:
    return [e.kind for e in emu.executed if e.kind in kinds]


def delivered(emu: GraphEmulator) -> int:
    return len(emu.folder_messages(RH, "Inbox"))


async def test_intent_with_a_sent_copy_is_recorded_as_done(
    emu: GraphEmulator, box: GraphMailbox
) -> None:
    message, key = await arrived(emu, box)
    assert [r.ok for r in await box.apply(message, FORWARD, ScriptedJournal(Intent(key)))] == [True]
    journal = ScriptedJournal(Intent(key, earlier=True))
    assert [r.ok for r in await box.apply(message, FORWARD, journal)] == [True]
    assert writes(emu, "forward", "createForward", "send") == ["forward"]  # once, one request
    assert delivered(emu) == 1 and journal.results[0].ok


async def test_intent_with_a_draft_only_sends_that_draft(
    emu: GraphEmulator, box: GraphMailbox
) -> None:
    message, key = await arrived(emu, box)
    # what a crash right after createForward leaves: a complete draft carrying the id
    url = f"{emu.base_url}/users/{SHARED}/messages/{message.provider_id}/createForward"
    body: dict[str, Any] = {
        "message": {
            "toRecipients": [{"emailAddress": {"address": RH}}],
            "singleValueExtendedProperties": [{"id": FORWARD_PROP, "value": key}],
        }
    }
    assert httpx.post(url, json=body).status_code == 201
    assert len(emu.folder_messages(SHARED, "Drafts")) == 1
    journal = ScriptedJournal(Intent(key, earlier=True, evidence="send:AAMkDraft=@1"))
    assert [r.ok for r in await box.apply(message, FORWARD, journal)] == [True]
    # the draft is sent; no new forward
    assert writes(emu, "forward", "createForward", "send") == ["createForward", "send"]
    assert delivered(emu) == 1 and emu.folder_messages(SHARED, "Drafts") == []
    assert journal.notes and journal.notes[0][1].startswith("send:")


async def test_intent_with_nothing_forwards(emu: GraphEmulator, box: GraphMailbox) -> None:
    message, key = await arrived(emu, box)
    looked = emu.count("GET", f"/users/{SHARED}/messages")
    journal = ScriptedJournal(Intent(key, earlier=True))
    assert [r.ok for r in await box.apply(message, FORWARD, journal)] == [True]
    assert emu.count("GET", f"/users/{SHARED}/messages") == looked + 1  # the evidence lookup
    assert writes(emu, "forward", "createForward", "send") == ["forward"]
    assert delivered(emu) == 1


@pytest.mark.parametrize("mode", ["504", "503", "drop", "truncate"])
async def test_forward_done_but_answer_lost_is_not_repeated(
    emu: GraphEmulator, box: GraphMailbox, mode: str
) -> None:
    message, key = await arrived(emu, box)
    looked = emu.count("GET", f"/users/{SHARED}/messages")
    emu.lose_response("forward", mode)
    journal = ScriptedJournal(Intent(key))
    results = await box.apply(message, FORWARD, journal)
    assert [r.ok for r in results] == [True], results
    assert writes(emu, "forward", "createForward", "send") == ["forward"]
    assert delivered(emu) == 1 and emu.folder_messages(SHARED, "Sent Items") != []
    # looked for by its id in the mailbox before anything else was tried
    assert emu.count("GET", f"/users/{SHARED}/messages") == looked + 1
    assert journal.notes[0][1].startswith("forward:")


async def test_forward_refused_with_5xx_is_not_repeated_blindly(
    emu: GraphEmulator, box: GraphMailbox
) -> None:
    """A 503 says nothing of whether the forward ran (graph/errors) and its sent copy may
    appear late: no copy yet means wait, never a second forward right away."""
    message, key = await arrived(emu, box)
    emu.inject(503, path_contains="/forward", retry_after=None)  # nothing sent
    journal = ScriptedJournal(Intent(key))
    (result,) = await box.apply(message, FORWARD, journal)
    assert not result.ok and "no copy is visible yet" in result.error
    posts = [r.status for r in emu.requests if r.method == "POST" and r.path.endswith("/forward")]
    assert posts == [503]  # neither the transport nor the connector repeated it
    assert delivered(emu) == 0
    # later, with the attempt older than the grace period and still no copy: forwarded once
    stale = f"forward:{message.provider_id}@{time.time() - 3600:.0f}"
    journal = ScriptedJournal(Intent(key, earlier=True, evidence=stale))
    assert [r.ok for r in await box.apply(message, FORWARD, journal)] == [True]
    assert writes(emu, "forward") == ["forward"] and delivered(emu) == 1


async def test_a_send_just_attempted_with_no_copy_yet_is_not_repeated(
    emu: GraphEmulator, box: GraphMailbox
) -> None:
    """The sent copy may appear late (outlook-immutable-id): wait, do not send again."""
    message, key = await arrived(emu, box)
    evidence = f"forward:{message.provider_id}@{time.time():.0f}"
    journal = ScriptedJournal(Intent(key, earlier=True, evidence=evidence))
    (result,) = await box.apply(message, FORWARD, journal)
    assert not result.ok and "no copy is visible yet" in result.error
    assert writes(emu, "forward", "createForward", "send") == [] and delivered(emu) == 0
    stale = f"forward:{message.provider_id}@{time.time() - 3600:.0f}"
    journal = ScriptedJournal(Intent(key, earlier=True, evidence=stale))
    assert [r.ok for r in await box.apply(message, FORWARD, journal)] == [True]
    assert delivered(emu) == 1


async def test_move_with_lost_answer_is_checked_not_repeated(
    emu: GraphEmulator, box: GraphMailbox
) -> None:
    message, _ = await arrived(emu, box)
    emu.lose_response("move", "504")
    assert [r.ok for r in await box.apply(message, MOVE, ScriptedJournal(Intent()))] == [True]
    assert writes(emu, "move") == ["move"]
    assert emu.where(SHARED, message.provider_id) == "Inbox/Triage/RH"
    # a resumed move of a message already there costs one GET and moves nothing
    assert [r.ok for r in await box.apply(message, MOVE, ScriptedJournal(Intent(earlier=True)))]
    assert writes(emu, "move") == ["move"]


async def test_resumed_move_does_not_undo_a_staff_move(
    emu: GraphEmulator, box: GraphMailbox
) -> None:
    message, _ = await arrived(emu, box)
    emu.move(SHARED, message.provider_id, "Archives")  # staff sorted it meanwhile
    assert [r.ok for r in await box.apply(message, MOVE, ScriptedJournal(Intent(earlier=True)))]
    assert writes(emu, "move") == [] and emu.where(SHARED, message.provider_id) == "Archives"


async def test_draft_left_by_a_crash_is_sent_even_when_the_original_is_gone(
    emu: GraphEmulator, box: GraphMailbox, tmp_path: Any
) -> None:
    """No orphan draft: the pipeline's retry finds the draft and sends it, then gives up
    on the deleted original (nothing else can be done to it)."""
    from mailtriage.core.decision import Decision
    from mailtriage.core.ledger import Ledger, Status
    from mailtriage.core.pipeline import Outcome, Pipeline, RetryPolicy
    from tests.helpers import ScriptedClassifier

    message, key = await arrived(emu, box)
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.db'}")
    row = ledger.claim(message, "me")
    assert row is not None
    ledger.record_decision(
        row.id, Decision("rh", 0.9, "r", "test"), FORWARD, routed_to_review=False
    )
    (intent,) = ledger.begin_actions(row.id, [0], "me") or []
    assert intent.key == key
    # the crash: createForward was done, nothing recorded after it
    url = f"{emu.base_url}/users/{SHARED}/messages/{message.provider_id}/createForward"
    draft = {
        "message": {
            "toRecipients": [{"emailAddress": {"address": RH}}],
            "singleValueExtendedProperties": [{"id": FORWARD_PROP, "value": key}],
        }
    }
    assert httpx.post(url, json=draft).status_code == 201
    with emu.state.lock:  # staff deleted the original meanwhile
        mb = emu.mailbox(SHARED)
        emu.state.remove(mb, mb.messages[message.provider_id])
    settings = sandbox_settings(emu.base_url, [SHARED])
    pipeline = Pipeline(
        settings,
        ledger,
        ScriptedClassifier(lambda m: ("rh", 0.9)),
        owner="me",
        retry=RetryPolicy(0, 0),
        exclusive=True,
    )
    (result,) = await pipeline.retry_due(box)
    assert result.status == Outcome.GAVE_UP
    assert delivered(emu) == 1 and emu.folder_messages(SHARED, "Drafts") == []
    rec = ledger.record(row.id)
    assert rec.status == Status.GAVE_UP and rec.actions[0][0] == "applied"
