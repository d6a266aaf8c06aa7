"""`history` and `stats`: what the ledger says happened."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from mailtriage.cli import console, echo_json, echo_jsonl, plain, user_errors
from mailtriage.cli.options import DEFAULT_CONFIG, ConfigOption, load, parse_period
from mailtriage.core.ledger import ActionState, Ledger, Record, Status


def _history_row(r: Record) -> dict[str, Any]:
    """One decision as JSON: what was decided, by what, and each action's state."""
    return {
        "updated_at": r.updated_at.isoformat(),
        "mailbox": r.mailbox,
        "message_id": r.current_provider_id,
        "internet_message_id": r.internet_message_id,
        "subject": r.subject,
        "sender": r.sender,
        "status": r.status,
        "skip_reason": r.skip_reason or None,
        "category": r.category,
        "decided_category": r.decided_category or None,
        "routed_to_review": r.routed_to_review,
        "confidence": r.confidence,
        "classifier": r.classifier or None,
        "model": r.model or None,
        "attempts": r.attempts,
        "dry_run": r.dry_run,
        "last_error": r.last_error or None,
        "actions": [
            {
                "action": action.describe(),
                "state": state,
                "error": (error or None) if state != ActionState.APPLIED else None,
                "note": (error or None) if state == ActionState.APPLIED else None,
            }
            for state, action, error in r.actions
        ],
    }


def history(
    config: ConfigOption = DEFAULT_CONFIG,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 30,
    mailbox: Annotated[str | None, typer.Option(help="Only this mailbox.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON Lines: one decision per line, newest first.")
    ] = False,
) -> None:
    """Recent decisions from the ledger."""
    settings = load(config)
    ledger = Ledger(settings.state.url)
    records = ledger.recent(limit=limit, mailbox=mailbox)
    if as_json:
        echo_jsonl(_history_row(r) for r in records)
        return
    table = Table(title=f"last {limit} messages")
    for col in ("when (UTC)", "mailbox", "subject", "status", "category", "conf.", "by", "done"):
        table.add_column(col, overflow="fold")
    for r in records:
        detail = (
            r.describe_actions()
            if r.status == Status.DONE
            else (r.skip_reason or r.last_error[:80] or "")
        )
        table.add_row(
            r.updated_at.strftime("%Y-%m-%d %H:%M"),
            plain(r.mailbox),
            plain(r.subject[:50]),
            plain(r.status + (" (review)" if r.routed_to_review else "")),
            plain(r.category or ""),
            f"{r.confidence:.2f}" if r.confidence is not None else "",
            plain(r.classifier),
            plain(detail),
        )
    console.print(table)


def stats(
    config: ConfigOption = DEFAULT_CONFIG,
    since: Annotated[str, typer.Option(help="Period, e.g. 24h, 7d, 4w.")] = "7d",
    mailbox: Annotated[str | None, typer.Option(help="Only this mailbox.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
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
    if as_json:
        echo_json(
            {
                "since": start.isoformat(),
                "mailbox": mailbox,
                "routed": routed,
                "review": review,
                "review_rate": review / routed if routed else None,
                "corrections": corrections,
                "correction_rate": corrections / routed if routed else None,
                "categories": [
                    {
                        "key": c.key,
                        "name": c.name,
                        "messages": by_cat.get(c.key, 0),
                        "share": by_cat.get(c.key, 0) / routed if routed else None,
                    }
                    for c in settings.categories
                ],
                "statuses": dict(sorted(by_status.items())),
            }
        )
        return
    table = Table(title=f"mailtriage stats since {start:%Y-%m-%d %H:%M} UTC")
    table.add_column("category")
    table.add_column("messages", justify="right")
    table.add_column("share", justify="right")
    for c in settings.categories:
        n = by_cat.get(c.key, 0)
        table.add_row(plain(c.name), str(n), f"{n / routed:.0%}" if routed else "-")
    console.print(table)
    console.print(
        plain(
            f"routed {routed} · review rate {review / routed:.1%} · "
            f"corrections {corrections} ({corrections / routed:.1%})"
            if routed
            else "no routed messages in this period"
        )
    )
    console.print(
        plain(" · ".join(f"{k} {v}" for k, v in sorted(by_status.items())) or "ledger empty")
    )


def register(app: typer.Typer) -> None:
    app.command("history")(user_errors(history))
    app.command("stats")(user_errors(stats))
