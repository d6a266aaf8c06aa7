"""`mailtriage init`: templates, the written file (valid as check-config reads it), flags."""

from __future__ import annotations

import tomllib
from pathlib import Path

from typer.testing import CliRunner

from mailtriage.cli import app
from mailtriage.cli.init import load_departments, render_config, validate
from mailtriage.data import EXAMPLE_CONFIG

FRENCH = {"de", "la", "le", "vous", "nous", "je", "mon", "ma", "du", "des", "notre", "votre"}
ENGLISH = {"the", "your", "our", "please", "my", "i", "we", "you", "for", "is", "a"}
USUAL = {"rh", "fournisseurs", "clients", "devis", "publicite", "informatique", "juridique"}


def test_every_usual_department_has_a_description_and_varied_examples() -> None:
    departments = load_departments()
    assert {d["key"] for d in departments} == USUAL
    for d in departments:
        examples = d["examples"]
        assert len(examples) >= 8, d["key"]
        assert len(set(examples)) == len(examples), d["key"]
        french = [e for e in examples if FRENCH & set(e.lower().split())]
        english = [e for e in examples if ENGLISH & set(e.lower().split())]
        assert len(french) >= 3 and len(english) >= 3, d["key"]  # fmt: skip


def test_example_config_categories_are_the_templates() -> None:
    """One source for the demo's category texts: the templates (written apart from the
    demo corpus)."""
    config = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    templates = {d["key"]: d for d in load_departments()}
    for category in config["category"]:
        if category["key"] in templates:
            assert category["examples"] == templates[category["key"]]["examples"]
            assert category["description"] == templates[category["key"]]["description"]


def test_rendered_config_validates_and_keeps_every_template() -> None:
    departments = load_departments()
    text = render_config(
        departments,
        provider="gmail",
        mailbox="Info@Example.fr",
        lang="en",
        forward={"rh": "hr@example.fr"},
        llm_model="qwen2.5:7b-instruct",
    )
    settings = validate(text, "init")
    keys = [c.key for c in settings.categories]
    assert keys == [d["key"] for d in departments] + ["review"]
    assert settings.category("rh").name == "HR"
    assert settings.category("rh").actions.forward_to == ["hr@example.fr"]
    assert settings.category("publicite").actions.mark_read is True
    assert settings.category("informatique").examples == departments[5]["examples"]
    assert settings.effective_classifier == "cascade"  # an LLM settles the hard confusions
    assert settings.mailboxes[0].address == "info@example.fr"


def test_init_command_writes_a_file_check_config_accepts(tmp_path: Path) -> None:
    out = tmp_path / "mailtriage.toml"
    args = ["init", "-o", str(out), "--departments", "rh,clients,devis", "--provider", "graph",
            "--mailbox", "contact@example.fr", "--forward", "clients=sav@example.fr",
            "--tenant-id", "00000000-0000-0000-0000-000000000000",
            "--client-id", "11111111-1111-1111-1111-111111111111", "--no-learn"]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "3 departments and review" in result.output
    check = CliRunner().invoke(
        app, ["check-config", "-c", str(out)], env={"MAILTRIAGE_GRAPH_SECRET": "s3cret"}
    )
    assert check.exit_code == 0, check.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output  # never overwrites silently
    bad = CliRunner().invoke(app, [*args[:4], "rh,nope", *args[5:], "--force"])
    assert bad.exit_code == 2 and "nope" in bad.output
    no_tenant = [a for a in args if not a.startswith(("--tenant", "0000"))]
    missing = CliRunner().invoke(app, [*no_tenant, "--force"])
    assert missing.exit_code == 2 and "--tenant-id" in missing.output
