"""`check-config` and `classify`: look before anything touches a mailbox."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mailtriage.cli import console, echo_json, echo_jsonl, plain, user_errors
from mailtriage.cli.options import DEFAULT_CONFIG, ConfigOption, load
from mailtriage.core import planner, preflight, rules
from mailtriage.core.classifiers import build_classifier
from mailtriage.core.config import Settings
from mailtriage.core.errors import ClassifierError, ConfigError, MessageParseError
from mailtriage.core.ledger import Ledger
from mailtriage.core.message import TOO_LARGE, Message
from mailtriage.core.ports import Classifier


def check_config(
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Validate the configuration as `run` would (short of network access) and summarise it."""
    try:
        settings = load(config)
        preflight.check(settings)  # secret variables and files, the state URL
        notes = check_credentials(settings)
    except ConfigError as exc:
        if not as_json:
            raise
        echo_json({"config": str(config), "valid": False, "errors": str(exc).splitlines()})
        raise typer.Exit(2) from None
    if not settings.mailboxes:
        notes.append("no [[mailbox]]: `run` and `sync` need at least one")
    if as_json:
        echo_json(_summary(config, settings, notes))
        return
    table = Table(title=plain(f"{config}: valid"), show_lines=False)
    for col in ("category", "name", "label", "move to", "forward to", "read"):
        table.add_column(col, overflow="fold")
    for c in settings.categories:
        label = planner.label_for(c)
        table.add_row(
            plain(c.key + (" (review)" if c.key == settings.review_category else "")),
            plain(c.name),
            plain(label.name if label else ""),
            plain(c.actions.move_to or ""),
            plain(", ".join(c.actions.forward_to)),
            "yes" if c.actions.mark_read else "",
        )
    console.print(table)
    console.print(plain(f"classifier: {settings.effective_classifier}"))
    if settings.llm.configured:
        console.print(plain(f"llm: {settings.llm.model} at {settings.llm.base_url}"))
    console.print(plain(f"state: {Ledger._redacted(settings.state.url)}"))
    for mb in settings.mailboxes:
        dry = " (dry run)" if settings.is_dry_run(mb.address) else ""
        console.print(plain(f"mailbox: {mb.provider} {mb.address}{dry}"))
    for note in notes:
        console.print(plain(note))


def check_credentials(settings: Settings) -> list[str]:
    """Build each provider's credentials as `run` does, without a network call.

    A secret file that is missing or malformed raises one ConfigError naming it. Returns
    notes on what only `doctor` can check.
    """
    notes: list[str] = []
    providers = {m.provider for m in settings.mailboxes}
    if "graph" in providers and not settings.graph.anonymous:
        from mailtriage.connectors.graph.client import build_credential

        credential = build_credential(settings.graph)
        asyncio.run(credential.close())
    if "gmail" in providers and not settings.gmail.anonymous:
        if settings.gmail.auth == "key_file":
            from mailtriage.connectors.gmail import service_account_info

            service_account_info(settings.gmail)
        else:
            notes.append(
                f"gmail: key-less delegation as {settings.gmail.service_account_email}: "
                "`mailtriage gmail doctor` checks this machine's identity and signJwt"
            )
    return notes


def _summary(config: Path, settings: Settings, notes: list[str]) -> dict[str, Any]:
    categories = []
    for c in settings.categories:
        label = planner.label_for(c)
        categories.append(
            {
                "key": c.key,
                "name": c.name,
                "review": c.key == settings.review_category,
                "label": label.name if label else None,
                "color": c.actions.color,
                "move_to": c.actions.move_to,
                "forward_to": list(c.actions.forward_to),
                "mark_read": c.actions.mark_read,
            }
        )
    return {
        "config": str(config),
        "valid": True,
        "classifier": settings.effective_classifier,
        "llm": (
            {"model": settings.llm.model, "base_url": settings.llm.base_url}
            if settings.llm.configured
            else None
        ),
        "state": Ledger._redacted(settings.state.url),
        "categories": categories,
        "mailboxes": [
            {
                "provider": m.provider,
                "address": m.address,
                "dry_run": settings.is_dry_run(m.address),
                "categories": [c.key for c in settings.categories_for(m.address)],
            }
            for m in settings.mailboxes
        ],
        "notes": notes,
    }


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
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON Lines: one compact object per file.")
    ] = False,
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
        echo_jsonl(rows)
        return
    table = Table(title="mailtriage classify (preview, nothing changed)")
    for col in ("file", "subject", "category", "conf.", "reason", "would do"):
        table.add_column(col, overflow="fold")
    for r in rows:
        if r["status"] != "classified":
            table.add_row(
                plain(Path(r["file"]).name),
                plain(r.get("subject", "")),
                plain(f"({r['status']})"),
                "",
                plain(r["reason"]),
                "nothing",
            )
            continue
        table.add_row(
            plain(Path(r["file"]).name),
            plain(r["subject"][:60]),
            plain(r["category"]),
            f"{r['confidence']:.2f}",
            plain(r["reason"][:80]),
            plain(" + ".join(r["actions"]) or "nothing"),
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
