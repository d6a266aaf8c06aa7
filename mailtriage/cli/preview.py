"""`check-config` and `classify`: look before anything touches a mailbox."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mailtriage.cli import console, user_errors
from mailtriage.cli.options import DEFAULT_CONFIG, ConfigOption, load
from mailtriage.core import planner, preflight, rules
from mailtriage.core.classifiers import build_classifier
from mailtriage.core.config import Settings
from mailtriage.core.errors import ClassifierError, MessageParseError
from mailtriage.core.ledger import Ledger
from mailtriage.core.message import TOO_LARGE, Message
from mailtriage.core.ports import Classifier


def check_config(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Validate the configuration, check secrets and the state URL (no network), summarise."""
    settings = load(config)
    preflight.check(settings)
    table = Table(title=f"{config}: valid", show_lines=False)
    for col in ("category", "name", "label", "move to", "forward to", "read"):
        table.add_column(col)
    for c in settings.categories:
        label = planner.label_for(c)
        table.add_row(
            c.key + (" (review)" if c.key == settings.review_category else ""),
            c.name,
            label.name if label else "",
            c.actions.move_to or "",
            ", ".join(c.actions.forward_to),
            "yes" if c.actions.mark_read else "",
        )
    console.print(table)
    console.print(f"classifier: {settings.effective_classifier}", highlight=False)
    if settings.llm.configured:
        console.print(f"llm: {settings.llm.model} at {settings.llm.base_url}", highlight=False)
    console.print(f"state: {Ledger._redacted(settings.state.url)}", highlight=False)
    for mb in settings.mailboxes:
        dry = " (dry run)" if settings.is_dry_run(mb.address) else ""
        console.print(f"mailbox: {mb.provider} {mb.address}{dry}", highlight=False)


async def _preview(settings: Settings, classifier: Classifier | None, path: Path) -> dict[str, Any]:
    mailbox = settings.mailboxes[0].address if settings.mailboxes else "preview"
    row: dict[str, Any] = {"file": str(path)}
    try:
        message = _read_eml(path, mailbox, settings.runtime.max_message_mb)
    except MessageParseError as exc:
        return row | {"status": "unreadable", "reason": exc.reason}
    except OSError as exc:
        return row | {"status": "unreadable", "reason": exc.strerror or str(exc)}
    row["subject"] = message.subject
    skip = rules.skip_reason(message)
    if skip is not None:
        return row | {"status": "skipped", "reason": skip.reason}
    decision = rules.route_by_sender(message, settings)
    if decision is None:
        assert classifier is not None
        try:
            decision = await classifier.classify(message)
        except ClassifierError as exc:
            return row | {"status": "error", "reason": str(exc)}
    plan = planner.plan(decision, message, settings)
    if message.too_large:
        row["note"] = TOO_LARGE
    return row | {
        "status": "classified",
        "category": plan.category,
        "model_category": decision.category,
        "confidence": round(decision.confidence, 3),
        "confidence_source": str(decision.confidence_source),
        "classifier": decision.classifier,
        "reason": decision.reason,
        "actions": [a.describe() for a in plan.actions],
    }


def _read_eml(path: Path, mailbox: str, max_mb: float) -> Message:
    """A .eml file as the service would read it: above `runtime.max_message_mb`, only its
    headers (routed by headers and subject), so a huge file costs no memory."""
    from mailtriage.core.extract import HEAD_LIMIT, parse_head, parse_rfc822

    size = path.stat().st_size
    if size > max_mb * 1024 * 1024:
        with path.open("rb") as handle:
            head = handle.read(HEAD_LIMIT)
        return parse_head(head, mailbox=mailbox, provider_id=str(path), size=size)
    return parse_rfc822(path.read_bytes(), mailbox=mailbox, provider_id=str(path))


def classify(
    files: Annotated[list[Path], typer.Argument(help=".eml files (raw RFC 822).")],
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    classifier: Annotated[
        str | None, typer.Option(help="llm, embedded or cascade (default: from config).")
    ] = None,
) -> None:
    """Preview the routing of .eml files. Never changes anything."""
    settings = load(config)
    if classifier not in (None, "llm", "embedded", "cascade"):
        raise typer.BadParameter("use llm, embedded or cascade", param_hint="--classifier")
    # The ledger's learned examples, when there is a ledger already (preview creates none).
    ledger = _existing_ledger(settings)
    clf = build_classifier(settings, classifier, ledger=ledger)  # type: ignore[arg-type]

    async def run() -> list[dict[str, Any]]:
        return [await _preview(settings, clf, p) for p in files]

    rows = asyncio.run(run())
    if as_json:
        for r in rows:
            console.print_json(json.dumps(r, ensure_ascii=False))
        return
    table = Table(title="mailtriage classify (preview, nothing changed)")
    for col in ("file", "subject", "category", "conf.", "reason", "would do"):
        table.add_column(col, overflow="fold")
    for r in rows:
        if r["status"] != "classified":
            table.add_row(
                Path(r["file"]).name,
                r.get("subject", ""),
                f"({r['status']})",
                "",
                r["reason"],
                "nothing",
            )
            continue
        table.add_row(
            Path(r["file"]).name,
            r["subject"][:60],
            r["category"],
            f"{r['confidence']:.2f}",
            r["reason"][:80],
            " + ".join(r["actions"]) or "nothing",
        )
    console.print(table)


def _existing_ledger(settings: Settings) -> Ledger | None:
    url = settings.state.url
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if str(path) != ":memory:" and not path.exists():
            return None
    return Ledger(url, store_text=settings.store_text)


def register(app: typer.Typer) -> None:
    app.command("check-config")(user_errors(check_config))
    app.command("classify")(user_errors(classify))
