"""`history` and `stats`: what the ledger says happened."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from mailtriage.cli import console, user_errors
from mailtriage.cli.options import DEFAULT_CONFIG, ConfigOption, load, parse_period
from mailtriage.core.ledger import Ledger, Status


def history(
    config: ConfigOption = DEFAULT_CONFIG,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 30,
    mailbox: Annotated[str | None, typer.Option(help="Only this mailbox.")] = None,
) -> None:
    """Recent decisions from the ledger."""
    settings = load(config)
    ledger = Ledger(settings.state.url)
    table = Table(title=f"last {limit} messages")
    for col in ("when (UTC)", "mailbox", "subject", "status", "category", "conf.", "by", "done"):
        table.add_column(col, overflow="fold")
    for r in ledger.recent(limit=limit, mailbox=mailbox):
        detail = (
            r.describe_actions()
            if r.status == Status.DONE
            else (r.skip_reason or r.last_error[:80] or "")
        )
        table.add_row(
            r.updated_at.strftime("%Y-%m-%d %H:%M"),
            r.mailbox,
            r.subject[:50],
            r.status + (" (review)" if r.routed_to_review else ""),
            r.category or "",
            f"{r.confidence:.2f}" if r.confidence is not None else "",
            r.classifier,
            detail,
        )
    console.print(table)


def stats(
    config: ConfigOption = DEFAULT_CONFIG,
    since: Annotated[str, typer.Option(help="Period, e.g. 24h, 7d, 4w.")] = "7d",
    mailbox: Annotated[str | None, typer.Option(help="Only this mailbox.")] = None,
) -> None:
    """Per-category counts, review rate and correction rate for a period."""
    settings = load(config)
    start = datetime.now(UTC) - parse_period(since)
    ledger = Ledger(settings.state.url)
    rows = ledger.counts(since=start, mailbox=mailbox)
    by_cat: Counter[str] = Counter()
    by_status: Counter[str] = Counter()
    for status, category, n in rows:
        by_status[status] += n
        if status in (Status.DONE, Status.DRY_RUN) and category:
            by_cat[category] += n
    routed = sum(by_cat.values())
    review = by_cat.get(settings.review_category, 0)
    corrections = ledger.correction_count(since=start, mailbox=mailbox)
    table = Table(title=f"mailtriage stats since {start:%Y-%m-%d %H:%M} UTC")
    table.add_column("category")
    table.add_column("messages", justify="right")
    table.add_column("share", justify="right")
    for c in settings.categories:
        n = by_cat.get(c.key, 0)
        table.add_row(c.name, str(n), f"{n / routed:.0%}" if routed else "-")
    console.print(table)
    console.print(
        f"routed {routed} · review rate {review / routed:.1%} · "
        f"corrections {corrections} ({corrections / routed:.1%})"
        if routed
        else "no routed messages in this period",
        highlight=False,
    )
    console.print(
        " · ".join(f"{k} {v}" for k, v in sorted(by_status.items())) or "ledger empty",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("history")(user_errors(history))
    app.command("stats")(user_errors(stats))
