"""`mailtriage demo`: the main job on the embedded sandbox; no account, network or model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from mailtriage.cli import console, user_errors
from mailtriage.cli.options import load
from mailtriage.core import logs


def demo(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Use this file's \\[llm] when it is reachable."),
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Keep the demo's state database here.")
    ] = None,
) -> None:
    """Triage demo mail in emulated Microsoft 365 and Gmail mailboxes, then show the result."""
    from mailtriage.sandbox import demo as sandbox_demo

    logs.configure(level="ERROR")
    if not console.is_terminal:  # CI logs and pipes: room for the results table
        console.width = max(console.width, 150)
    base = load(config) if config is not None else None
    outcome = asyncio.run(sandbox_demo.run(console, base=base, state_dir=state_dir))
    raise typer.Exit(sandbox_demo.demo_status(outcome))


def register(app: typer.Typer) -> None:
    app.command("demo")(user_errors(demo))
