"""`mailtriage graph doctor` and `mailtriage graph uninstall`."""

from __future__ import annotations

import typer

from mailtriage.cli import user_errors
from mailtriage.cli.doctor import JsonOption, emit, provider_rows
from mailtriage.cli.options import DEFAULT_CONFIG, ConfigOption, load
from mailtriage.cli.uninstall import load_and_remove, remove_graph, report

graph_app = typer.Typer(help="Microsoft 365 (Graph) checks and clean-up.", no_args_is_help=True)


def doctor(config: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
    """Check Graph credentials, permissions and access to each configured mailbox."""
    from mailtriage.cli.doctor import open_state

    settings = load(config)
    rows, notes = provider_rows(settings, {"graph"}, open_state(settings)[0])
    if not rows:  # no graph mailbox: say so the way diagnose() does
        from mailtriage.cli.doctor import Row

        rows = [
            Row("graph", "config", "graph mailboxes", False, "no [[mailbox]] with provider graph")
        ]
    emit(rows, as_json=as_json, notes=notes)


def uninstall(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Delete the Graph change-notification subscriptions of this installation."""
    report(load_and_remove(config, remove_graph))


def register(app: typer.Typer) -> None:
    graph_app.command("doctor")(user_errors(doctor))
    graph_app.command("uninstall")(user_errors(uninstall))
    app.add_typer(graph_app, name="graph")
