"""GmailMailbox through the real google-api-python-client against the emulator."""

from __future__ import annotations

import email
import email.policy
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mailtriage.connectors.gmail import GmailMailbox, QuotaLimiter
from mailtriage.connectors.gmail.labels import PRESET_COLOURS
from mailtriage.core.actions import ActionPlan, Forward, Label, MarkRead, Move
from mailtriage.core.decision import Decision
from mailtriage.core.errors import AccessDeniedError
from mailtriage.core.ports import MemoryStateStore, StateStore
from mailtriage.sandbox.gmail import LABEL_PALETTE, GmailEmulator
from tests.gmail_fixtures import OTHER, SHARED, gm, gmail_settings, rfc822

__all__ = ["gm"]
DECISION = Decision(category="fournisseurs", confidence=0.9, reason="facture", classifier="test")
FORWARD_PLAN = ActionPlan(
    category="fournisseurs",
    actions=(
        Label("Fournisseurs", "preset4"),
        Move("Triage/Fournisseurs"),
        Forward(("compta@atelier-dupont.fr",), note="Routed by mailtriage to Fournisseurs"),
    ),
)


@pytest.fixture(autouse=True)
def key_env(gm: GmailEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MT_TEST_GMAIL_KEY", gm.service_account_json())
    yield


def mailbox(
    gm: GmailEmulator, address: str = SHARED, store: StateStore | None = None, **kw: Any
) -> GmailMailbox:
    settings = gmail_settings(gm, **kw)
    return GmailMailbox.from_settings(
        settings, settings.mailbox(address), store or MemoryStateStore()
    )


async def drain(box: GmailMailbox, cursor: str | None) -> tuple[list[Any], str | None]:
    """Read every page, like the pipeline does."""
    messages: list[Any] = []
    while True:
        page = await box.changes(cursor)
        messages += page.messages
        assert not page.failures
        cursor = page.cursor
        if not page.more:
            return messages, cursor


def test_preset_colours_are_on_gmails_palette() -> None:
    for background, text in PRESET_COLOURS.values():
        assert background in LABEL_PALETTE and text in LABEL_PALETTE


async def test_first_run_from_now_then_history_moves_forward(gm: GmailEmulator) -> None:
    gm.deliver(SHARED, rfc822(subject="before install"))
    box = mailbox(gm)
    messages, cursor = await drain(box, None)
    assert messages == [] and cursor is not None

    mid = gm.deliver(SHARED, rfc822(subject="Facture F-118", sender="Fourni <f@fourni.example>"))
    gm.deliver(SHARED, rfc822(subject="not inbox"), labels=("UNREAD",))
    messages, cursor2 = await drain(box, cursor)
    assert [(m.provider_id, m.subject, m.sender.email) for m in messages] == [
        (mid, "Facture F-118", "f@fourni.example")
    ]
    assert int(cursor2 or 0) > int(cursor)
    again, cursor3 = await drain(box, cursor2)
    assert again == [] and cursor3 == cursor2


async def test_backfill_window_pages(gm: GmailEmulator) -> None:
    old = int((time.time() - 5 * 86_400) * 1000)
    gm.deliver(SHARED, rfc822(subject="too old"), internal_date_ms=old)
    recent = {gm.deliver(SHARED, rfc822(subject=f"recent {i}")) for i in range(5)}
    box = mailbox(
        gm,
        gmail={"page_size": 2},
        mailbox=[{"provider": "gmail", "address": SHARED, "backfill_days": 2}],
    )
    page = await box.changes(None)
    assert page.more and page.cursor and page.cursor.startswith("list:")
    messages, cursor = await drain(box, None)
    assert {m.provider_id for m in messages} == recent
    assert cursor is not None and cursor.isdigit()


async def test_forward_plan_labels_moves_forwards_and_marks(gm: GmailEmulator) -> None:
    box = mailbox(gm)
    _, cursor = await drain(box, None)
    raw = rfc822(subject="Facture F-118", sender="Fourni SA <factures@fourni.example>")
    mid = gm.deliver(SHARED, raw)
    [message], cursor = await drain(box, cursor)

    results = await box.apply(message, FORWARD_PLAN)
    assert [r.ok for r in results] == [True, True, True]
    await box.mark_processed(message, DECISION)

    assert gm.label_names(SHARED, mid) == {
        "Fournisseurs",
        "Triage/Fournisseurs",
        "UNREAD",
        "mailtriage/processed",
    }
    labels = {lab["name"]: lab for lab in gm.state.labels_list(SHARED)["labels"]}
    assert "Triage" in labels  # the parent of the nested label exists
    assert labels["Fournisseurs"]["color"] == {"backgroundColor": "#16a766", "textColor": "#ffffff"}
    assert labels["mailtriage/processed"]["labelListVisibility"] == "labelHide"

    [(sender, rcpts, sent)] = gm.outbound("compta@atelier-dupont.fr")
    fwd = email.message_from_bytes(sent, policy=email.policy.default)
    assert sender == SHARED and rcpts == ["compta@atelier-dupont.fr"]
    assert fwd["Reply-To"] == "Fourni SA <factures@fourni.example>"
    assert fwd["X-Mailtriage"] == f"forwarded; mailbox={SHARED}"
    assert fwd["Subject"] == "Fwd: Facture F-118"
    [attached] = list(fwd.iter_attachments())  # type: ignore[attr-defined]
    assert attached.get_content_type() == "message/rfc822"
    assert attached.get_payload()[0]["Message-ID"] == message.internet_message_id
    # get (batched) twice, size first then raw; one modify for label+move, one for the
    # marker; one send.
    assert gm.calls("messages.get", SHARED) == 2
    assert gm.calls("messages.modify", SHARED) == 2
    assert gm.calls("messages.send", SHARED) == 1


async def test_label_move_and_mark_read_are_one_modify_with_the_marker(gm: GmailEmulator) -> None:
    box = mailbox(gm)
    _, cursor = await drain(box, None)
    mid = gm.deliver(SHARED, rfc822(subject="Newsletter -20%"))
    [message], _ = await drain(box, cursor)
    plan = ActionPlan("publicite", (Label("Publicité"), Move("Triage/Publicité"), MarkRead()))
    assert all(r.ok for r in await box.apply(message, plan))
    await box.mark_processed(message, DECISION)
    assert gm.label_names(SHARED, mid) == {"Publicité", "Triage/Publicité", "mailtriage/processed"}
    assert gm.calls("messages.modify", SHARED) == 1


async def test_stale_cached_label_id_is_recovered(gm: GmailEmulator) -> None:
    store = MemoryStateStore()
    box = mailbox(gm, store=store)
    _, cursor = await drain(box, None)
    gm.deliver(SHARED, rfc822())
    [first], cursor = await drain(box, cursor)
    await box.apply(first, ActionPlan("review", (Label("À vérifier"),)))
    label_id = json.loads(await store.get(SHARED, "gmail.labels") or "{}")["À vérifier"]
    gm.state.label_delete(SHARED, label_id)  # staff deleted the label

    box2 = mailbox(gm, store=store)  # restart: ids come from the store
    mid = gm.deliver(SHARED, rfc822())
    [second], _ = await drain(box2, cursor)
    assert [r.ok for r in await box2.apply(second, ActionPlan("review", (Label("À vérifier"),)))]
    assert "À vérifier" in gm.label_names(SHARED, mid)


async def test_inline_forward_mode(gm: GmailEmulator) -> None:
    box = mailbox(gm, gmail={"forward_mode": "inline"})
    _, cursor = await drain(box, None)
    gm.deliver(SHARED, rfc822(subject="Commande 4512", body="Ma commande n'est pas arrivée"))
    [message], _ = await drain(box, cursor)
    plan = ActionPlan("clients", (Forward(("sav@atelier-dupont.fr",), note="Pour le SAV"),))
    assert [r.ok for r in await box.apply(message, plan)] == [True]
    [(_, _, sent)] = gm.outbound("sav@atelier-dupont.fr")
    fwd = email.message_from_bytes(sent, policy=email.policy.default)
    text = fwd.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "Pour le SAV" in text and "Ma commande n'est pas arrivée" in text
    assert fwd["Reply-To"] == "Jeanne Client <jeanne@client.example>"


async def test_processed_label_survives_a_lost_ledger(gm: GmailEmulator) -> None:
    box = mailbox(gm)
    _, cursor = await drain(box, None)
    mid = gm.deliver(SHARED, rfc822())
    [message], _ = await drain(box, cursor)
    await box.apply(message, ActionPlan("review", (Label("À vérifier"),)))
    await box.mark_processed(message, DECISION)

    # Ledger and state lost: a fresh store and no cursor, with a backfill window.
    fresh = mailbox(
        gm,
        store=MemoryStateStore(),
        mailbox=[{"provider": "gmail", "address": SHARED, "backfill_days": 1}],
    )
    messages, _ = await drain(fresh, None)
    [again] = [m for m in messages if m.provider_id == mid]
    assert again.processed_marker is True
    assert "À vérifier" in again.categories


async def test_expired_history_id_resyncs_a_bounded_window(gm: GmailEmulator) -> None:
    box = mailbox(gm)
    _, cursor = await drain(box, None)
    handled = gm.deliver(SHARED, rfc822(subject="handled"))
    [message], cursor = await drain(box, cursor)
    await box.apply(message, ActionPlan("review", (Label("À vérifier"),)))
    await box.mark_processed(message, DECISION)
    new = gm.deliver(SHARED, rfc822(subject="arrived meanwhile"))
    gm.expire_history(SHARED)

    messages, cursor2 = await drain(box, cursor)
    by_id = {m.provider_id: m for m in messages}
    assert set(by_id) == {handled, new}
    assert by_id[handled].processed_marker and not by_id[new].processed_marker
    assert cursor2 is not None and int(cursor2) > int(cursor or 0)
    assert (await drain(box, cursor2))[0] == []


async def test_rate_limit_storm_every_message_processed(gm: GmailEmulator) -> None:
    box = mailbox(gm)
    _, cursor = await drain(box, None)
    ids = {gm.deliver(SHARED, rfc822(subject=f"m{i}")) for i in range(10)}
    gm.storm(0.3, seed=4)
    messages, _ = await drain(box, cursor)
    assert {m.provider_id for m in messages} == ids
    for i, message in enumerate(messages):
        plan = FORWARD_PLAN if i < 3 else ActionPlan("publicite", (Move("Triage/Pub"), MarkRead()))
        results = await box.apply(message, plan)
        assert all(r.ok for r in results), results
        await box.mark_processed(message, DECISION)
    gm.storm(0)
    assert gm.state.rate_limited > 5 and box.client.stats.retries >= gm.state.rate_limited
    assert all("mailtriage/processed" in gm.label_names(SHARED, i) for i in ids)
    assert len(gm.outbound("compta@atelier-dupont.fr")) == 3


async def test_limiter_keeps_the_per_user_quota() -> None:
    budget = 100
    with GmailEmulator(users=[SHARED], quota_units_per_s=budget, enforce_quota=False) as gm:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MT_TEST_GMAIL_KEY", gm.service_account_json())
            box = mailbox(
                gm,
                gmail={"quota_units_per_s": budget},
                mailbox=[{"provider": "gmail", "address": SHARED}],
            )
            _, cursor = await drain(box, None)
            for i in range(8):
                gm.deliver(SHARED, rfc822(subject=f"m{i}"))
            messages, _ = await drain(box, cursor)
            for i, message in enumerate(messages):
                plan = FORWARD_PLAN if i < 1 else ActionPlan("review", (Label("À vérifier"),))
                assert all(r.ok for r in await box.apply(message, plan))
                await box.mark_processed(message, DECISION)
        assert gm.units_used(SHARED) > 1.5 * budget  # the load did need throttling
        assert gm.max_units_per_s(SHARED) <= budget
        assert box.client.limiter.waited_s > 0


async def test_quota_limiter_window_unit() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = QuotaLimiter(250, margin_s=0.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(2):
        await limiter.acquire(100)
    await limiter.acquire(50)
    assert slept == []
    await limiter.acquire(100)  # 250 used in the window: waits for the first to expire
    assert slept == [1.0]


async def test_delegation_denied_names_the_mailbox_and_the_fix(gm: GmailEmulator) -> None:
    gm.deny_delegation(OTHER)
    with pytest.raises(AccessDeniedError) as denied:
        await mailbox(gm, OTHER).changes(None)
    assert OTHER in str(denied.value) and "Domain Wide Delegation" in str(denied.value)
    assert denied.value.mailbox == OTHER
    page = await mailbox(gm, SHARED).changes(None)  # the other mailbox is unaffected
    assert page.cursor


async def test_dry_run_changes_nothing(gm: GmailEmulator) -> None:
    box = mailbox(gm, dry_run=True)
    _, cursor = await drain(box, None)
    mid = gm.deliver(SHARED, rfc822())
    [message], _ = await drain(box, cursor)
    plan = ActionPlan(FORWARD_PLAN.category, FORWARD_PLAN.actions, dry_run=True)
    assert await box.apply(message, plan) == []
    await box.mark_processed(message, DECISION)
    assert gm.label_names(SHARED, mid) == {"INBOX", "UNREAD"}
    assert gm.outbound() == [] and gm.calls("messages.modify") == 0
    assert gm.calls("labels.create") == 0


async def test_stale_listing_page_token_relists_the_window(gm: GmailEmulator) -> None:
    ids = {gm.deliver(SHARED, rfc822(subject=f"m{i}")) for i in range(3)}
    box = mailbox(gm, mailbox=[{"provider": "gmail", "address": SHARED, "backfill_days": 1}])
    history_id = gm.state.profile(SHARED)["historyId"]
    page = await box.changes(f"list:{history_id}:0:not-a-token")
    assert {m.provider_id for m in page.messages} == ids and page.cursor == history_id
