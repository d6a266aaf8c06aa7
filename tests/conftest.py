"""Shared fixtures: where the public data lives, and the example configuration."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
EXAMPLE_CONFIG = ROOT / "manifest" / "mailtriage.example.toml"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public data folder not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def example_config_path() -> Path:
    return EXAMPLE_CONFIG


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    """JSON logs at WARNING during tests, as the service would write them."""
    from mailtriage.core import logs

    logs.configure(level="WARNING")


@pytest.fixture(autouse=True)
def _fresh_llm_ladder(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test probes its endpoint from the top of the ladder, with no backoff wait
    (a server's own retry-after is still honoured)."""
    from mailtriage.core import llm
    from mailtriage.core.ladder import ENDPOINTS

    monkeypatch.setattr(llm, "RETRY_BASE_S", 0.001)
    monkeypatch.setattr(llm, "RETRY_MAX_S", 0.01)
    ENDPOINTS.clear()
    yield
    ENDPOINTS.clear()


@pytest.fixture(scope="module")
def llm_server() -> Iterator[object]:
    """One sandbox OpenAI-compatible server per test module."""
    from mailtriage.sandbox.llm import SandboxLLM

    with SandboxLLM() as server:
        yield server


@pytest.fixture
def llm(llm_server):  # type: ignore[no-untyped-def]
    """The module's sandbox server with no faults, no records and the keyword policy."""
    from mailtriage.sandbox.llm import keyword_policy

    llm_server.reset()
    yield llm_server
    llm_server.policy = keyword_policy
    llm_server.reset()


def _unavailable(reason: str) -> None:
    """Skip with the reason, except where the real server is required (CI): fail."""
    if os.environ.get("CI") or os.environ.get("MAILTRIAGE_REQUIRE_LLAMA"):
        pytest.fail(f"real llama.cpp server required here (CI) but unavailable: {reason}")
    log = ROOT / ".venv" / "llama-install.log"
    where = f"; make's install attempt is logged in {log}" if log.is_file() else ""
    pytest.skip(f"real llama.cpp server unavailable: {reason}{where}")


@pytest.fixture(scope="session")
def llama_server() -> Iterator[object]:
    """One real `python -m llama_cpp.server` (Gemma 3 270M) on loopback for the session."""
    from mailtriage.sandbox.llama_server import LlamaServer, LlamaUnavailable, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        _unavailable(reason)
    server = LlamaServer()
    try:
        server.start()
    except LlamaUnavailable as exc:
        _unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()
