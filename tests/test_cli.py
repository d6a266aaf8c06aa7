"""The command line: exit codes, one-line errors, previews, records and doctor."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailtriage.cli import app
from mailtriage.data import EXAMPLE_CONFIG
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.process import write_toml

runner = CliRunner(env={"COLUMNS": "220"})


def config_file(tmp_path: Path, **top: object) -> Path:
    data = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["state"] = {"url": f"sqlite:///{tmp_path / 'state.sqlite'}"}
    data.update(top)
    path = tmp_path / "mailtriage.toml"
    write_toml(path, data)
    return path


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = config_file(tmp_path, min_confidence=3)
    result = runner.invoke(app, ["check-config", "-c", str(bad)])
    assert result.exit_code == 2
    assert "min_confidence: Input should be less than or equal to 1" in result.output
    assert "Traceback" not in result.output
    missing = runner.invoke(app, ["history", "-c", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2 and "configuration file not found" in missing.output
    usage = runner.invoke(app, ["stats", "-c", str(bad), "--since", "soon"])
    assert usage.exit_code == 2


def with_secrets(tmp_path: Path, **top: object) -> tuple[Path, dict[str, str]]:
    """The example configuration with every secret it names present."""
    from mailtriage.sandbox.gmail import ServiceAccountKey

    key = tmp_path / "service-account.json"
    key.write_text(ServiceAccountKey().json("https://oauth2.googleapis.com/token"))
    cfg = config_file(tmp_path, **top)
    text = cfg.read_text(encoding="utf-8").replace("/etc/mailtriage/service-account.json", str(key))
    cfg.write_text(text, encoding="utf-8")
    env = {"MAILTRIAGE_GRAPH_SECRET": "s3cret", "MAILTRIAGE_CLIENT_STATE": "state"}
    return cfg, env


def test_check_config_summarises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailtriage.sandbox.gmail import ServiceAccountKey

    example = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    key = tmp_path / "service-account.json"
    key.write_text(ServiceAccountKey().json("https://oauth2.googleapis.com/token"))
    cfg = config_file(tmp_path, gmail={**example["gmail"], "service_account_file": str(key)})
    unset = runner.invoke(app, ["check-config", "-c", str(cfg)])
    assert unset.exit_code == 2  # as `run` would: the Graph secret's variable is not set
    assert "graph.client_secret_env: environment variable MAILTRIAGE_GRAPH_SECRET" in unset.output
    monkeypatch.setenv("MAILTRIAGE_GRAPH_SECRET", "not-a-real-secret")
    monkeypatch.setenv("MAILTRIAGE_CLIENT_STATE", "not-a-real-state")
    result = runner.invoke(app, ["check-config", "-c", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "rh@atelier-dupont.fr" in result.output and "classifier: embedded" in result.output
    assert "not-a-real-secret" not in result.output


def test_check_config_reports_missing_secrets_without_connecting(tmp_path: Path) -> None:
    cfg, _ = with_secrets(tmp_path)
    missing = runner.invoke(
        app,
        ["check-config", "-c", str(cfg)],
        env={"MAILTRIAGE_GRAPH_SECRET": None, "MAILTRIAGE_CLIENT_STATE": None},
    )
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    lines = missing.output.strip().splitlines()
    assert lines[0].endswith(
        "graph.client_secret_env: environment variable MAILTRIAGE_GRAPH_SECRET is not set"
    )
    assert lines[1] == (
        "runtime.client_state_env: environment variable MAILTRIAGE_CLIENT_STATE is not set"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url", "state.url: 'not a url' is not a database URL"),
        ("foo://db.internal/x", "state.url: unsupported database 'foo'"),
        ("mysql://u@h/d", "state.url: unsupported database 'mysql'"),
        ("sqlite:////nonexistent/dir/state.sqlite", "directory /nonexistent/dir does not exist"),
        # Well-formed: check-config does not connect, so an unreachable server passes.
        ("postgresql+psycopg://u:pw@127.0.0.1:1/db", None),
    ],
)
def test_check_config_judges_the_state_url_without_connecting(
    tmp_path: Path, url: str, expected: str | None
) -> None:
    cfg, env = with_secrets(tmp_path, state={"url": url})
    result = runner.invoke(app, ["check-config", "-c", str(cfg)], env=env)
    if expected is None:
        assert result.exit_code == 0, result.output
        assert ":pw@" not in result.output  # the password is never printed
    else:
        assert result.exit_code == 2 and expected in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_classify_previews_shared_data_and_changes_nothing(
    tmp_path: Path, shared_data: Path
) -> None:
    spam = sorted((shared_data / "spamassassin").rglob("*"))
    files = [p for p in spam if p.is_file() and p.suffix not in (".csv", ".md", "")][:0]
    files += [p for p in spam if p.is_file() and p.parent.name in ("hard-ham-1", "spam-1")][:3]
    fixtures = sorted((shared_data / "mime-fixtures").rglob("*.eml"))[:2]
    cfg = config_file(tmp_path)
    result = runner.invoke(app, ["classify", "-c", str(cfg), *map(str, files + fixtures)])
    assert result.exit_code == 0, result.output
    assert "mailtriage classify (preview, nothing changed)" in result.output
    as_json = runner.invoke(app, ["classify", "-c", str(cfg), "--json", str(files[0])])
    row = json.loads(as_json.output)
    assert row["status"] in ("classified", "skipped")
    if row["status"] == "classified":
        assert row["category"] in {"rh", "fournisseurs", "clients", "devis", "publicite", "review"}
    assert not (tmp_path / "state.sqlite").exists()  # a preview never opens the ledger


def test_classify_melusine_french_mail(tmp_path: Path, shared_data: Path) -> None:
    import csv

    rows = list(
        csv.DictReader(
            (shared_data / "melusine-fr" / "emails.v2019.csv").open(encoding="utf-8"), delimiter=";"
        )
    )
    emls = []
    for i, row in enumerate(rows[:3]):
        eml = tmp_path / f"melusine-{i}.eml"
        eml.write_text(
            f"From: client{i}@example.fr\nSubject: {row.get('header', '') or 'Demande'}\n"
            f"Content-Type: text/plain; charset=utf-8\n\n{row.get('body', '')}\n",
            encoding="utf-8",
        )
        emls.append(str(eml))
    result = runner.invoke(app, ["classify", "-c", str(config_file(tmp_path)), *emls])
    assert result.exit_code == 0, result.output
    assert "melusine-0.eml" in result.output


def test_history_and_stats_on_an_empty_ledger(tmp_path: Path) -> None:
    cfg = str(config_file(tmp_path))
    assert runner.invoke(app, ["history", "-c", cfg]).exit_code == 0
    stats = runner.invoke(app, ["stats", "-c", cfg, "--since", "24h"])
    assert stats.exit_code == 0 and "no routed messages in this period" in stats.output


@pytest.mark.parametrize("denied", [False, True])
def test_doctor_against_the_graph_emulator(tmp_path: Path, denied: bool) -> None:
    with GraphEmulator() as emu:
        emu.add_mailbox("contact@atelier-dupont.fr", access_denied=denied)
        cfg = config_file(
            tmp_path,
            graph={"base_url": emu.base_url, "anonymous": True},
            runtime={"sync_interval_s": 60},  # no public URL: schedule only, no push
            mailbox=[{"provider": "graph", "address": "contact@atelier-dupont.fr"}],
        )
        result = runner.invoke(app, ["doctor", "-c", str(cfg)])
    assert "state database" in result.output and "sqlite:///" in result.output
    assert "Microsoft 365 (Graph)" in result.output
    assert result.exit_code == (1 if denied else 0), result.output


def test_doctor_reports_an_unreachable_database_and_goes_on(tmp_path: Path) -> None:
    with GraphEmulator() as emu:
        emu.add_mailbox("contact@atelier-dupont.fr")
        cfg = config_file(
            tmp_path,
            state={"url": "postgresql+psycopg://mt:secret@127.0.0.1:1/mt"},
            graph={"base_url": emu.base_url, "anonymous": True},
            runtime={"sync_interval_s": 60},
            mailbox=[{"provider": "graph", "address": "contact@atelier-dupont.fr"}],
        )
        result = runner.invoke(app, ["doctor", "-c", str(cfg)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "postgresql+psycopg://mt:***@127.0.0.1:1/mt: cannot connect" in result.output
    assert ":secret@" not in result.output
    assert "Microsoft 365 (Graph)" in result.output  # the other checks still ran


def test_sync_backfills_with_progress_and_summary(tmp_path: Path) -> None:
    with GraphEmulator() as emu:
        emu.add_mailbox("contact@atelier-dupont.fr")
        emu.add_mailbox("rh@atelier-dupont.fr")
        emu.deliver(
            "contact@atelier-dupont.fr",
            subject="Candidature spontanée – technicien de maintenance",
            body="Bonjour, veuillez trouver ci-joint mon CV et ma lettre de motivation.",
            sender="jean@example.org",
        )
        cfg = str(
            config_file(
                tmp_path,
                graph={"base_url": emu.base_url, "anonymous": True},
                runtime={"sync_interval_s": 60},
                mailbox=[{"provider": "graph", "address": "contact@atelier-dupont.fr"}],
            )
        )
        dry = runner.invoke(app, ["sync", "-c", cfg, "--since", "2d", "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert "sync summary" in dry.output and "seen 1" in dry.output
        assert emu.folder_messages("contact@atelier-dupont.fr", "Inbox")  # untouched
        real = runner.invoke(app, ["sync", "-c", cfg, "--since", "2d"])
        assert real.exit_code == 0, real.output
        # the dry-run row is final: a backfill never processes a message twice
        assert "seen 1" in real.output
        history = runner.invoke(app, ["history", "-c", cfg])
        assert "dry_run" in history.output
        bad = runner.invoke(app, ["sync", "-c", cfg, "--mailbox", "who@else.fr"])
        assert bad.exit_code == 2 and "not a configured [[mailbox]]" in bad.output
