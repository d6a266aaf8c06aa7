"""Gmail forwards and modifies after a crash, a lost answer, a timeout: never done twice.

Each resume path through google-api-python-client against the emulator: a sent copy
exists, nothing was sent, and a send that was done although its answer was lost (a 5xx,
or a dropped connection that httplib2 would have silently replayed).
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from typing import Any

import pytest

from mailtriage.connectors.gmail import GmailMailbox
from mailtriage.connectors.gmail.forwards import GmailForwards
from mailtriage.connectors.gmail.transport import replays_harm
from mailtriage.core.actions import ActionPlan, Forward, Label, Move
from mailtriage.core.intents import Intent, forward_key, forward_message_id
from mailtriage.core.message import Message
from mailtriage.core.ports import MemoryStateStore
from mailtriage.sandbox.gmail import GmailEmulator
from tests.gmail_fixtures import SHARED, gm, gmail_settings, rfc822
from tests.helpers import ScriptedJournal

__all__ = ["gm"]
COMPTA = "compta@atelier-dupont.fr"
FORWARD = ActionPlan("fournisseurs", (Forward((COMPTA,), note="Pour la compta"),))
SORT = ActionPlan("fournisseurs", (Label("Fournisseurs"), Move("Triage/Fournisseurs")))


@pytest.fixture(autouse=True)
def key_env(gm: GmailEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MT_TEST_GMAIL_KEY", gm.service_account_json())
    monkeypatch.setattr(GmailForwards, "retry_delay_s", 0.0)
    yield


@pytest.fixture
def box(gm: GmailEmulator) -> Iterator[GmailMailbox]:
    settings = gmail_settings(gm)
    mb = GmailMailbox.from_settings(settings, settings.mailbox(SHARED), MemoryStateStore())
    yield mb
    mb.client.close()


async def arrived(gm: GmailEmulator, box: GmailMailbox) -> tuple[Message, str]:
    mid = gm.deliver(SHARED, rfc822(subject="[fournisseurs] Facture F-1"))
    message = await box.fetch(mid)
    return message, forward_key(SHARED, message.provider_id, "fournisseurs")


def sends(gm: GmailEmulator) -> list[Any]:
    return [e for e in gm.executed if e.kind == "messages.send"]


async def test_forward_carries_its_deterministic_message_id(
    gm: GmailEmulator, box: GmailMailbox
) -> None:
    message, key = await arrived(gm, box)
    assert [r.ok for r in await box.apply(message, FORWARD, ScriptedJournal(Intent(key)))]
    ((_, _, raw),) = gm.outbound(COMPTA)
    sent = email.message_from_bytes(raw, policy=email.policy.default)
    assert sent["Message-ID"] == forward_message_id(key, SHARED)
    assert sent["X-Mailtriage-Origin"] == message.internet_message_id


async def test_intent_with_a_sent_copy_is_recorded_as_done(
    gm: GmailEmulator, box: GmailMailbox
) -> None:
    message, key = await arrived(gm, box)
    await box.apply(message, FORWARD, ScriptedJournal(Intent(key)))
    journal = ScriptedJournal(Intent(key, earlier=True))
    assert [r.ok for r in await box.apply(message, FORWARD, journal)] == [True]
    assert len(sends(gm)) == 1 and len(gm.outbound(COMPTA)) == 1


async def test_intent_with_nothing_sends(gm: GmailEmulator, box: GmailMailbox) -> None:
    message, key = await arrived(gm, box)
    listed = gm.calls("messages.list", SHARED)
    journal = ScriptedJournal(Intent(key, earlier=True))
    assert [r.ok for r in await box.apply(message, FORWARD, journal)] == [True]
    assert gm.calls("messages.list", SHARED) == listed + 2  # search, then recent SENT
    assert len(sends(gm)) == 1


@pytest.mark.parametrize("mode", ["504", "503", "drop", "truncate"])
async def test_send_done_but_answer_lost_is_not_repeated(
    gm: GmailEmulator, box: GmailMailbox, mode: str
) -> None:
    message, key = await arrived(gm, box)
    gm.lose_response("messages.send", mode)
    results = await box.apply(message, FORWARD, ScriptedJournal(Intent(key)))
    assert [r.ok for r in results] == [True], results
    assert len(sends(gm)) == 1 and len(gm.outbound(COMPTA)) == 1


async def test_sent_copy_found_while_search_lags(gm: GmailEmulator, box: GmailMailbox) -> None:
    """Search latency is undocumented: the recent SENT listing still finds the copy."""
    message, key = await arrived(gm, box)
    gm.state.search_lag_s = 3600
    gm.lose_response("messages.send", "drop")
    assert [r.ok for r in await box.apply(message, FORWARD, ScriptedJournal(Intent(key)))]
    assert len(sends(gm)) == 1


async def test_resumed_modify_changes_only_what_is_missing(
    gm: GmailEmulator, box: GmailMailbox
) -> None:
    message, _ = await arrived(gm, box)
    await box.apply(message, SORT, ScriptedJournal())
    modifies = gm.calls("messages.modify", SHARED)
    journal = ScriptedJournal(Intent(earlier=True), Intent(earlier=True))
    assert [r.ok for r in await box.apply(message, SORT, journal)] == [True, True]
    assert gm.calls("messages.modify", SHARED) == modifies  # one GET, no second modify


async def test_resumed_move_does_not_undo_a_staff_move(
    gm: GmailEmulator, box: GmailMailbox
) -> None:
    message, _ = await arrived(gm, box)
    other = gm.state.label_create(SHARED, {"name": "Devis"})["id"]
    gm.state.modify(SHARED, message.provider_id, [other], ["INBOX"])  # staff sorted it
    journal = ScriptedJournal(Intent(earlier=True), Intent(earlier=True))
    assert [r.ok for r in await box.apply(message, SORT, journal)] == [True, True]
    assert gm.label_names(SHARED, message.provider_id) >= {"Devis", "Fournisseurs"}
    assert "Triage/Fournisseurs" not in gm.label_names(SHARED, message.provider_id)


def test_only_sends_are_protected_from_replays() -> None:
    assert replays_harm("POST", "/gmail/v1/users/a%40b.fr/messages/send?alt=json")
    assert replays_harm("POST", "/upload/gmail/v1/users/a%40b.fr/messages/send?uploadType=media")
    assert not replays_harm("POST", "/gmail/v1/users/a%40b.fr/messages/x/modify?alt=json")
    assert not replays_harm("GET", "/gmail/v1/users/a%40b.fr/messages/send")
