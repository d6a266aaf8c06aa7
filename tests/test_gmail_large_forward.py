"""Gmail forwards of large mail: the media upload up to 35 MB, a notice above.

Through google-api-python-client against the emulator, which refuses JSON `raw` bodies over
5 MB with 413 and takes `message/rfc822` uploads up to 35 MB on the upload URI.
"""

from __future__ import annotations

import base64
import email
import email.policy
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httplib2
import pytest
from googleapiclient.errors import HttpError, MediaUploadSizeError
from googleapiclient.http import MediaIoBaseUpload

from mailtriage.connectors.gmail import build_gmail_mailboxes
from mailtriage.connectors.gmail.client import on_endpoint
from mailtriage.connectors.gmail.forwards import JSON_SEND_MAX_BYTES, UPLOAD_MAX_BYTES
from mailtriage.core.intents import forward_key, forward_message_id
from mailtriage.core.ledger import Ledger
from mailtriage.core.pipeline import Outcome, Pipeline, RetryPolicy
from mailtriage.core.runtime import sync_all
from mailtriage.sandbox.gmail import GmailEmulator
from tests.gmail_fixtures import SHARED, gm, gmail_settings, rfc822, service
from tests.helpers import ScriptedClassifier, by_subject

__all__ = ["gm"]
MB = 1024 * 1024
COMPTA = "compta@atelier-dupont.fr"


