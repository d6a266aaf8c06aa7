"""End to end: emulator ⇄ google-api-python-client ⇄ GmailMailbox ⇄ Pipeline + Ledger."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from mailtriage.connectors.gmail import GmailMailbox, build_gmail_mailboxes, build_gmail_push
from mailtriage.core.config import Settings
from mailtriage.core.errors import AccessDeniedError
from mailtriage.core.ledger import Ledger
from mailtriage.core.pipeline import Outcome, Pipeline, RetryPolicy
from mailtriage.core.runtime import Service, sync_all
from mailtriage.sandbox.gmail import GmailEmulator, new_rsa_key
from mailtriage.sandbox.server import free_port
from tests.gmail_fixtures import OTHER, SHARED, gm, rfc822
from tests.helpers import ScriptedClassifier, by_subject, example_settings

__all__ = ["gm"]
NO_WAIT = RetryPolicy(base_delay_s=0, max_delay_s=0)
AUDIENCE = "https://mailtriage.example.fr/hooks/gmail"
COMPTA = "compta@atelier-dupont.fr"


@pytest.fixture(autouse=True)
def key_env(gm: GmailEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MT_TEST_GMAIL_KEY", gm.service_account_json())
    yield


def settings_for(
    gm: GmailEmulator, *, addresses: tuple[str, ...] = (SHARED,), **kw: Any
) -> Settings:
    gmail = {
        "service_account_env": "MT_TEST_GMAIL_KEY",
        "service_account_file": None,
        "api_endpoint": gm.url,
        "token_uri": gm.token_uri,
        "certs_url": gm.certs_url,
        "push_audience": AUDIENCE,
        "push_service_account": gm.signer.service_account,
        "pubsub_topic": "projects/sandbox-project/topics/mailtriage",
        "retry_base_delay_s": 0,
        **kw.pop("gmail", {}),
    }
    mailboxes = [
        {"provider": "gmail", "address": a, "backfill_days": kw.pop("backfill_days", 0)}
        for a in addresses
    ]
    return example_settings(gmail=gmail, mailbox=mailboxes, **kw)


def ledger_at(tmp_path: Path, name: str = "state") -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / name}.sqlite")


async def sync(settings: Settings, ledger: Ledger) -> tuple[dict[str, Any], list[GmailMailbox]]:
    """One pass over every mailbox, like `mailtriage sync`."""
    pipeline = Pipeline(settings, ledger, ScriptedClassifier(by_subject), retry=NO_WAIT)
    boxes = build_gmail_mailboxes(settings, ledger)
    try:
        return await sync_all(pipeline, boxes), boxes
    finally:
        for box in boxes:
            await box.aclose()


def statuses(report: Any) -> list[str]:
    return sorted(r.status for r in report.results)


async def test_new_mail_is_labelled_moved_and_forwarded_once(
    gm: GmailEmulator, tmp_path: Path
) -> None:
    settings = settings_for(gm)
    ledger = ledger_at(tmp_path)
    await sync(settings, ledger)  # first run: starts from now
    raw = rfc822(
        subject="[fournisseurs] Facture F-2024-118", sender="Fourni SA <factures@fourni.example>"
    )
    mid = gm.deliver(SHARED, raw)

    reports, _ = await sync(settings, ledger)
    assert statuses(reports[SHARED]) == [Outcome.DONE]
    assert gm.label_names(SHARED, mid) == {
        "Fournisseurs",
        "Triage/Fournisseurs",
        "UNREAD",
        "mailtriage/processed",
    }
    [(_, rcpts, sent)] = gm.outbound(COMPTA)
    forward = email.message_from_bytes(sent, policy=email.policy.default)
    assert rcpts == [COMPTA] and forward["Reply-To"] == "factures@fourni.example"
    assert forward["X-Mailtriage"] == f"forwarded; mailbox={SHARED}"
    [original] = list(forward.iter_attachments())  # type: ignore[attr-defined]
    assert original.get_content_type() == "message/rfc822"
    assert original.get_payload()[0]["Subject"] == "[fournisseurs] Facture F-2024-118"

    # Restart (new pipeline, new connector, same ledger): nothing is reprocessed.
    reports, _ = await sync(settings, ledger)
    assert reports[SHARED].results == []
    assert len(gm.outbound(COMPTA)) == 1
    # The forward itself, delivered to a hosted mailbox, is recognised as our own.


async def test_lost_ledger_processed_label_prevents_a_second_forward(
    gm: GmailEmulator, tmp_path: Path
) -> None:
    settings = settings_for(gm, backfill_days=1)
    mid = gm.deliver(SHARED, rfc822(subject="[fournisseurs] Facture F-7"))
    reports, _ = await sync(settings, ledger_at(tmp_path, "first"))
    assert statuses(reports[SHARED]) == [Outcome.DONE]
    # Staff drag it back into the inbox; then the state database is lost.
    gm.state.modify(SHARED, mid, ["INBOX"], [])

    reports, _ = await sync(settings, ledger_at(tmp_path, "fresh"))
    [result] = reports[SHARED].results
    assert result.status == Outcome.SKIPPED and "marker" in result.detail
    assert len(gm.outbound(COMPTA)) == 1


async def test_expired_history_id_resyncs_without_duplicates(
    gm: GmailEmulator, tmp_path: Path
) -> None:
    settings = settings_for(gm)
    ledger = ledger_at(tmp_path)
    await sync(settings, ledger)
    gm.deliver(SHARED, rfc822(subject="[review] ambigu"))  # stays in the inbox, labelled
    gm.deliver(SHARED, rfc822(subject="[fournisseurs] Facture"))
    reports, _ = await sync(settings, ledger)
    assert statuses(reports[SHARED]) == [Outcome.DONE, Outcome.DONE]

    gm.expire_history(SHARED)
    new = gm.deliver(SHARED, rfc822(subject="[clients] Colis abîmé"))
    reports, _ = await sync(settings, ledger)
    done = [r for r in reports[SHARED].results if r.status == Outcome.DONE]
    assert [r.provider_id for r in done] == [new]
    assert all(
        r.status in (Outcome.DUPLICATE, Outcome.SKIPPED)
        for r in reports[SHARED].results
        if r.provider_id != new
    )
    assert len(gm.outbound(COMPTA)) == 1 and len(gm.outbound("sav@atelier-dupont.fr")) == 1


async def test_rate_limit_storm_everything_processed_within_quota(tmp_path: Path) -> None:
    emulator = GmailEmulator(users=[SHARED], enforce_quota=False)
    with emulator as gm, pytest.MonkeyPatch.context() as mp:
        mp.setenv("MT_TEST_GMAIL_KEY", gm.service_account_json())
        settings = settings_for(gm)
        ledger = ledger_at(tmp_path)
        await sync(settings, ledger)
        subjects = [
            "[fournisseurs] F1",
            "[clients] C1",
            "[rh] CV",
            "[publicite] Promo",
            "[review] ?",
            "[devis] Devis",
            "[publicite] News",
            "[review] ??",
        ]
        ids = {gm.deliver(SHARED, rfc822(subject=s)) for s in subjects}
        gm.storm(0.3, seed=7)
        reports, boxes = await sync(settings, ledger)
        gm.storm(0)
        assert statuses(reports[SHARED]) == [Outcome.DONE] * len(subjects)
        assert all("mailtriage/processed" in gm.label_names(SHARED, i) for i in ids)
        assert len(gm.outbound()) == 4  # fournisseurs, clients, rh, devis: once each
        assert gm.state.rate_limited >= 5 and boxes[0].client.stats.retries >= 5
        assert gm.max_units_per_s(SHARED) <= 250


async def test_delegation_denied_on_one_mailbox_others_processed(
    gm: GmailEmulator, tmp_path: Path
) -> None:
    settings = settings_for(gm, addresses=(SHARED, OTHER))
    ledger = ledger_at(tmp_path)
    await sync(settings, ledger)
    gm.deliver(SHARED, rfc822(subject="[devis] 200 pièces"))
    gm.deliver(OTHER, rfc822(subject="[devis] 300 pièces", to=OTHER))
    gm.deny_delegation(OTHER)
    reports, _ = await sync(settings, ledger_at(tmp_path, "other"))  # fresh tokens
    assert isinstance(reports[OTHER], AccessDeniedError)
    assert "Domain Wide Delegation" in str(reports[OTHER]) and OTHER in str(reports[OTHER])
    reports, _ = await sync(settings, ledger)
    assert statuses(reports[SHARED]) == [Outcome.DONE]
    assert isinstance(reports[OTHER], AccessDeniedError)


async def test_dry_run_changes_nothing(gm: GmailEmulator, tmp_path: Path) -> None:
    settings = settings_for(gm, dry_run=True)
    ledger = ledger_at(tmp_path)
    await sync(settings, ledger)
    mid = gm.deliver(SHARED, rfc822(subject="[fournisseurs] Facture"))
    reports, _ = await sync(settings, ledger)
    assert statuses(reports[SHARED]) == [Outcome.DRY_RUN]
    assert gm.label_names(SHARED, mid) == {"INBOX", "UNREAD"}
    assert gm.outbound() == [] and gm.calls("messages.modify") == 0
    assert gm.calls("labels.create") == 0 and gm.calls("messages.send") == 0


async def test_push_through_the_service_triggers_sync_and_bad_jwt_is_rejected(
    gm: GmailEmulator, tmp_path: Path
) -> None:
    settings = settings_for(gm)
    ledger = ledger_at(tmp_path)
    boxes = build_gmail_mailboxes(settings, ledger)
    push = build_gmail_push(settings, boxes)
    assert push is not None
    service = Service(
        settings, ledger, ScriptedClassifier(by_subject), boxes, [push], retry=NO_WAIT
    )
    await service.sync(SHARED)  # cursor from now
    await push.install()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(service.app(), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{port}/hooks/gmail"
    try:
        gm.subscribe_push(settings.gmail.pubsub_topic or "", url, audience=AUDIENCE)
        mid = gm.deliver(SHARED, rfc822(subject="[rh] Candidature"))
        deadline = time.monotonic() + 15
        while "mailtriage/processed" not in gm.label_names(SHARED, mid):
            assert time.monotonic() < deadline, "push did not lead to a sync"
            await asyncio.sleep(0.05)
        assert gm.pusher.results[0][2] == 204
        assert len(gm.outbound("rh@atelier-dupont.fr")) == 1

        syncs = gm.calls("history.list", SHARED)
        body = gm.pusher.body(SHARED, 1, "projects/x/subscriptions/y")
        forged = gm.signer.sign(gm.signer.claims(AUDIENCE), key=new_rsa_key())
        async with httpx.AsyncClient() as client:
            missing = await client.post(url, json=body)
            bad = await client.post(url, json=body, headers={"Authorization": f"Bearer {forged}"})
        assert (missing.status_code, bad.status_code) == (401, 403)
        await asyncio.sleep(0.2)
        assert gm.calls("history.list", SHARED) == syncs  # no sync was triggered
    finally:
        server.should_exit = True
        thread.join(5)
        await push.uninstall()
        assert gm.state.users[SHARED].watch is None


async def test_failed_forward_is_retried_once_and_sent_once(
    gm: GmailEmulator, tmp_path: Path
) -> None:
    settings = settings_for(gm, gmail={"max_retries": 0})
    ledger = ledger_at(tmp_path)
    await sync(settings, ledger)
    mid = gm.deliver(SHARED, rfc822(subject="[clients] Colis jamais arrivé"))
    gm.inject("429", api="messages.send")  # the forward is throttled, retries are off
    reports, _ = await sync(settings, ledger)  # fails, then the due retry re-fetches and sends
    assert [r.status for r in reports[SHARED].results] == [Outcome.FAILED, Outcome.DONE]
    assert len(gm.outbound("sav@atelier-dupont.fr")) == 1
    assert gm.label_names(SHARED, mid) == {
        "Clients",
        "Triage/Clients",
        "UNREAD",
        "mailtriage/processed",
    }
    assert gm.calls("messages.send", SHARED) == 2  # one refused, one sent


async def test_unreadable_message_is_recorded_and_left_in_the_inbox(
    gm: GmailEmulator, tmp_path: Path
) -> None:
    settings = settings_for(gm)
    ledger = ledger_at(tmp_path)
    await sync(settings, ledger)
    bad = gm.deliver(SHARED, b"\x00\x01 this is not a mail message at all \xff")
    good = gm.deliver(SHARED, rfc822(subject="[devis] Devis"))
    reports, _ = await sync(settings, ledger)
    by_id = {r.provider_id: r for r in reports[SHARED].results}
    assert by_id[bad].status == Outcome.FAILED and by_id[bad].detail
    assert by_id[good].status == Outcome.DONE
    assert gm.label_names(SHARED, bad) == {"INBOX", "UNREAD"}  # untouched
    assert gm.calls("messages.send", SHARED) == 1  # only the good one was forwarded
