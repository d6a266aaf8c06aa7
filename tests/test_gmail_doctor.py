"""`mailtriage gmail doctor` / `uninstall` against the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailtriage.cli import app
from mailtriage.cli.gmail import gmail_doctor
from mailtriage.sandbox.gmail import GmailEmulator
from tests.gmail_fixtures import OTHER, SHARED, gm, gmail_settings

__all__ = ["gm"]
GROUP = "equipe@atelier-dupont.com"  # a Google Group: not a user the token endpoint knows


@pytest.fixture(autouse=True)
def key_env(gm: GmailEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MT_TEST_GMAIL_KEY", gm.service_account_json())
    yield


async def test_doctor_reports_delegation_groups_and_access(gm: GmailEmulator) -> None:
    gm.deny_delegation(OTHER)
    settings = gmail_settings(
        gm,
        mailbox=[
            {"provider": "gmail", "address": SHARED},
            {"provider": "gmail", "address": OTHER},
            {"provider": "gmail", "address": GROUP},
        ],
    )
    checks = {(c.subject, c.name): c for c in await gmail_doctor(settings)}
    assert checks[("service account", "key")].ok
    assert checks[(SHARED, "delegation")].ok and checks[(SHARED, "mailbox access")].ok
    denied = checks[(OTHER, "delegation")]
    assert not denied.ok and "Domain Wide Delegation" in denied.fix
    assert json.loads(gm.service_account_json())["client_id"] in denied.fix
    group = checks[(GROUP, "delegation")]
    assert not group.ok and "Google Groups" in group.detail
    assert (OTHER, "mailbox access") not in checks  # no point once the token is refused
    assert checks[("push", "topic")].ok and checks[("push", "webhook auth")].ok


async def test_doctor_without_a_key_says_so(
    gm: GmailEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MT_TEST_GMAIL_KEY")
    [check] = await gmail_doctor(gmail_settings(gm))
    assert not check.ok and "MT_TEST_GMAIL_KEY" in check.detail


def test_cli_doctor_and_uninstall(gm: GmailEmulator, tmp_path: Path) -> None:
    gm.deny_delegation(OTHER)
    config = tmp_path / "mailtriage.toml"
    config.write_text(
        f"""
[state]
url = "sqlite:///{tmp_path / "state.sqlite"}"
[gmail]
service_account_env = "MT_TEST_GMAIL_KEY"
api_endpoint = "{gm.url}"
token_uri = "{gm.token_uri}"
pubsub_topic = "projects/p/topics/t"
push_audience = "https://mt.example/hooks/gmail"
push_service_account = "push@p.iam.gserviceaccount.com"
[[mailbox]]
provider = "gmail"
address = "{SHARED}"
[[mailbox]]
provider = "gmail"
address = "{OTHER}"
[[category]]
key = "review"
name = "Review"
description = "anything"
""",
        encoding="utf-8",
    )
    runner = CliRunner()
    result = runner.invoke(app, ["gmail", "doctor", "-c", str(config)])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "Google Groups" in result.output

    gm.state.watch(SHARED, {"topicName": "projects/p/topics/t"})
    result = runner.invoke(app, ["gmail", "uninstall", "-c", str(config), "--mailbox", SHARED])
    assert result.exit_code == 0, result.output
    assert gm.state.users[SHARED].watch is None
