"""`mailtriage demo`: the real pipeline, through the real SDKs, on loopback emulators.

Starts the Graph and Gmail emulators, seeds a Microsoft 365 shared mailbox and a Gmail
mailbox with the demo corpus (French and English mail for every department, an
out-of-office reply and a prompt-injection attempt), triages both with the embedded
classifier (or a reachable configured LLM), prints what was done natively, then runs a
second pass that must process nothing.
"""

from __future__ import annotations

import os
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mailtriage.connectors import build_mailboxes
from mailtriage.core.actions import Forward, Label, MarkRead, Move
from mailtriage.core.classifiers import build_classifier, build_learner
from mailtriage.core.config import Settings, parse_settings
from mailtriage.core.embedded import EmbeddedClassifier
from mailtriage.core.ledger import Ledger, Status
from mailtriage.core.llm import llm_reachable
from mailtriage.core.pipeline import Outcome, Pipeline, SyncReport
from mailtriage.core.runtime import sync_all
from mailtriage.data import EXAMPLE_CONFIG
from mailtriage.sandbox.demo_corpus import DemoMail, demo_messages, render_body
from mailtriage.sandbox.demo_score import DemoScore, classifier_line, summarise
from mailtriage.sandbox.gmail import GmailEmulator
from mailtriage.sandbox.graph import GraphEmulator

GRAPH_BOX = "contact@atelier-dupont.fr"
GMAIL_BOX = "info@atelier-dupont.com"
KEY_ENV = "MAILTRIAGE_DEMO_GMAIL_KEY"


@dataclass(slots=True)
class DemoOutcome:
    first: dict[str, SyncReport | Exception]
    second: dict[str, SyncReport | Exception]
    expected: dict[str, str] = field(default_factory=dict)  # internet message id -> key
    seconds: float = 0.0

    @property
    def second_pass_processed(self) -> int:
        return sum(r.processed for r in self.second.values() if isinstance(r, SyncReport))


@contextmanager
def emulators(department_boxes: list[str]) -> Iterator[tuple[GraphEmulator, GmailEmulator]]:
    """Both emulators running, with the shared mailboxes and the departments' mailboxes."""
    with GraphEmulator() as graph, GmailEmulator(users=[GMAIL_BOX]) as gmail:
        graph.add_mailbox(GRAPH_BOX, display_name="Atelier Dupont — Contact")
        for address in department_boxes:
            graph.add_mailbox(address)
        yield graph, gmail


def seed(graph: GraphEmulator, gmail: GmailEmulator) -> dict[str, str]:
    """Deliver the corpus to both mailboxes; returns Message-ID → expected category."""
    expected: dict[str, str] = {}
    for address, deliver in ((GRAPH_BOX, _deliver_graph), (GMAIL_BOX, _deliver_gmail)):
        for mail, raw in demo_messages(address):
            msgid = deliver(graph, gmail, address, mail, raw)
            expected[f"{address}|{msgid}"] = mail.expected
    return expected


def _deliver_graph(
    graph: GraphEmulator, _gmail: GmailEmulator, to: str, mail: DemoMail, raw: bytes
) -> str:
    parsed = message_from_bytes(raw)
    date = parsedate_to_datetime(parsed["Date"])
    body = render_body(mail, to=to, date=date)
    html = not body.strip() and bool(mail.html)
    msgid = str(parsed["Message-ID"])
    graph.deliver(
        to,
        subject=mail.subject,
        body=mail.html if html and mail.html else body,
        html=html,
        sender=mail.sender,
        sender_name=mail.sender_name,
        reply_to=[mail.reply_to] if mail.reply_to else None,
        headers={k: v for k, v in mail.headers if k.lower().startswith(("x-", "list-"))}
        | {k: v for k, v in mail.headers if k.lower() in ("auto-submitted", "precedence")},
        attachments=[
            {"name": a.filename, "contentType": a.content_type, "size": a.size}
            for a in mail.attachments
        ],
        received=date,
        internet_message_id=msgid,
    )
    return msgid


