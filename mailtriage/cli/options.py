"""Options shared by several commands, and the one way commands load settings."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from mailtriage.core.config import DEFAULT_CONFIG_NAME, Settings, load_settings
from mailtriage.core.errors import ConfigError

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="Configuration file (env MAILTRIAGE_CONFIG).",
        envvar="MAILTRIAGE_CONFIG",
    ),
]
DEFAULT_CONFIG = Path(DEFAULT_CONFIG_NAME)


def load(path: Path) -> Settings:
    if not path.exists():
        hint = " (copy manifest/mailtriage.example.toml to start)" if path == DEFAULT_CONFIG else ""
        raise ConfigError(f"{path}: configuration file not found{hint}")
    return load_settings(path)


_PERIOD = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_period(text: str) -> timedelta:
    """'7d', '12h', '30m' → timedelta; a clear error otherwise."""
    match = _PERIOD.match(text)
    if not match:
        raise typer.BadParameter(f"{text!r}: use a number and a unit s/m/h/d/w, such as 7d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in {"1", "true", "yes"}
