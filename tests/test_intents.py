"""Intent before effect, on the in-memory mailbox: every crash point resumes without repeats.

`MemoryMailbox.crash_after` raises a BaseException right after a write, as a kill -9 would
leave the process: nothing after it runs, the ledger keeps what was journaled.
"""

from __future__ import annotations

import pytest

from mailtriage.core.intents import forward_key, is_forward_message_id
from mailtriage.core.ledger import ActionState, Ledger, Status
from mailtriage.core.memory import Crash, MemoryMailbox
from mailtriage.core.pipeline import Outcome, Pipeline, RetryPolicy
from tests.helpers import ScriptedClassifier, by_subject, example_settings, make_message

BOX = "contact@atelier-dupont.fr"
NO_WAIT = RetryPolicy(base_delay_s=0, max_delay_s=0)


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'state.sqlite'}")


def pipeline(ledger: Ledger) -> Pipeline:
    return Pipeline(
        example_settings(),
        ledger,
        ScriptedClassifier(by_subject),
        retry=NO_WAIT,
        exclusive=True,  # as `mailtriage run` under its lease: a pending row is resumed
    )


@pytest.mark.parametrize("kind", ["label", "forward", "move"])
async def test_crash_right_after_each_write_resumes_without_repeating(
    ledger: Ledger, kind: str
) -> None:
    box = MemoryMailbox(BOX)
    box.deliver(make_message("[rh] Candidature", sender="jean@example.org"))
    box.crash_after = {kind}
    with pytest.raises(Crash):
        await pipeline(ledger).sync_mailbox(box)
    (row,) = ledger.recent()
    assert row.status == Status.PENDING
    box.crash_after = set()
    report = await pipeline(ledger).sync_mailbox(box)  # the restarted service
    assert [r.status for r in report.results] == [Outcome.DUPLICATE, Outcome.DONE]
    assert len(box.sent) == 1  # never a second forward
    (stored,) = box.store.values()
    assert stored.folder == "Triage/RH" and stored.labels == ["RH"] and stored.processed


async def test_results_are_journaled_as_they_happen(ledger: Ledger) -> None:
    box = MemoryMailbox(BOX)
    box.deliver(make_message("[rh] Candidature"))
    box.crash_after = {"label"}
    with pytest.raises(Crash):
        await pipeline(ledger).sync_mailbox(box)
    (row,) = ledger.recent()
    states = [state for state, _, _ in row.actions]
    # forward, label RH, move: all started with the decision; the forward's result was
    # recorded before the crash; the label's is held back to the row's end (setting a
    # label again is harmless), and the move never ran.
    assert states == [ActionState.APPLIED, ActionState.STARTED, ActionState.STARTED]
    key = forward_key(BOX, row.provider_id, "rh")
    assert row.intents[0].key == key and row.intents[0].tries == 1
    assert [i.kind for i in ledger.open_intents(BOX)] == ["label", "move"]


async def test_held_back_results_are_written_with_the_end_or_the_failure(
    ledger: Ledger,
) -> None:
    box = MemoryMailbox(BOX)
    box.deliver(make_message("[rh] Candidature"))
    box.deliver(make_message("[rh] Autre candidature"))
    box.fail_kinds = {"move": "folder refused"}
    first = await pipeline(ledger).sync_mailbox(box)
    assert {r.status for r in first.results} == {Outcome.FAILED}
    for row in ledger.recent():
        states = [state for state, _, _ in row.actions]  # forward, label (held back), move
        assert states == [ActionState.APPLIED, ActionState.APPLIED, ActionState.FAILED]
    box.fail_kinds = {}
    await pipeline(ledger).sync_mailbox(box)
    for row in ledger.recent():
        assert row.status == Status.DONE
        assert {state for state, _, _ in row.actions} == {ActionState.APPLIED}
    assert len(box.sent) == 2


async def test_lost_answer_is_checked_before_the_retry(ledger: Ledger) -> None:
    box = MemoryMailbox(BOX)
    box.deliver(make_message("[rh] Candidature"))
    box.lose_kinds = {"forward": 1}  # sent, but the answer is lost
    report = await pipeline(ledger).sync_mailbox(box)  # fails, then the due retry runs
    assert [r.status for r in report.results] == [Outcome.FAILED, Outcome.DONE]
    assert "OutcomeUnknownError" in report.results[0].detail
    assert len(box.sent) == 1


async def test_two_forwards_never_share_an_id() -> None:
    a = forward_key(BOX, "m1", "rh")
    assert a == forward_key(BOX.upper(), "m1", "rh")  # stable
    assert len({a, forward_key(BOX, "m2", "rh"), forward_key(BOX, "m1", "clients")}) == 3
    assert is_forward_message_id(f"<{a}@atelier-dupont.fr>")
    assert not is_forward_message_id("<abc@example.org>") and not is_forward_message_id(None)


async def test_a_message_gone_after_a_crash_settles_its_forward(ledger: Ledger) -> None:
    box = MemoryMailbox(BOX)
    msg = box.deliver(make_message("[rh] Candidature"))
    box.crash_after = {"forward"}
    with pytest.raises(Crash):
        await pipeline(ledger).sync_mailbox(box)
    box.crash_after = set()
    del box.store[msg.provider_id]  # staff deleted the original meanwhile
    report = await pipeline(ledger).sync_mailbox(box)
    assert [r.status for r in report.results] == [Outcome.GAVE_UP]
    assert len(box.sent) == 1
    (row,) = ledger.recent()
    assert row.actions[0][0] == ActionState.APPLIED  # found: sent


async def test_write_once_looks_before_every_retry() -> None:
    from mailtriage.core.errors import OutcomeUnknownError
    from mailtriage.core.intents import write_once

    calls: list[str] = []
    done = False

    async def write() -> None:
        nonlocal done
        calls.append("write")
        done = True  # it happens, but the answer is lost
        raise OutcomeUnknownError("lost")

    async def settle() -> bool:
        calls.append("look")
        return done

    await write_once(write, settle, look_first=False, attempts=3, delay_s=0)
    assert calls == ["write", "look"]  # found: not written again

    async def never() -> bool:
        calls.append("look")
        return False

    calls.clear()
    with pytest.raises(OutcomeUnknownError):
        await write_once(write, never, look_first=True, attempts=2, delay_s=0)
    assert calls == ["look", "write", "look", "write"]
