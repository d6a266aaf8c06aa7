"""`uninstall`: delete the Graph subscriptions and stop the Gmail watches, provider by provider.

Every provider and every mailbox is attempted even when one fails (a Graph outage must not
leave Gmail watches running); every failure is reported, and the exit code is 1 if any.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mailtriage.cli import console, echo_json, plain, user_errors
from mailtriage.cli.options import DEFAULT_CONFIG, ConfigOption, load
from mailtriage.core.config import Settings
from mailtriage.core.ledger import Ledger


@dataclass(frozen=True, slots=True)
class Removal:
    """What happened to one provider's push set-up for one mailbox (or for all)."""

    provider: str
    target: str
    ok: bool
    detail: str


def _failure(provider: str, target: str, exc: BaseException) -> Removal:
    text = (str(exc) or type(exc).__name__).removeprefix(f"{target}: ")
    return Removal(provider, target, False, text)


async def remove_graph(
    settings: Settings, ledger: Ledger, mailbox: str | None = None
) -> list[Removal]:
    """Delete the Inbox subscriptions of the Graph mailboxes (all, or `mailbox`)."""
    boxes = [
        m.address
        for m in settings.mailboxes
        if m.provider == "graph" and (mailbox is None or m.address == mailbox.lower())
    ]
    if not boxes:
        return []
    from mailtriage.connectors.graph.push import GraphPush

    try:
        push = GraphPush.from_settings(settings, ledger)
    except Exception as exc:
        return [_failure("graph", "credentials", exc)]
    push.mailboxes = boxes
    out: list[Removal] = []
    try:
        await push.uninstall()
    except Exception as exc:
        if not push.errors:  # a per-mailbox failure is reported below
            out.append(_failure("graph", "subscriptions", exc))
    finally:
        await push.aclose()
    for address in boxes:
        error = push.errors.get(address)
        error = error.removeprefix(f"{address}: ") if error else None
        out.append(Removal("graph", address, error is None, error or "no subscription left"))
    return out


async def remove_gmail(
    settings: Settings, ledger: Ledger, mailbox: str | None = None
) -> list[Removal]:
    """users.stop on every Gmail mailbox (all, or `mailbox`), each on its own."""
    if not any(m.provider == "gmail" for m in settings.mailboxes):
        return []
    from mailtriage.connectors.gmail import GmailWatch, build_gmail_mailboxes

    try:
        boxes = build_gmail_mailboxes(settings, ledger)
    except Exception as exc:
        return [_failure("gmail", "credentials", exc)]
    out: list[Removal] = []
    for box in boxes:
        try:
            if mailbox is None or box.address == mailbox.lower():
                await GmailWatch(box, settings.gmail.pubsub_topic or "-").uninstall()
                out.append(Removal("gmail", box.address, True, "watch stopped"))
        except Exception as exc:
            out.append(_failure("gmail", box.address, exc))
        finally:
            await box.aclose()
    return out


Remover = Callable[[Settings, Ledger], Awaitable[list[Removal]]]


def load_and_remove(config: Path, *removers: Remover) -> list[Removal]:
    """Load the configuration and run each remover, whatever the others did."""
    settings = load(config)
    ledger = Ledger(settings.state.url)

    async def main() -> list[Removal]:
        out: list[Removal] = []
        for remover in removers:
            out += await remover(settings, ledger)
        return out

    return asyncio.run(main())


def report(removals: list[Removal], *, as_json: bool = False) -> None:
    """One line per mailbox (or JSON); exit 1 when anything failed."""
    ok = all(r.ok for r in removals)
    if as_json:
        echo_json({"ok": ok, "removals": [asdict(r) for r in removals]})
    else:
        if not removals:
            console.print("nothing to remove: no mailbox with push configured")
        for r in removals:
            line = f"{r.provider}: {r.target}: {r.detail}"
            text = plain(line) if r.ok else f"[red]{escape(line)}[/red]"
            console.print(text, soft_wrap=True)  # one line each, whatever the width
    if not ok:
        raise typer.Exit(1)


def uninstall(
    config: ConfigOption = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Delete the Graph subscriptions and stop the Gmail watches this installation made."""
    report(load_and_remove(config, remove_graph, remove_gmail), as_json=as_json)


def register(app: typer.Typer) -> None:
    app.command("uninstall")(user_errors(uninstall))