def _deliver_gmail(
    _graph: GraphEmulator, gmail: GmailEmulator, to: str, _mail: DemoMail, raw: bytes
) -> str:
    parsed = message_from_bytes(raw)
    date = parsedate_to_datetime(parsed["Date"])
    gmail.deliver(to, raw, internal_date_ms=int(date.timestamp() * 1000))
    return str(parsed["Message-ID"])


def demo_settings(
    graph: GraphEmulator, gmail: GmailEmulator, state_url: str, base: Settings | None
) -> Settings:
    """The example configuration, with both mailboxes on the emulators."""
    data: dict[str, Any] = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["state"] = {"url": state_url}
    data["graph"] = {"base_url": graph.base_url, "anonymous": True}
    data["gmail"] = {
        "service_account_env": KEY_ENV,
        "api_endpoint": gmail.url,
        "token_uri": gmail.token_uri,
    }
    data["runtime"] = {"max_attempts": 3}
    data["mailbox"] = [
        {"provider": "graph", "address": GRAPH_BOX, "backfill_days": 3},
        {"provider": "gmail", "address": GMAIL_BOX, "backfill_days": 3},
    ]
    if base is not None and base.llm.configured:
        data["llm"] = base.llm.model_dump(exclude_none=True)
        data["classifier"] = base.classifier
    else:
        data["llm"] = {"model": ""}
        data["classifier"] = "embedded"
    return parse_settings(data, "demo")


