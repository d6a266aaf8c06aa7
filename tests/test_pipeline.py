"""The pipeline's guarantees, on the in-memory mailbox (connector tests cover providers)."""

from __future__ import annotations

import pytest

from mailtriage.core.ledger import Ledger, Status
from mailtriage.core.memory import MemoryMailbox
from mailtriage.core.pipeline import Outcome, Pipeline, RetryPolicy
from mailtriage.core.rules import LOOP_HEADER
from tests.helpers import ScriptedClassifier, by_subject, example_settings, make_message

BOX = "contact@atelier-dupont.fr"
NO_WAIT = RetryPolicy(base_delay_s=0, max_delay_s=0)


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'state.sqlite'}")


def make_pipeline(ledger: Ledger, classifier=None, **overrides) -> Pipeline:
    settings = example_settings(**overrides)
    return Pipeline(settings, ledger, classifier or ScriptedClassifier(by_subject), retry=NO_WAIT)


async def test_routes_and_applies_natively(ledger: Ledger) -> None:
    box = MemoryMailbox(BOX)
    box.deliver(make_message("[rh] Candidature", sender="jean@example.org"))
    box.deliver(make_message("[publicite] Promo -20%"))
    box.deliver(make_message("[fournisseurs:0.3] Facture ?"))
    report = await make_pipeline(ledger).sync_mailbox(box)
    assert [r.status for r in report.results] == [Outcome.DONE] * 3
    rh, pub, unsure = box.store.values()
    assert rh.labels == ["RH"] and rh.folder == "Triage/RH" and rh.processed
    assert pub.read and pub.folder == "Triage/Publicité"
    assert unsure.labels == ["À vérifier"] and unsure.folder == "Inbox"
    [(fwd, original)] = box.sent
    assert fwd.to == ("rh@atelier-dupont.fr",) and fwd.reply_to == "jean@example.org"
    assert original.subject == "[rh] Candidature"
    rec = ledger.find(BOX, unsure.message.provider_id)
    assert rec is not None and rec.routed_to_review and rec.category == "review"


async def test_second_pass_processes_nothing(ledger: Ledger) -> None:
    box = MemoryMailbox(BOX)
    box.deliver(make_message("[rh] Candidature"))
    clf = ScriptedClassifier(by_subject)
    await make_pipeline(ledger, clf).sync_mailbox(box)
    # replay from the start, as after a lost cursor: the ledger dedups
    ledger.set_cursor(BOX, None)
    report = await make_pipeline(ledger, clf).sync_mailbox(box)
    assert [r.status for r in report.results] == [Outcome.DUPLICATE]
    assert clf.calls == 1 and len(box.sent) == 1


async def test_lost_ledger_marker_prevents_second_forward(tmp_path) -> None:
    box = MemoryMailbox(BOX)
    box.deliver(make_message("[rh] Candidature"))
    await make_pipeline(Ledger(f"sqlite:///{tmp_path / 'a.sqlite'}")).sync_mailbox(box)
    report = await make_pipeline(Ledger(f"sqlite:///{tmp_path / 'b.sqlite'}")).sync_mailbox(box)
    assert report.results[0].status == Outcome.SKIPPED
    assert "marker" in report.results[0].detail
    assert len(box.sent) == 1


async def test_rules_skip_and_record(ledger: Ledger) -> None:
    box = MemoryMailbox(BOX)
    box.deliver(make_message("Réponse automatique : absent"))
    box.deliver(make_message("[rh] fwd", headers={LOOP_HEADER: "forwarded"}))
    box.deliver(make_message("Promo", sender="x@news.bureau-plus.example"))
    clf = ScriptedClassifier(by_subject)
    report = await make_pipeline(ledger, clf).sync_mailbox(box)
    assert [r.status for r in report.results] == [Outcome.SKIPPED, Outcome.SKIPPED, Outcome.DONE]
    assert report.results[2].classifier == "rule" and report.results[2].category == "publicite"
    assert clf.calls == 0
    assert {r.status for r in ledger.recent()} == {Status.SKIPPED, Status.DONE}


async def test_dry_run_changes_nothing(ledger: Ledger) -> None:
    box = MemoryMailbox(BOX)
    box.deliver(make_message("[rh] Candidature"))
    report = await make_pipeline(ledger, dry_run=True).sync_mailbox(box)
    assert report.results[0].status == Outcome.DRY_RUN
    stored = next(iter(box.store.values()))
    assert stored.labels == [] and stored.folder == "Inbox" and not stored.processed
    assert box.sent == [] and "apply" not in box.calls
    assert ledger.recent()[0].status == Status.DRY_RUN


