"""Messages over `runtime.max_message_mb`: never downloaded whole, routed by headers and
subject, recorded as such; the same rule in `mailtriage classify`."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailtriage.cli import app
from mailtriage.connectors.gmail import GmailMailbox
from mailtriage.core.extract import parse_head
from mailtriage.core.ledger import Ledger
from mailtriage.core.memory import MemoryMailbox
from mailtriage.core.message import TOO_LARGE
from mailtriage.core.pipeline import Pipeline
from mailtriage.core.ports import MemoryStateStore
from mailtriage.sandbox.gmail import GmailEmulator
from tests.gmail_fixtures import SHARED, gm, gmail_settings, rfc822
from tests.helpers import ScriptedClassifier, by_subject, example_settings, make_message
from tests.test_cli import config_file

__all__ = ["gm"]
MB = 1024 * 1024


@pytest.fixture(autouse=True)
def key_env(gm: GmailEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MT_TEST_GMAIL_KEY", gm.service_account_json())
    yield


def with_attachment(size: int, subject: str = "Candidature - CV et portfolio") -> bytes:
    data = base64.encodebytes(os.urandom(size))
    return (
        b"From: Jean Martin <jean@example.org>\r\nTo: " + SHARED.encode() + b"\r\n"
        b"Subject: " + subject.encode() + b"\r\nMessage-ID: <big-1@example.org>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BB\r\n\r\n"
        b"--BB\r\nContent-Type: text/plain\r\n\r\nBonjour, voici mon CV.\r\n--BB\r\n"
        b"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + data
        + b"--BB--\r\n"
    )


def test_parse_head_reads_headers_only() -> None:
    raw = with_attachment(3 * MB)
    message = parse_head(raw, mailbox=SHARED, provider_id="p", size=len(raw))
    assert message.too_large and message.subject == "Candidature - CV et portfolio"
    assert message.sender is not None and message.sender.email == "jean@example.org"
    assert message.text == "" and message.attachments == [] and message.size == len(raw)
    assert message.internet_message_id == "<big-1@example.org>"


async def test_gmail_reads_sizes_first_and_never_downloads_a_too_large_message(
    gm: GmailEmulator,
) -> None:
    settings = gmail_settings(gm, runtime={"max_message_mb": 1})
    box = GmailMailbox.from_settings(settings, settings.mailbox(SHARED), MemoryStateStore())
    try:
        cursor = (await box.changes(None)).cursor
        gm.deliver(SHARED, with_attachment(2 * MB))
        gm.deliver(SHARED, rfc822(subject="Demande de devis"))
        page = await box.changes(cursor)
        big, small = page.messages
        assert big.too_large and big.subject == "Candidature - CV et portfolio"
        assert big.text == "" and big.size > 2 * MB
        assert not small.too_large and small.text.startswith("Bonjour")
        # one metadata batch for both, one raw get for the small one only
        assert gm.calls("messages.get", SHARED) == 3
        assert box._raw.keys() == {small.provider_id}
        # a retry reads it the same way
        again = await box.fetch(big.provider_id)
        assert again.too_large and again.subject == big.subject
    finally:
        await box.aclose()


async def test_pipeline_records_it_as_routed_by_headers_and_subject(tmp_path: Path) -> None:
    box = MemoryMailbox("contact@atelier-dupont.fr")
    box.deliver(make_message("[rh] Candidature", mailbox=box.address, too_large=True, size=80 * MB))
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")
    pipeline = Pipeline(example_settings(), ledger, ScriptedClassifier(by_subject))
    report = await pipeline.sync_mailbox(box)
    assert [r.status for r in report.results] == ["done"]
    [row] = ledger.recent(mailbox=box.address)
    assert row.category == "rh" and row.reason.startswith(TOO_LARGE)


def test_classify_reads_only_the_head_of_a_file_over_the_limit(tmp_path: Path) -> None:
    cfg = config_file(tmp_path)
    big = tmp_path / "big.eml"
    with big.open("wb") as out:  # 30 MB: one base64 line after the headers
        out.write(b"From: x@example.org\r\nSubject: Newsletter promotions\r\n")
        out.write(b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n")
        out.write(b"QUJD" * (30 * MB // 4))
    result = CliRunner().invoke(app, ["classify", "-c", str(cfg), "--json", str(big)])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["status"] == "classified" and row["note"] == TOO_LARGE
    assert row["subject"] == "Newsletter promotions"
