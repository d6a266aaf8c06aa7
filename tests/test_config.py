from __future__ import annotations

import pytest

from mailtriage.core.config import load_settings, parse_settings, read_secret
from mailtriage.core.errors import ConfigError
from tests.helpers import EXAMPLE, example_settings

CATS = [
    {"key": "rh", "name": "RH", "description": "jobs"},
    {"key": "review", "name": "Review", "description": "other"},
]


def test_example_config_is_valid_and_complete() -> None:
    s = load_settings(EXAMPLE)
    keys = [c.key for c in s.categories]
    assert keys == ["rh", "fournisseurs", "clients", "devis", "publicite", "review"]
    assert s.llm.base_url == "http://localhost:11434/v1"
    assert s.llm.temperature == 0
    assert s.effective_classifier == "embedded"  # no model configured
    assert s.category("rh").actions.forward_to == ["rh@atelier-dupont.fr"]
    assert s.categories_for("info@atelier-dupont.com")[0].key == "clients"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"category": [{**CATS[0], "actions": {"forward_to": ["nope"]}}, CATS[1]]},
            "category[0].actions.forward_to: 'nope' is not an e-mail address",
        ),
        (
            {"category": CATS, "llm": {"api_key": "sk-123"}},
            "llm.api_key: unknown field (secrets are not written in the file",
        ),
        ({"category": [CATS[0]]}, "review_category 'review' is not a configured category key"),
        (
            {"category": CATS, "mailbox": [{"provider": "exchange", "address": "a@b.fr"}]},
            "mailbox[0].provider: Input should be 'graph' or 'gmail'",
        ),
        ({"category": [*CATS, CATS[0]]}, "repeated: rh"),
        ({"category": [{**CATS[0], "key": "Bad Key"}, CATS[1]]}, "category[0].key: use lower-case"),
        ({"category": CATS, "llm": {"timeout_s": -1}}, "llm.timeout_s: Input should be greater"),
        (
            {"category": [{**CATS[0], "actions": {"move_to": "Triage//RH"}}, CATS[1]]},
            "empty folder name",
        ),
    ],
)
def test_errors_name_file_and_field(data: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, "company.toml")
    assert "company.toml: " in str(info.value)
    assert expected in str(info.value)


def test_unreadable_and_invalid_toml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[llm\nmodel = 1")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_settings(bad)


def test_secrets_from_env_or_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MT_KEY", "sk-env")
    assert read_secret("MT_KEY", None, what="x").get_secret_value() == "sk-env"
    f = tmp_path / "key"
    f.write_text("sk-file\n")
    assert read_secret(None, f, what="x").get_secret_value() == "sk-file"
    with pytest.raises(ConfigError, match=r"llm\.api_key_env: environment variable NOPE"):
        read_secret("NOPE", None, what="llm.api_key_env")
    secret = read_secret("MT_KEY", None, what="x")
    assert "sk-env" not in repr(secret) and "sk-env" not in str(secret)


def test_dry_run_global_and_per_mailbox() -> None:
    s = example_settings(dry_run=True)
    assert s.is_dry_run("contact@atelier-dupont.fr")
    s = example_settings(
        mailbox=[
            {"provider": "graph", "address": "a@x.fr", "dry_run": True},
            {"provider": "gmail", "address": "b@x.fr"},
        ]
    )
    assert s.is_dry_run("a@x.fr") and not s.is_dry_run("b@x.fr")
    assert example_settings(llm={"model": "qwen2.5"}).effective_classifier == "llm"
