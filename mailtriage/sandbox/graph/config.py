"""Settings pointing mailtriage at a running `GraphEmulator` (tests and benchmarks)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from mailtriage.core.config import Settings, parse_settings
from mailtriage.data import EXAMPLE_CONFIG

EXAMPLE = EXAMPLE_CONFIG


def sandbox_settings(
    base_url: str,
    mailboxes: list[str],
    *,
    example: Path = EXAMPLE,
    graph: dict[str, Any] | None = None,
    mailbox: dict[str, Any] | None = None,
    **top: Any,
) -> Settings:
    """The example configuration with `graph` on the emulator and `mailboxes` as Graph boxes."""
    data = tomllib.loads(example.read_text(encoding="utf-8"))
    data["graph"] = {"base_url": base_url, "anonymous": True, **(graph or {})}
    data["mailbox"] = [
        {"provider": "graph", "address": a, "backfill_days": 0, **(mailbox or {})}
        for a in mailboxes
    ]
    data.setdefault("runtime", {}).pop("client_state_env", None)
    data.update(top)
    return parse_settings(data, "sandbox")