@pytest.fixture(autouse=True)
def key_env(gm: GmailEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MT_TEST_GMAIL_KEY", gm.service_account_json())
    yield


def invoice(size: int, n: int = 1) -> bytes:
    """A supplier's invoice with a scanned attachment of about `size` bytes (base64)."""
    data = base64.encodebytes(os.urandom(size * 3 // 4))
    return (
        b"From: Fourni SA <factures@fourni.example>\r\nTo: " + SHARED.encode() + b"\r\n"
        b"Subject: [fournisseurs] Facture scannee " + str(n).encode() + b"\r\n"
        b"Message-ID: <scan-" + str(n).encode() + b"@fourni.example>\r\n"
        b"Date: Mon, 30 Nov 2026 09:00:00 +0100\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BB\r\n\r\n"
        b"--BB\r\nContent-Type: text/plain\r\n\r\nVeuillez trouver notre facture.\r\n--BB\r\n"
        b"Content-Type: application/pdf; name=scan.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + data + b"--BB--\r\n"
    )


async def triage(gm: GmailEmulator, tmp_path: Path, raw: bytes) -> tuple[Ledger, Any]:
    """Deliver `raw` after a first run, then one `mailtriage sync` pass."""
    settings = gmail_settings(gm, mailbox=[{"provider": "gmail", "address": SHARED}])
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.sqlite'}")
    pipeline = Pipeline(settings, ledger, ScriptedClassifier(by_subject), retry=RetryPolicy(0, 0))
    boxes = build_gmail_mailboxes(settings, ledger)
    try:
        await sync_all(pipeline, boxes)
        gm.deliver(SHARED, raw)
        reports = await sync_all(pipeline, boxes)
    finally:
        for box in boxes:
            await box.aclose()
    return ledger, reports[SHARED]


def test_emulator_refuses_large_json_and_takes_the_upload(gm: GmailEmulator) -> None:
    users = service(gm, SHARED).users()
    message = rfc822(to=COMPTA) + b"\r\n" + b"x" * (6 * MB)
    with pytest.raises(HttpError) as refused:
        users.messages().send(
            userId=SHARED, body={"raw": base64.urlsafe_b64encode(message).decode()}
        ).execute()
    assert refused.value.status_code == 413
    assert refused.value.error_details[0]["reason"] == "uploadTooLarge"  # type: ignore[index]
    assert gm.outbound(COMPTA) == []
    media = MediaIoBaseUpload(io.BytesIO(message), mimetype="message/rfc822")
    request = users.messages().send(userId=SHARED, media_body=media)
    assert "/upload/gmail/v1/users/" in request.uri and "uploadType=media" in request.uri
    sent = on_endpoint(request, gm.url).execute()
    assert "SENT" in sent["labelIds"]
    assert gm.uploads(SHARED) == [(SHARED, "media", len(message))]
    assert len(gm.outbound(COMPTA)) == 1
    # over 35 MB: the SDK refuses it from the discovery document's maxSize, and the
    # emulator answers 413 to whoever sends it anyway
    huge = message + b"y" * (UPLOAD_MAX_BYTES - len(message) + 1)
    with pytest.raises(MediaUploadSizeError):
        users.messages().send(
            userId=SHARED, media_body=MediaIoBaseUpload(io.BytesIO(huge), "message/rfc822")
        ).execute()
    http = httplib2.Http()
    resp, _ = http.request(
        f"{gm.url}upload/gmail/v1/users/{SHARED}/messages/send?uploadType=media",
        "POST",
        body=huge,
        headers={"Content-Type": "message/rfc822"},
    )
    assert resp.status == 413
    assert len(gm.outbound(COMPTA)) == 1


async def test_a_12_mb_forward_goes_through_the_upload(gm: GmailEmulator, tmp_path: Path) -> None:
    raw = invoice(12 * MB)
    ledger, report = await triage(gm, tmp_path, raw)
    assert [r.status for r in report.results] == [Outcome.DONE], report.results
    [(user, kind, size)] = gm.uploads(SHARED)
    assert (user, kind) == (SHARED, "media") and size > 12 * MB
    [(_, rcpts, sent)] = gm.outbound(COMPTA)
    assert rcpts == [COMPTA]
    forward = email.message_from_bytes(sent, policy=email.policy.default)
    [attached] = list(forward.iter_attachments())  # type: ignore[attr-defined]
    assert attached.get_content_type() == "message/rfc822"

    def scan(msg: Any) -> bytes:  # the scanned invoice, decoded
        [part] = list(msg.iter_attachments())
        return bytes(part.get_payload(decode=True))

    original = email.message_from_bytes(raw, policy=email.policy.default)
    assert scan(attached.get_payload()[0]) == scan(original)  # whole, byte for byte
    [row] = ledger.recent(mailbox=SHARED)
    key = forward_key(SHARED, row.provider_id, "fournisseurs")
    assert forward["Message-ID"] == forward_message_id(key, SHARED)
    assert row.actions[0][2] == ""  # a plain forward, no note
    assert gm.calls("messages.send", SHARED) == 1


async def test_a_lost_answer_on_the_upload_is_found_by_message_id(
    gm: GmailEmulator, tmp_path: Path
) -> None:
    gm.lose_response("messages.send", "drop")
    _, report = await triage(gm, tmp_path, invoice(JSON_SEND_MAX_BYTES * 3))
    assert [r.status for r in report.results] == [Outcome.DONE], report.results
    assert len(gm.uploads(SHARED)) == 1 and len(gm.outbound(COMPTA)) == 1  # not sent twice
    assert gm.calls("messages.list", SHARED) >= 1  # the sent copy was looked for


async def test_a_40_mb_message_becomes_a_notice(gm: GmailEmulator, tmp_path: Path) -> None:
    ledger, report = await triage(gm, tmp_path, invoice(40 * MB, n=2))
    assert [r.status for r in report.results] == [Outcome.DONE], report.results
    [(_, _, sent)] = gm.outbound(COMPTA)
    assert len(sent) < JSON_SEND_MAX_BYTES and gm.uploads(SHARED) == []  # a small JSON send
    notice = email.message_from_bytes(sent, policy=email.policy.default)
    assert notice["Subject"] == "Fwd: [fournisseurs] Facture scannee 2"
    assert notice["Reply-To"] == "factures@fourni.example"
    assert notice["X-Mailtriage"] == f"forwarded; mailbox={SHARED}"
    text = notice.get_content()  # type: ignore[attr-defined]
    assert re.search(r"too large to forward \(40\.\d MB; Gmail sends at most 35 MB\)", text)
    assert "Fourni SA <factures@fourni.example>" in text
    assert "[fournisseurs] Facture scannee 2" in text
    assert "rfc822msgid%3Ascan-2%40fourni.example" in text
    [row] = ledger.recent(mailbox=SHARED)
    key = forward_key(SHARED, row.provider_id, "fournisseurs")
    assert notice["Message-ID"] == forward_message_id(key, SHARED)
    state, _, note = row.actions[0]
    assert state == "applied" and note.startswith("sent as a notice: 40.")
    assert "(sent as a notice: 40." in row.describe_actions()
    # routed by its headers: the 40 MB were never downloaded (metadata only)
    assert gm.calls("messages.get", SHARED) == 1
