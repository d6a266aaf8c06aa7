"""`run` and `sync`: the commands that triage real mailboxes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mailtriage.cli import console, user_errors
from mailtriage.cli.options import DEFAULT_CONFIG, ConfigOption, load, parse_period
from mailtriage.core import logs, preflight
from mailtriage.core.classifiers import build_classifier, build_learner
from mailtriage.core.config import Settings
from mailtriage.core.errors import ConfigError
from mailtriage.core.ledger import Ledger
from mailtriage.core.pipeline import OnCorrection, Outcome, Pipeline, Result, SyncReport
from mailtriage.core.ports import Classifier
from mailtriage.core.runtime import Service, sync_all


def _select(settings: Settings, mailbox: str | None) -> Settings:
    if mailbox is None:
        return settings
    if settings.mailbox(mailbox) is None:
        raise ConfigError(f"--mailbox {mailbox}: not a configured [[mailbox]] address")
    keep = [m for m in settings.mailboxes if m.address == mailbox.lower()]
    return settings.model_copy(update={"mailboxes": keep})


def _with_overrides(settings: Settings, *, since_days: float | None, dry_run: bool) -> Settings:
    boxes = [
        m.model_copy(
            update={
                **({"backfill_days": since_days} if since_days is not None else {}),
                **({"dry_run": True} if dry_run else {}),
            }
        )
        for m in settings.mailboxes
    ]
    return settings.model_copy(
        update={"mailboxes": boxes, **({"dry_run": True} if dry_run else {})}
    )


def run(
    config: ConfigOption = DEFAULT_CONFIG,
    host: Annotated[str | None, typer.Option(help="Webhook bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Webhook port.")] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING.")] = "INFO",
) -> None:
    """Run the service: scheduled syncs, webhooks, health and metrics, until SIGTERM.

    Start-up failures are one line and an exit code: 2 configuration (a missing secret, a
    malformed state URL), 3 state database unreachable, 4 webhook port unavailable.
    """
    from mailtriage.connectors import build_mailboxes, build_pushes

    settings = load(config)
    if not settings.mailboxes:
        raise ConfigError(f"{config}: no [[mailbox]] configured")
    preflight.check(settings)
    logs.configure(level=log_level)
    ledger = Ledger(settings.state.url, store_text=settings.store_text)
    learner = build_learner(settings, ledger)
    classifier = build_classifier(settings, ledger=ledger, learner=learner)

    async def main() -> None:
        mailboxes = build_mailboxes(settings, ledger)
        pushes = build_pushes(settings, ledger, mailboxes)
        service = Service(
            settings,
            ledger,
            classifier,
            mailboxes,
            pushes,
            on_correction=learner.on_correction if learner else None,
        )
        await service.serve(host=host, port=port)

    asyncio.run(main())


def sync(
    config: ConfigOption = DEFAULT_CONFIG,
    mailbox: Annotated[str | None, typer.Option(help="Only this mailbox.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Backfill window, e.g. 7d (re-reads; nothing twice).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and record only.")] = False,
) -> None:
    """One-shot catch-up or backfill of the configured mailboxes."""
    settings = _select(load(config), mailbox)
    if not settings.mailboxes:
        raise ConfigError(f"{config}: no [[mailbox]] configured")
    preflight.check(settings)
    since_days = parse_period(since).total_seconds() / 86400 if since else None
    settings = _with_overrides(settings, since_days=since_days, dry_run=dry_run)
    logs.configure(level="WARNING")
    ledger = Ledger(settings.state.url, store_text=settings.store_text)
    learner = build_learner(settings, ledger)
    classifier = build_classifier(settings, ledger=ledger, learner=learner)
    if since_days is not None:
        for mb in settings.mailboxes:  # restart from the window; the ledger dedups
            ledger.set_cursor(mb.address, None)
    reports = asyncio.run(
        _sync_with_progress(
            settings, ledger, classifier, learner.on_correction if learner else None
        )
    )
    console.print(summary_table(reports))
    if any(isinstance(r, Exception) for r in reports.values()):
        raise typer.Exit(1)


async def _sync_with_progress(
    settings: Settings,
    ledger: Ledger,
    classifier: Classifier,
    on_correction: OnCorrection | None = None,
) -> dict[str, SyncReport | Exception]:
    from mailtriage.connectors import build_mailboxes

    counts: Counter[str] = Counter()
    started = time.monotonic()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("syncing", total=None, stats="")

        def on_result(result: Result) -> None:
            counts["seen"] += 1
            if result.category:
                counts["classified"] += 1
            if result.status in (Outcome.DONE,):
                counts["acted"] += 1
            rate = counts["seen"] / max(1e-6, time.monotonic() - started)
            progress.update(
                task,
                advance=1,
                stats=f"seen {counts['seen']} · classified {counts['classified']} · "
                f"acted {counts['acted']} · {rate:.1f}/s",
            )

        # sync_all holds each mailbox's lease, so interrupted rows can be resumed at once.
        pipeline = Pipeline(
            settings,
            ledger,
            classifier,
            on_result=on_result,
            on_correction=on_correction,
            exclusive=True,
        )
        mailboxes = build_mailboxes(settings, ledger)
        try:
            reports = await sync_all(pipeline, mailboxes)
        finally:
            for mb in mailboxes:
                await mb.aclose()
        progress.update(task, total=counts["seen"] or 1, completed=counts["seen"] or 1)
    return dict(reports)


def summary_table(reports: dict[str, SyncReport | Exception]) -> Table:
    table = Table(title="sync summary")
    for col in ("mailbox", "seen", "done", "dry run", "skipped", "duplicates", "failed", "note"):
        table.add_column(col, justify="right" if col not in ("mailbox", "note") else "left")
    for address, rep in reports.items():
        if isinstance(rep, Exception):
            table.add_row(address, "", "", "", "", "", "", f"[red]{escape(str(rep))}[/red]")
            continue
        table.add_row(
            address,
            str(rep.seen),
            str(rep.count(Outcome.DONE)),
            str(rep.count(Outcome.DRY_RUN)),
            str(rep.count(Outcome.SKIPPED)),
            str(rep.count(Outcome.DUPLICATE)),
            str(rep.count(Outcome.FAILED) + rep.count(Outcome.GAVE_UP)),
            f"{rep.corrections} corrections" if rep.corrections else "",
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("run")(user_errors(run))
    app.command("sync")(user_errors(sync))
