"""Labelled examples: what the classifiers learn from (config, history, staff corrections).

The ledger stores them (short excerpts and embeddings, never full bodies unless
`store_text = true`); classifiers read them through the `ExampleSource` protocol so that
neither depends on the ledger.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

# How an example came to be; free text is allowed, these are the ones mailtriage writes.
SOURCE_CONFIG = "config"
SOURCE_HISTORY = "history"  # `mailtriage learn`: staff's own folders / labels
SOURCE_CORRECTION = "correction"  # staff moved a triaged message to another category
SOURCE_DATASET = "dataset"  # `mailtriage eval --k-shot`

# Excerpts are cut to this length before storage: enough to embed, little to leak.
EXCERPT_CHARS = 600


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled message.

    `embedding` is the L2-normalised vector computed by the embedder named `embedder`
    (None: not computed yet). A vector from another embedder is ignored and recomputed
    from `text_excerpt`, since vectors of two models do not share a space.
    """

    category: str
    text_excerpt: str
    embedding: list[float] | None = None
    source: str = SOURCE_CONFIG
    embedder: str = ""


@runtime_checkable
class ExampleSource(Protocol):
    """Where labelled examples come from (the ledger; a list in tests and eval)."""

    def examples_for(self, mailbox: str | None) -> list[Example]:
        """Every example that applies to `mailbox` (None: all mailboxes)."""
        ...

    def nearest(
        self, vector: Sequence[float], k: int, *, mailbox: str | None = None
    ) -> list[Example]:
        """The `k` examples whose embedding is most similar to `vector`, best first."""
        ...


class MemoryExampleSource:
    """An in-memory ExampleSource: eval k-shot splits, tests, previews.

    Examples are kept per mailbox; those added with `mailbox=None` apply everywhere.
    """

    def __init__(self, examples: Sequence[Example] = (), *, mailbox: str | None = None) -> None:
        self._by_mailbox: dict[str | None, list[Example]] = {}
        for ex in examples:
            self.add(ex, mailbox=mailbox)

    def add(self, example: Example, *, mailbox: str | None = None) -> None:
        key = mailbox.lower() if mailbox else None
        self._by_mailbox.setdefault(key, []).append(example)

    def examples_for(self, mailbox: str | None) -> list[Example]:
        out = list(self._by_mailbox.get(None, []))
        if mailbox:
            out += self._by_mailbox.get(mailbox.lower(), [])
        return out

    def nearest(
        self, vector: Sequence[float], k: int, *, mailbox: str | None = None
    ) -> list[Example]:
        dim = len(vector)
        candidates = [
            ex
            for ex in self.examples_for(mailbox)
            if ex.embedding is not None and len(ex.embedding) == dim
        ]
        if not candidates or k <= 0:
            return []
        matrix = np.asarray([ex.embedding for ex in candidates], dtype=np.float32)
        scores = matrix @ np.asarray(vector, dtype=np.float32)
        order = np.argsort(-scores, kind="stable")[:k]
        return [candidates[int(i)] for i in order]


class _ExampleRow(Protocol):
    category: str
    excerpt: str
    embedding: str | None  # JSON list of floats
    source: str


class _ExampleStore(Protocol):
    def examples(self, mailbox: str | None = None) -> Sequence[_ExampleRow]: ...

    def examples_stamp(self, mailbox: str | None = None) -> tuple[int, int]: ...


# Seconds between checks that another process (`mailtriage learn`) added examples.
REFRESH_S = 30.0


class LedgerExampleSource:
    """ExampleSource over the ledger's `examples` table (`Ledger.examples(mailbox)`).

    The ledger stores vectors without the model's name; they are taken to come from
    `embedder` (the configured backend). Rows are cached per mailbox, since every
    classification reads them: `invalidate()` after adding examples in this process;
    what another process adds (`mailtriage learn` beside the service) is noticed within
    `refresh_s` through a cheap count/max-id stamp.
    """

    def __init__(self, store: _ExampleStore, embedder: str, *, refresh_s: float = REFRESH_S):
        self.store = store
        self.embedder = embedder
        self.refresh_s = refresh_s
        # mailbox → (stamp, checked at, examples)
        self._cache: dict[str | None, tuple[tuple[int, int], float, list[Example]]] = {}

    def invalidate(self) -> None:
        self._cache.clear()

    def examples_for(self, mailbox: str | None) -> list[Example]:
        key = mailbox.lower() if mailbox else None
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[1] < self.refresh_s:
            return list(cached[2])
        stamp = self.store.examples_stamp(key)
        if cached is not None and cached[0] == stamp:
            self._cache[key] = (stamp, now, cached[2])
            return list(cached[2])
        examples = [self._example(row) for row in self.store.examples(key)]
        self._cache[key] = (stamp, now, examples)
        return list(examples)

    def nearest(
        self, vector: Sequence[float], k: int, *, mailbox: str | None = None
    ) -> list[Example]:
        return MemoryExampleSource(self.examples_for(mailbox)).nearest(vector, k)

    def _example(self, row: _ExampleRow) -> Example:
        vector = None
        if row.embedding:
            try:
                vector = [float(x) for x in json.loads(row.embedding)]
            except (ValueError, TypeError):
                vector = None  # recomputed from the excerpt
        return Example(
            category=row.category,
            text_excerpt=row.excerpt,
            embedding=vector,
            source=row.source,
            embedder=self.embedder if vector is not None else "",
        )


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """Collapse whitespace and cut `text` to `limit` characters."""
    return " ".join(text.split())[:limit]
