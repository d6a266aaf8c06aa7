"""`mailtriage graph doctor` and `mailtriage graph uninstall`."""

from __future__ import annotations

import asyncio

import typer
from rich.table import Table

from mailtriage.cli import console, user_errors
from mailtriage.cli.options import DEFAULT_CONFIG, ConfigOption, load
from mailtriage.core.errors import MailtriageError

graph_app = typer.Typer(help="Microsoft 365 (Graph) checks and clean-up.", no_args_is_help=True)


def doctor(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Check Graph credentials, permissions and access to each configured mailbox."""
    from mailtriage.connectors.graph.doctor import diagnose
    from mailtriage.core.ledger import Ledger

    settings = load(config)
    try:
        ledger: Ledger | None = Ledger(settings.state.url)
    except MailtriageError:  # the database is reported by `doctor`; Graph is checked anyway
        ledger = None
    checks = asyncio.run(diagnose(settings, store=ledger))
    table = Table(title="Microsoft 365 (Graph)")
    for col in ("", "what", "check", "result", "fix"):
        table.add_column(col)
    for c in checks:
        mark = "[green]ok[/green]" if c.ok else "[red]missing[/red]"
        table.add_row(mark, c.subject, c.name, c.detail, c.fix)
    console.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def uninstall(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Delete the Graph change-notification subscriptions of this installation."""
    from mailtriage.connectors.graph.push import GraphPush
    from mailtriage.core.ledger import Ledger

    settings = load(config)
    ledger = Ledger(settings.state.url)

    async def main() -> None:
        push = GraphPush.from_settings(settings, ledger)
        try:
            await push.uninstall()
        finally:
            await push.aclose()

    asyncio.run(main())
    console.print("graph: subscriptions deleted", highlight=False)


def register(app: typer.Typer) -> None:
    graph_app.command("doctor")(user_errors(doctor))
    graph_app.command("uninstall")(user_errors(uninstall))
    app.add_typer(graph_app, name="graph")
