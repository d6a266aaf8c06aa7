"""The `mailtriage` command line (typer + rich).

Exit codes (README, "Exit codes"): 0 success, 1 a run-time failure (provider, database), 2
usage or configuration error, 3 state database unreachable, 4 webhook port unavailable, 130
interrupted. User errors print one line, never a traceback.

Text that comes from configuration, mail or a provider is never Rich markup: table cells
go through `plain()` and interpolated messages through `escape()`, so that `[graph]` or a
subject like `[SPAM] ...` prints as written. Help texts write a literal bracket as `\\[`.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from mailtriage import __version__
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


def plain(value: object) -> Text:
    """A table cell or line shown exactly as written (no markup, no highlighting)."""
    return Text("" if value is None else str(value))


def echo_json(data: Any) -> None:
    """One JSON document on stdout, unstyled (for scripts)."""
    typer.echo(json.dumps(data, ensure_ascii=False, default=str))


def echo_jsonl(rows: Iterable[Any]) -> None:
    """JSON Lines: one compact object per line."""
    for row in rows:
        typer.echo(json.dumps(row, ensure_ascii=False, separators=(",", ":"), default=str))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mailtriage {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Triage a shared mailbox with a language model, natively in Microsoft 365 or Gmail."""


F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn mailtriage errors into a one-line message and the error's exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            err_console.print(
                f"[red]configuration error:[/red] {escape(str(exc))}",
                highlight=False,
                soft_wrap=True,  # one line, whatever the terminal width
            )
            raise typer.Exit(2) from None
        except MailtriageError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
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
    "mailtriage.cli.doctor",
    "mailtriage.cli.uninstall",
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