async def run(
    console: Console, *, base: Settings | None = None, state_dir: Path | None = None
) -> DemoOutcome:
    """Seed, triage, report, then triage again (which must process nothing)."""
    if base is not None and not llm_reachable(base):
        console.print(f"LLM at {base.llm.base_url} not reachable: using the embedded classifier")
        base = None
    started = time.monotonic()
    departments = sorted(
        {a for c in parse_settings_file().categories for a in c.actions.forward_to}
    )
    workdir = Path(state_dir or tempfile.mkdtemp(prefix="mailtriage-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with emulators(departments) as (graph, gmail):
        os.environ[KEY_ENV] = gmail.service_account_json()
        expected = seed(graph, gmail)
        settings = demo_settings(graph, gmail, f"sqlite:///{workdir / 'demo.sqlite'}", base)
        console.print(
            f"seeded {len(expected)} messages into {GRAPH_BOX} (Microsoft Graph emulator) and "
            f"{GMAIL_BOX} (Gmail emulator); classifier: {settings.effective_classifier}",
            highlight=False,
        )
        ledger = Ledger(settings.state.url)
        learner = build_learner(settings, ledger)
        classifier = build_classifier(settings, ledger=ledger, learner=learner)
        hook = learner.on_correction if learner else None
        first = await _pass(settings, ledger, classifier, hook)
        print_results(console, settings, ledger, expected, model_detail(classifier))
        second = await _pass(settings, ledger, classifier, hook)
        outcome = DemoOutcome(first, second, expected, time.monotonic() - started)
        print_forwards(console, graph, gmail)
    closer = getattr(classifier, "aclose", None)
    if closer is not None:
        await closer()
    console.print(
        f"second pass: {outcome.second_pass_processed} messages processed "
        f"(everything is in the ledger and marked in the mailboxes) · "
        f"total {outcome.seconds:.1f} s · state in {workdir / 'demo.sqlite'}",
        highlight=False,
    )
    return outcome


def parse_settings_file() -> Settings:
    data = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    return parse_settings(data, str(EXAMPLE_CONFIG))


async def _pass(
    settings: Settings, ledger: Ledger, classifier: Any, on_correction: Any = None
) -> dict[str, SyncReport | Exception]:
    pipeline = Pipeline(settings, ledger, classifier, on_correction=on_correction)
    mailboxes = build_mailboxes(settings, ledger)
    try:
        return dict(await sync_all(pipeline, mailboxes))
    finally:
        for mb in mailboxes:
            await mb.aclose()


def native(provider: str, action: Any) -> str:
    """What an action is called in the provider's own vocabulary."""
    if isinstance(action, Label):
        return f"category {action.name}" if provider == "graph" else f"label {action.name}"
    if isinstance(action, Move):
        if provider == "graph":
            return f"moved to {action.folder}"
        return f"label {action.folder}, out of Inbox"
    if isinstance(action, Forward):
        return "forwarded to " + ", ".join(action.to)
    if isinstance(action, MarkRead):
        return "marked read"
    return str(action)


def model_detail(classifier: Any) -> str:
    """How the embedded classifier (alone or first in the cascade) decides in the demo."""
    embedded = getattr(classifier, "embedded", classifier)
    if isinstance(embedded, EmbeddedClassifier):
        return embedded.model(GRAPH_BOX).describe()
    return ""


def print_results(
    console: Console,
    settings: Settings,
    ledger: Ledger,
    expected: dict[str, str],
    detail: str = "",
) -> None:
    providers = {m.address: m.provider for m in settings.mailboxes}
    short = {
        m.address: ("M365 " if m.provider == "graph" else "Gmail ") + m.address.split("@")[0]
        for m in settings.mailboxes
    }
    names = {c.key: c.name for c in settings.categories}
    rows = sorted(ledger.recent(limit=10_000), key=lambda r: (r.mailbox, r.id))
    table = Table(title="mailtriage demo: what was done natively", show_lines=False)
    for col in ("mailbox", "subject", "category", "conf.", "done in the mailbox"):
        table.add_column(col, overflow="fold")
    per_cat: Counter[str] = Counter()
    for r in rows:
        provider = providers.get(r.mailbox, "")
        if r.status == Status.SKIPPED:
            table.add_row(short[r.mailbox], r.subject[:55], "(skipped)", "", r.skip_reason)
            per_cat["(skipped)"] += 1
            continue
        cat = r.category or ""
        per_cat[cat] += 1
        done = " + ".join(native(provider, a) for s, a, _ in r.actions if s == "applied")
        if r.status not in (Status.DONE,):
            done = f"[yellow]{r.status}[/yellow] {r.last_error[:60]}"
        unsure = names.get(r.decided_category, r.decided_category)
        table.add_row(
            short[r.mailbox],
            r.subject[:55],
            names.get(cat, cat) + (f" (unsure: {unsure}?)" if r.routed_to_review else ""),
            f"{r.confidence:.2f}" if r.confidence is not None else "",
            done,
        )
    console.print(table)
    summary = Table(title="per category")
    summary.add_column("category")
    summary.add_column("messages", justify="right")
    for cat, n in sorted(per_cat.items(), key=lambda kv: -kv[1]):
        summary.add_row(names.get(cat, cat), str(n))
    console.print(summary)
    scores = {
        address: summarise(
            [r for r in rows if r.mailbox == address], expected, settings.review_category
        )
        for address in short
    }
    line = classifier_line(settings, rows) + (f"; {detail}" if detail else "")
    console.print(f"classifier: {line}", highlight=False)
    for address, score in scores.items():
        if score.total:
            console.print(f"{short[address]}: {score.line()}", highlight=False)
    total = DemoScore.combine(scores.values())
    if total.total:
        console.print(
            f"both mailboxes: {total.line()}; unsure messages went to "
            f"{names[settings.review_category]!r} for a person to decide",
            highlight=False,
        )


def print_forwards(console: Console, graph: GraphEmulator, gmail: GmailEmulator) -> None:
    delivered: Counter[str] = Counter()
    for address in (
        "rh@atelier-dupont.fr",
        "compta@atelier-dupont.fr",
        "sav@atelier-dupont.fr",
        "commercial@atelier-dupont.fr",
    ):
        try:
            delivered[address] = len(graph.folder_messages(address, "Inbox"))
        except KeyError:
            continue
    sent = len(gmail.outbound())
    console.print(
        "forwards delivered to department inboxes (Graph): "
        + ", ".join(f"{a.split('@')[0]} {n}" for a, n in delivered.items())
        + f" · forwards sent from {GMAIL_BOX} (Gmail): {sent}",
        highlight=False,
    )


def demo_status(outcome: DemoOutcome) -> int:
    """Exit status: 0 when both passes ran and the second processed nothing."""
    failed = [r for r in outcome.first.values() if isinstance(r, Exception)]
    if failed or outcome.second_pass_processed:
        return 1
    lost = sum(
        r.count(Outcome.FAILED) + r.count(Outcome.GAVE_UP)
        for r in outcome.first.values()
        if isinstance(r, SyncReport)
    )
    return 1 if lost else 0
