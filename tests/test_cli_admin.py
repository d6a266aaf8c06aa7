"""The admin's view of the CLI: broken configurations, JSON outputs, markup, uninstall."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from mailtriage import __version__
from mailtriage.cli import app
from mailtriage.sandbox.gmail import GmailEmulator
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.process import write_toml
from mailtriage.sandbox.server import loopback_socket
from tests.gmail_fixtures import SHARED

ROOT = Path(__file__).resolve().parents[1]
BROKEN = sorted((ROOT / "tests" / "configs" / "broken").glob("*.toml"))
narrow = CliRunner(env={"COLUMNS": "80"})
REVIEW = {"key": "review", "name": "Review", "description": "anything"}


@pytest.mark.parametrize("config", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_configuration_is_one_line_and_exit_2(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = config.read_text(encoding="utf-8").splitlines()[0].removeprefix("# expect: ")
    monkeypatch.chdir(ROOT)  # the broken files name their key files relative to the checkout
    result = narrow.invoke(app, ["check-config", "-c", str(config.relative_to(ROOT))])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("configuration error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in result.output
    as_json = narrow.invoke(app, ["check-config", "-c", str(config.relative_to(ROOT)), "--json"])
    assert as_json.exit_code == 2
    report = json.loads(as_json.stdout)
    assert report["valid"] is False and expected in report["errors"][0]


def test_version() -> None:
    result = narrow.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"mailtriage {__version__}"


def _config(tmp_path: Path, **top: Any) -> Path:
    data: dict[str, Any] = {
        "state": {"url": f"sqlite:///{tmp_path / 'state.sqlite'}"},
        "category": [
            {
                "key": "urgent",
                "name": "[Urgent] Clients",
                "description": "customers",
                "actions": {"label": "[graph] Clients", "move_to": "Triage/[VIP]"},
            },
            REVIEW,
        ],
    }
    data.update(top)
    path = tmp_path / "mailtriage.toml"
    write_toml(path, data)
    return path


def test_config_names_with_brackets_print_intact(tmp_path: Path) -> None:
    wide = CliRunner(env={"COLUMNS": "200"})
    result = wide.invoke(app, ["check-config", "-c", str(_config(tmp_path))])
    assert result.exit_code == 0, result.output
    for text in ("[Urgent] Clients", "[graph] Clients", "Triage/[VIP]"):
        assert text in result.output
    assert "no [[mailbox]]" in result.output


def test_json_outputs_parse(tmp_path: Path, shared_data: Path) -> None:
    config = str(_config(tmp_path))
    summary = json.loads(narrow.invoke(app, ["check-config", "-c", config, "--json"]).stdout)
    assert summary["valid"] and summary["categories"][0]["name"] == "[Urgent] Clients"
    fixtures = sorted((shared_data / "mime-fixtures").rglob("*.eml"))[:2]
    classify = narrow.invoke(app, ["classify", "-c", config, "--json", *map(str, fixtures)])
    assert classify.exit_code == 0, classify.output
    lines = classify.stdout.splitlines()
    assert len(lines) == len(fixtures)  # JSON Lines: one compact object per file
    assert [json.loads(line)["file"] for line in lines] == [str(p) for p in fixtures]
    stats = json.loads(narrow.invoke(app, ["stats", "-c", config, "--json"]).stdout)
    assert stats["routed"] == 0 and [c["key"] for c in stats["categories"]] == ["urgent", "review"]
    history = narrow.invoke(app, ["history", "-c", config, "--json"])
    assert history.exit_code == 0 and history.stdout == ""  # no decision yet: no line
    doctor = narrow.invoke(app, ["doctor", "-c", config, "--json"])
    report = json.loads(doctor.stdout)
    assert doctor.exit_code == 0 and report["ok"]
    assert {c["subject"] for c in report["checks"]} == {"state database", "model"}


def test_doctor_at_80_columns_keeps_field_names_and_brackets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MT_A_RATHER_LONG_GRAPH_SECRET_VARIABLE", raising=False)
    graph = {
        "tenant_id": "00000000-0000-0000-0000-000000000000",
        "client_id": "11111111-1111-1111-1111-111111111111",
        "client_secret_env": "MT_A_RATHER_LONG_GRAPH_SECRET_VARIABLE",
    }
    mailbox = [{"provider": "graph", "address": "contact@atelier-dupont.fr"}]
    config = _config(tmp_path, graph=graph, mailbox=mailbox)
    result = narrow.invoke(app, ["doctor", "-c", str(config)])
    assert result.exit_code == 1
    flat = re.sub(r"\s+", " ", result.output)
    assert "graph.client_secret_env" in result.output  # on one line, not cut
    assert "MT_A_RATHER_LONG_GRAPH_SECRET_VARIABLE" in result.output
    assert "fix 1: credentials, configuration: fix [graph] in the config" in flat
    assert "…" not in result.output


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in group.commands.items():
        out.append((*prefix, name))
        if hasattr(command, "commands"):
            out += _commands(command, (*prefix, name))
    return out


def test_help_texts_keep_their_brackets() -> None:
    """Every `[word]` written in a help text (escaped as `\\[word]`) is printed as written."""
    root = typer.main.get_command(app)
    wide = CliRunner(env={"COLUMNS": "200"})
    for path in _commands(root):
        command: Any = root
        for name in path:
            command = command.commands[name]
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        wanted = re.findall(r"\[[a-z_.\[\]]+\]", " ".join(texts).replace("\\[", "["))
        output = wide.invoke(app, [*path, "--help"]).output
        for text in wanted:
            assert text in output, (path, text)


def test_uninstall_goes_through_every_provider(tmp_path: Path) -> None:
    """Graph is unreachable; the Gmail watch is still stopped, and the failure is reported."""
    dead = loopback_socket()  # a port that refuses connections once closed
    port = dead.getsockname()[1]
    dead.close()
    with GmailEmulator(users=[SHARED]) as gm:
        gm.state.watch(SHARED, {"topicName": "projects/p/topics/t"})
        config = _config(
            tmp_path,
            graph={"base_url": f"http://127.0.0.1:{port}/v1.0", "anonymous": True},
            gmail={"anonymous": True, "api_endpoint": gm.url},
            mailbox=[
                {"provider": "graph", "address": "contact@atelier-dupont.fr"},
                {"provider": "gmail", "address": SHARED},
            ],
        )
        gm.state.require_auth = False
        result = narrow.invoke(app, ["uninstall", "-c", str(config), "--json"])
        assert gm.state.users[SHARED].watch is None  # stopped despite Graph's failure
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    by = {(r["provider"], r["target"]): r for r in report["removals"]}
    assert by[("gmail", SHARED)]["ok"]
    failed = [r for r in report["removals"] if not r["ok"]]
    assert failed and all(r["provider"] == "graph" for r in failed)


def test_uninstall_reports_each_failure_in_text(tmp_path: Path) -> None:
    with GraphEmulator() as emu, GmailEmulator(users=[SHARED]) as gm:
        emu.add_mailbox("contact@atelier-dupont.fr")
        gm.state.require_auth = False
        gm.state.watch(SHARED, {"topicName": "projects/p/topics/t"})
        gm.inject("403-user", count=20, user=SHARED, api="stop")  # refused, not retried away
        config = _config(
            tmp_path,
            graph={"base_url": emu.base_url, "anonymous": True},
            gmail={"anonymous": True, "api_endpoint": gm.url, "max_retries": 0},
            mailbox=[
                {"provider": "graph", "address": "contact@atelier-dupont.fr"},
                {"provider": "gmail", "address": SHARED},
            ],
        )
        result = narrow.invoke(app, ["uninstall", "-c", str(config)])
    assert result.exit_code == 1
    assert "graph: contact@atelier-dupont.fr: no subscription left" in result.output
    assert f"gmail: {SHARED}:" in result.output and "Rate Limit" in result.output


def test_example_configuration_matches_the_setup_script() -> None:
    """The example's push_service_account is the account setup-pubsub.sh creates."""
    example = tomllib.loads((ROOT / "manifest" / "mailtriage.example.toml").read_text())
    script = (ROOT / "manifest" / "google" / "setup-pubsub.sh").read_text()
    push_name = re.search(r'PUSH_SA_NAME="\$\{PUSH_SA_NAME:-([^}]+)\}"', script)
    assert push_name is not None
    project = example["gmail"]["pubsub_topic"].split("/")[1]
    expected = f"{push_name.group(1)}@{project}.iam.gserviceaccount.com"
    assert example["gmail"]["push_service_account"] == expected