async def test_classifier_failure_is_retried_then_succeeds(ledger: Ledger) -> None:
    box = MemoryMailbox(BOX)
    box.deliver(make_message("[rh] Candidature"))
    answers = iter(["!error", "rh"])
    clf = ScriptedClassifier(lambda m: (next(answers), 0.9))
    pipe = make_pipeline(ledger, clf)
    first = await pipe.sync_mailbox(box)
    assert [r.status for r in first.results] == [Outcome.FAILED, Outcome.DONE]  # retried at once
    rec = ledger.recent()[0]
    assert rec.status == Status.DONE and rec.attempts == 1 and len(box.sent) == 1


async def test_failed_action_retries_only_what_is_missing(ledger: Ledger) -> None:
    box = MemoryMailbox(BOX)
    box.deliver(make_message("[rh] Candidature"))
    box.fail_kinds["move"] = "folder quota exceeded"
    pipe = make_pipeline(ledger)
    report = await pipe.sync_mailbox(box)
    assert report.results[-1].status == Outcome.FAILED
    box.fail_kinds.clear()
    report = await pipe.sync_mailbox(box)
    assert report.results[-1].status == Outcome.DONE
    assert len(box.sent) == 1  # the forward was not sent again
    assert box.calls.count("label") == 1


async def test_gives_up_after_max_attempts_and_labels_review(ledger: Ledger) -> None:
    box = MemoryMailbox(BOX)
    box.deliver(make_message("[!error] whatever"))
    pipe = make_pipeline(ledger, runtime={"max_attempts": 3})
    statuses = []
    for _ in range(3):
        statuses += [r.status for r in (await pipe.sync_mailbox(box)).results]
    assert statuses.count(Outcome.GAVE_UP) == 1
    stored = next(iter(box.store.values()))
    assert stored.folder == "Inbox" and stored.labels == ["À vérifier"]
    rec = ledger.recent()[0]
    assert (
        rec.status == Status.GAVE_UP and rec.attempts == 3 and "model unavailable" in rec.last_error
    )


async def test_unreadable_message_is_recorded_and_left_alone(ledger: Ledger) -> None:
    box = MemoryMailbox(BOX)
    box.deliver_unreadable("broken-1", "no headers and no body")
    report = await make_pipeline(ledger).sync_mailbox(box)
    assert report.results[0].status == Outcome.FAILED
    assert "no headers" in ledger.recent()[0].last_error
    assert box.sent == []


async def test_two_workers_claim_each_message_once(tmp_path) -> None:
    import asyncio

    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    box = MemoryMailbox(BOX)
    for i in range(20):
        box.deliver(make_message(f"[rh] Candidature {i}"))
    p1 = make_pipeline(Ledger(url))
    p2 = make_pipeline(Ledger(url))
    r1, r2 = await asyncio.gather(p1.sync_mailbox(box), p2.sync_mailbox(box))
    done = [r for r in r1.results + r2.results if r.status == Outcome.DONE]
    assert len(done) == 20 and len(box.sent) == 20


async def test_staff_move_is_recorded_as_correction(ledger: Ledger) -> None:
    from mailtriage.core.ports import Change

    box = MemoryMailbox(BOX)
    m = box.deliver(make_message("[rh] Facture"))
    pipe = make_pipeline(ledger)
    await pipe.sync_mailbox(box)
    orig = box.changes

    async def with_move(cursor):
        page = await orig(cursor)
        page.moves.append(Change(provider_id=m.provider_id, location="Triage/Fournisseurs"))
        return page

    box.changes = with_move  # type: ignore[method-assign]
    report = await pipe.sync_mailbox(box)
    assert report.corrections == 1
    assert ledger.correction_count() == 1


async def test_at_most_max_concurrent_syncs_mailboxes_at_once(ledger: Ledger) -> None:
    """Eight mailboxes synced together, two at a time; every message still done."""
    import asyncio

    live, peak = [0], [0]

    class Watched(MemoryMailbox):
        async def changes(self, cursor):  # type: ignore[no-untyped-def]
            live[0] += 1
            peak[0] = max(peak[0], live[0])
            await asyncio.sleep(0.02)
            live[0] -= 1
            return await super().changes(cursor)

    boxes = [Watched(f"box{i}@atelier-dupont.fr") for i in range(8)]
    for box in boxes:
        box.deliver(make_message("[rh] Candidature", mailbox=box.address))
    pipeline = make_pipeline(ledger, runtime={"max_concurrent_syncs": 2})
    reports = await asyncio.gather(*(pipeline.sync_mailbox(b) for b in boxes))
    assert peak[0] == 2
    assert [r.count(Outcome.DONE) for r in reports] == [1] * 8
