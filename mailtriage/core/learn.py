"""Learning from the staff's own sorting: history (`mailtriage learn`) and corrections.

A `Learner` turns a message and a category into a labelled example in the ledger: its
embedding and a short excerpt (subject and the opening of the cleaned text); the full
text only with `store_text = true`. The classifiers read those examples through the
Learner's `LedgerExampleSource`, which is invalidated whenever an example is added, so
the next similar message is decided with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from mailtriage.core.config import Settings
from mailtriage.core.embedded import message_text
from mailtriage.core.embedding import Embedder, get_embedder
from mailtriage.core.examples import (
    SOURCE_CORRECTION,
    SOURCE_HISTORY,
    LedgerExampleSource,
    excerpt,
)
from mailtriage.core.ledger import Ledger
from mailtriage.core.locations import category_of_location
from mailtriage.core.message import Message
from mailtriage.core.ports import Change, HistorySource, Mailbox

log = structlog.get_logger("mailtriage.learn")

# Characters of cleaned text kept after the subject in a stored excerpt.
EXCERPT_BODY_CHARS = 300


def example_excerpt(message: Message) -> str:
    """Subject and the first ~300 characters of the cleaned text, whitespace collapsed."""
    subject = " ".join(message.subject.split())
    return excerpt(f"{subject}\n{message.text}", len(subject) + 1 + EXCERPT_BODY_CHARS)


class Learner:
    """Adds labelled examples to the ledger and serves them to the classifiers."""

    def __init__(self, settings: Settings, ledger: Ledger, embedder: Embedder | None = None):
        self.settings = settings
        self.ledger = ledger
        self.embedder = embedder if embedder is not None else get_embedder(settings.embedded)
        self.source = LedgerExampleSource(ledger, self.embedder.name)

    def known_ids(self, mailbox: str) -> set[str]:
        """Provider ids already stored as examples for `mailbox`."""
        return {r.provider_id for r in self.ledger.examples(mailbox.lower()) if r.provider_id}

    def add(self, messages: Sequence[Message], category: str, source: str) -> int:
        """Embed `messages` in one batch and store them as examples of `category`."""
        if not messages:
            return 0
        # The vector is of the text the classifier embeds, so near-duplicates compare alike.
        vectors = self.embedder.encode([message_text(m) for m in messages])
        for message, vector in zip(messages, vectors, strict=True):
            self.ledger.add_example(
                message.mailbox.lower(),
                category,
                example_excerpt(message),
                source=source,
                provider_id=message.provider_id,
                embedding=[float(x) for x in vector],
                text_=message.text,
            )
        self.source.invalidate()
        return len(messages)

    async def on_correction(self, mailbox: Mailbox, change: Change, category: str) -> None:
        """The pipeline's correction hook: the moved message becomes an example."""
        message = await mailbox.fetch(change.provider_id)
        await asyncio.to_thread(self.add, [message], category, SOURCE_CORRECTION)
        log.info("correction learned", mailbox=mailbox.address, category=category)


@dataclass(slots=True)
class FolderResult:
    """One folder or label: what it maps to and what `learn` did with it."""

    location: str
    category: str | None
    read: int = 0
    added: int = 0
    known: int = 0  # already stored as examples


@dataclass(slots=True)
class LearnReport:
    mailbox: str
    folders: list[FolderResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def added(self) -> int:
        return sum(f.added for f in self.folders)

    @property
    def mapped(self) -> list[FolderResult]:
        return [f for f in self.folders if f.category is not None]

    @property
    def unmapped(self) -> list[str]:
        return [f.location for f in self.folders if f.category is None]


def map_folders(
    settings: Settings, address: str, locations: Sequence[str]
) -> dict[str, str | None]:
    """Folder/label → category key (None: none; the review category teaches nothing)."""
    out: dict[str, str | None] = {}
    for loc in locations:
        key = category_of_location(settings, address, loc)
        out[loc] = None if key == settings.review_category else key
    return out


async def learn_mailbox(
    settings: Settings,
    source: HistorySource,
    learner: Learner | None,
    *,
    per_folder: int = 50,
    dry_run: bool = False,
) -> LearnReport:
    """Read up to `per_folder` recent messages of every mapped folder and store them as
    examples (skipping those already stored). `dry_run` (or no learner) stores nothing,
    and then counts what would be added."""
    started = time.perf_counter()
    report = LearnReport(mailbox=source.address)
    mapping = map_folders(settings, source.address, await source.folders())
    known = learner.known_ids(source.address) if learner is not None else set()
    for location, key in sorted(mapping.items(), key=lambda kv: kv[0].lower()):
        result = FolderResult(location, key)
        report.folders.append(result)
        if key is None:
            continue
        messages = await source.sample(location, per_folder)
        result.read = len(messages)
        fresh = [m for m in messages if m.provider_id not in known]
        result.known = len(messages) - len(fresh)
        known.update(m.provider_id for m in fresh)
        if dry_run or learner is None:
            result.added = len(fresh)
            continue
        result.added = await asyncio.to_thread(learner.add, fresh, key, SOURCE_HISTORY)
    report.seconds = time.perf_counter() - started
    log.info("learned", mailbox=source.address, added=report.added, seconds=report.seconds)
    return report
