"""What `mailtriage learn` buys: embedded accuracy before and after learning from folders.

The demo corpus (hand-written French/English mail of the example config's departments) is
split per category: every other message is pre-sorted by "staff" into the category's
folder of a `GraphEmulator` mailbox (the history), the rest is held out. The held-out
mail is classified by the embedded classifier zero-shot, then `learn` reads the folders
through msgraph-sdk into a SQLite ledger, and the same mail is classified again with the
learned examples. Prints accuracy before/after, learn throughput and Graph requests.

    .venv/bin/python bench/learn_e2e.py [--per-folder 50]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mailtriage.connectors.graph import GraphMailbox
from mailtriage.core import logs
from mailtriage.core.embedded import EmbeddedClassifier
from mailtriage.core.embedding import get_embedder
from mailtriage.core.learn import Learner, learn_mailbox
from mailtriage.core.ledger import Ledger
from mailtriage.core.message import Message
from mailtriage.core.text import clean_body
from mailtriage.core.thresholds import recommend
from mailtriage.sandbox.demo_corpus import DEMO_MAILS, DemoMail, render_body
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.graph.config import sandbox_settings

BOX = "contact@atelier-dupont.fr"


def body_of(mail: DemoMail, when: datetime) -> tuple[str, bool]:
    body = render_body(mail, to=BOX, date=when)
    html = not body.strip() and bool(mail.html)
    return (mail.html or "") if html else body, html


def accuracy(classifier: EmbeddedClassifier, held_out: list[tuple[Message, str]]) -> float:
    decisions = classifier.classify_batch([m for m, _ in held_out])
    return sum(d.category == want for d, (_, want) in zip(decisions, held_out, strict=True)) / len(
        held_out
    )


async def main(per_folder: int) -> None:
    console = Console()
    logs.configure(level="WARNING")
    with GraphEmulator() as emu, tempfile.TemporaryDirectory() as tmp:
        emu.add_mailbox(BOX)
        settings = sandbox_settings(
            emu.base_url,
            [BOX],
            classifier="embedded",
            state={"url": f"sqlite:///{Path(tmp) / 'learn.db'}"},
        )
        folders = {c.key: c.actions.move_to for c in settings.categories if c.actions.move_to}
        now = datetime.now(UTC)
        by_category: dict[str, list[DemoMail]] = defaultdict(list)
        for mail in DEMO_MAILS:
            if mail.expected in folders:
                by_category[mail.expected].append(mail)
        held_out: list[tuple[Message, str]] = []
        history = 0
        for key, mails in by_category.items():
            for i, mail in enumerate(mails):
                when = now - timedelta(days=30 - i)
                body, html = body_of(mail, when)
                if i % 2 == 0:
                    emu.deliver(
                        BOX,
                        subject=mail.subject,
                        body=body,
                        html=html,
                        sender=mail.sender,
                        received=when,
                        folder=f"Inbox/{folders[key]}",
                    )
                    history += 1
                else:
                    text = clean_body(body, html=html, subject=mail.subject)
                    msg = Message(
                        mailbox=BOX, provider_id=mail.key, subject=mail.subject, text=text
                    )
                    held_out.append((msg, key))
        embedder = get_embedder(settings.embedded)
        zero_shot = EmbeddedClassifier(settings, embedder)
        before = accuracy(zero_shot, held_out)  # also loads the model: not in learn's time

        ledger = Ledger(settings.state.url)
        learner = Learner(settings, ledger, embedder)
        box = GraphMailbox.from_settings(settings, settings.mailboxes[0], ledger)
        requests = emu.count()
        started = time.perf_counter()
        try:
            report = await learn_mailbox(settings, box, learner, per_folder=per_folder)
        finally:
            await box.aclose()
        seconds = time.perf_counter() - started
        used = emu.count() - requests
        learned = EmbeddedClassifier(settings, embedder, learner.source)
        after = accuracy(learned, held_out)
        model = learned.model(BOX)
        advice = recommend(model.held_out, 0.95).describe() if model.held_out else "-"

    table = Table(title=f"learn from Graph folders: demo corpus, {len(held_out)} held-out mails")
    for col in ("measure", "value"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    table.add_row("history messages in category folders", str(history))
    table.add_row("examples added by learn", str(report.added))
    table.add_row("learn wall time (s)", f"{seconds:.2f}")
    table.add_row("learn throughput (messages/s)", f"{report.added / seconds:.1f}")
    table.add_row("Graph requests", str(used))
    table.add_row("embedded accuracy, zero-shot", f"{before:.3f}")
    table.add_row("embedded accuracy, after learn", f"{after:.3f}")
    table.add_row("model after learn", model.describe())
    table.add_row("threshold for precision 0.95 (history, cross-validated)", advice)
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-folder", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.per_folder))
