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


# -- [llm]: no key for local servers, one for the cloud; concurrency by endpoint -------------


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:11434/v1",
        "http://127.0.0.1:8080/v1",
        "http://[::1]:8000/v1",
        "http://10.1.2.3:8000/v1",
        "http://192.168.1.20:1234/v1",
        "http://ollama:11434/v1",  # a compose service name
        "http://gpu-box.lan:8000/v1",
        "http://llm.internal/v1",
    ],
)
def test_a_local_or_private_server_needs_no_key(url: str) -> None:
    s = parse_settings({"category": CATS, "llm": {"base_url": url, "model": "m"}})
    assert s.llm.is_local and s.llm.api_key() == "not-needed"
    assert s.llm.max_concurrency == 4 and s.llm.concurrency_is_default


@pytest.mark.parametrize(
    "url", ["https://api.openai.com/v1", "https://acme.openai.azure.com/openai/v1/"]
)
def test_a_cloud_endpoint_without_a_key_is_one_line_naming_the_field(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings({"category": CATS, "llm": {"base_url": url, "model": "gpt-4o-mini"}})
    message = str(info.value)
    assert message.startswith("mailtriage.toml: llm.api_key_env: ")
    assert "needs an API key" in message and "\n" not in message
    ok = parse_settings(
        {"category": CATS, "llm": {"base_url": url, "model": "m", "api_key_env": "K"}}
    )
    assert not ok.llm.is_local and ok.llm.max_concurrency == 16
    # No model, no LLM: nothing to check.
    parse_settings({"category": CATS, "llm": {"base_url": url}})


def test_an_unset_key_variable_fails_for_the_cloud_and_is_skipped_locally(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    cloud = parse_settings(
        {"category": CATS, "llm": {"base_url": "https://api.openai.com/v1", "model": "m",
                                   "api_key_env": "NOPE_KEY"}}
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"llm\.api_key_env: environment variable NOPE_KEY"):
        cloud.llm.api_key()
    local = parse_settings({"category": CATS, "llm": {"model": "m", "api_key_env": "NOPE_KEY"}})
    assert local.llm.api_key() == "not-needed"
    monkeypatch.setenv("NOPE_KEY", "sk-local")
    assert local.llm.api_key() == "sk-local"


def test_example_config_works_against_a_local_server_with_no_env_var(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MAILTRIAGE_LLM_KEY", raising=False)
    s = example_settings(llm={"model": "qwen2.5:7b-instruct"})
    assert s.llm.api_key_env is None and s.llm.api_key() == "not-needed"
    assert s.llm.response_format == "auto" and s.llm.prompt == "full"


def test_explicit_concurrency_and_ladder_options() -> None:
    s = parse_settings(
        {"category": CATS, "llm": {"model": "m", "max_concurrency": 2, "response_format":
                                   "json_object", "prompt": "compact"}}
    )  # fmt: skip
    assert s.llm.max_concurrency == 2 and not s.llm.concurrency_is_default
    with pytest.raises(ConfigError, match=r"llm\.response_format: Input should be"):
        parse_settings({"category": CATS, "llm": {"response_format": "xml"}})


def test_preflight_wants_a_cloud_key_and_not_a_local_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run`, `sync` and `check-config` stop on a cloud endpoint's unset key variable; an
    example configuration kept from before (a key variable named for a local Ollama) runs."""
    from mailtriage.core import preflight

    monkeypatch.delenv("MAILTRIAGE_LLM_KEY", raising=False)
    llm = {"model": "m", "api_key_env": "MAILTRIAGE_LLM_KEY"}
    local = example_settings(llm=llm, classifier="llm", mailbox=[])
    assert preflight.secret_problems(local) == []
    cloud = example_settings(
        llm={**llm, "base_url": "https://api.openai.com/v1"}, classifier="llm", mailbox=[]
    )
    assert preflight.secret_problems(cloud) == [
        "llm.api_key_env: environment variable MAILTRIAGE_LLM_KEY is not set"
    ]
