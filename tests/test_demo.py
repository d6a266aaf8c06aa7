"""`mailtriage demo` end to end: emulators, real SDKs, embedded model, two passes."""

from __future__ import annotations

from typer.testing import CliRunner

from mailtriage.cli import app


def test_demo_prints_table_summary_and_second_pass_processes_nothing(tmp_path) -> None:
    result = CliRunner().invoke(app, ["demo", "--state-dir", str(tmp_path)])
    out = result.output
    assert result.exit_code == 0, out
    assert "mailtriage demo: what was done natively" in out
    assert "per category" in out
    assert "second pass: 0 messages processed" in out
    # native vocabulary of each provider, and the departments' forwards
    assert "forwarded to rh@atelier-dupont.fr +" in out and "category RH + moved to" in out
    assert "label Triage/RH, out of Inbox" in out or "label RH" in out
    assert "auto-reply" in out  # the out-of-office is skipped, not routed
    assert (tmp_path / "demo.sqlite").exists()
