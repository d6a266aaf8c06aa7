"""`mailtriage doctor`: the state database, the model endpoint and every provider, with fixes.

The table keeps to what was checked; the fixes are printed below it at full width, so that
the field names and commands to fix are never cut at 80 columns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Annotated

import typer
from rich.table import Table

from mailtriage.cli import console, echo_json, plain, user_errors
from mailtriage.cli.options import DEFAULT_CONFIG, ConfigOption, load
from mailtriage.core.config import Settings
from mailtriage.core.errors import MailtriageError
from mailtriage.core.ledger import Ledger

JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")]


@dataclass(frozen=True, slots=True)
class Row:
    """One doctor line, whatever checked it."""

    section: str  # "mailtriage", "graph", "gmail"
    subject: str
    check: str
    ok: bool
    detail: str
    fix: str = ""


TITLES = {
    "mailtriage": "mailtriage",
    "graph": "Microsoft 365 (Graph)",
    "gmail": "Google Workspace (Gmail)",
}


def rows_from(section: str, checks: Iterable[object]) -> list[Row]:
    """Provider checks (`subject`, `name`, `ok`, `detail`, maybe `fix`) as rows."""
    return [
        Row(
            section,
            str(getattr(c, "subject", "")),
            str(getattr(c, "name", "")),
            bool(getattr(c, "ok", False)),
            str(getattr(c, "detail", "")),
            str(getattr(c, "fix", "") or ""),
        )
        for c in checks
    ]


def render(rows: list[Row], notes: Iterable[str] = ()) -> None:
    """One table per section; numbered fixes under it; `notes` after everything."""
    for section in dict.fromkeys(r.section for r in rows):
        table = Table(title=TITLES.get(section, section))
        for col in ("", "what", "check", "result"):
            table.add_column(col, overflow="fold")
        fixes: list[Row] = []
        for r in (r for r in rows if r.section == section):
            mark = "[green]ok[/green]" if r.ok else "[red]FAIL[/red]"
            detail = plain(r.detail)
            if r.fix:
                fixes.append(r)
                detail.append(f" (fix {len(fixes)} below)", style="bold")
            table.add_row(mark, plain(r.subject), plain(r.check), detail)
        console.print(table)
        for n, r in enumerate(fixes, 1):
            console.print(plain(f"fix {n}: {r.subject}, {r.check}: {r.fix}"))
    for note in notes:
        console.print(plain(note))


def emit(rows: list[Row], *, as_json: bool, notes: Iterable[str] = ()) -> None:
    """Print the rows (table or JSON); exit 1 when any check failed."""
    ok = all(r.ok for r in rows)
    if as_json:
        echo_json({"ok": ok, "checks": [asdict(r) for r in rows], "notes": list(notes)})
    else:
        render(rows, notes)
    if not ok:
        raise typer.Exit(1)


def open_state(settings: Settings) -> tuple[Ledger | None, Row]:
    """The ledger (None when it cannot be opened) and its row: doctor goes on either way."""
    fix = "check [state] url, the database server and its credentials"
    try:
        ledger = Ledger(settings.state.url)
    except MailtriageError as exc:
        return None, Row("mailtriage", "state database", "reachable", False, str(exc), fix)
    ok = ledger.ping()
    row = Row(
        "mailtriage", "state database", "reachable", ok, ledger.display_url, "" if ok else fix
    )
    return ledger, row


def model_row(settings: Settings) -> Row:
    """Whether the configured model endpoint classifies, and how (none: the embedded model)."""
    if not settings.llm.configured:
        detail = "none: the embedded classifier decides"
        return Row("mailtriage", "model", "configured", True, detail)
    from mailtriage.cli.llm_doctor import probe

    ok, detail, fix = probe(settings)
    return Row("mailtriage", f"model {settings.llm.model}", "classifies", ok, detail, fix)


def provider_rows(
    settings: Settings, providers: set[str], ledger: Ledger | None
) -> tuple[list[Row], list[str]]:
    """Rows for the named providers that have a mailbox, and the notes they print."""
    rows: list[Row] = []
    notes: list[str] = []
    used = {m.provider for m in settings.mailboxes} & providers
    if "graph" in used:
        from mailtriage.connectors.graph.doctor import diagnose

        checks = asyncio.run(diagnose(settings, store=ledger))
        rows += rows_from("graph", checks)
    if "gmail" in used:
        from mailtriage.cli.gmail import GROUPS_NOTE, gmail_doctor

        gmail = rows_from("gmail", asyncio.run(gmail_doctor(settings)))
        rows += gmail
        if not all(r.ok for r in gmail):
            notes.append(f"Note: {GROUPS_NOTE}")
    return rows, notes


def doctor(config: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
    """Check the state database, the model endpoint and every configured provider."""
    settings = load(config)
    ledger, state = open_state(settings)
    rows, notes = provider_rows(settings, {"graph", "gmail"}, ledger)
    emit([state, model_row(settings), *rows], as_json=as_json, notes=notes)


def register(app: typer.Typer) -> None:
    app.command("doctor")(user_errors(doctor))
