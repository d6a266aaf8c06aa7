"""Shared fixtures: where the public data lives, and the example configuration."""

from __future__ import annotations

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
