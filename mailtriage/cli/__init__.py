"""The `mailtriage` command line (typer + rich).

Exit codes: 0 success, 1 a run-time failure (provider, database), 2 usage or configuration
error. User errors print one line, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mailtriage.core.errors import ConfigError, MailtriageError

app = typer.Typer(
    name="mailtriage",
    help="Triage a shared mailbox with a language model, natively in Microsoft 365 or Gmail.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn mailtriage errors into a one-line message and exit code 2 (config) or 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            err_console.print(
                f"[red]configuration error:[/red] {escape(str(exc))}", highlight=False
            )
            raise typer.Exit(2) from None
        except MailtriageError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


# Command modules, each with `register(app)`. Optional ones may be absent in a partial build.
_COMMAND_MODULES = [
    "mailtriage.cli.preview",
    "mailtriage.cli.records",
    "mailtriage.cli.eval",
    "mailtriage.cli.learn",
    "mailtriage.cli.init",
    "mailtriage.cli.service",
    "mailtriage.cli.demo",
    "mailtriage.cli.graph",
    "mailtriage.cli.gmail",
]


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit:
        raise
    except BrokenPipeError:
        sys.exit(0)
