"""The offline classifier: cosine similarity between a message and category prototypes.

A category's prototype starts as the normalised mean of the embeddings of its name +
description and of each configured example; the labelled examples learned for the mailbox
(history, corrections, a k-shot train split) are averaged and blended in (see
PRIOR_EXAMPLES). The confidence is a softmax over the cosine similarities at
`embedded.temperature`, so the cascade and the planner can threshold it.

The review category is never a candidate: a "none of the above" description is not a
topic. Measured on the example config, as a candidate it won none of 14 test mails, not
even the four vague ones. Mail goes to review when the confidence is low (the planner
compares it with `min_confidence`); a fixed "resembles nothing" score in the softmax
(NONE_SIMILARITY) is what makes vague mail unsure.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mailtriage.core.config import Category, Settings
from mailtriage.core.decision import ConfidenceSource, Decision
from mailtriage.core.embedding import Embedder, Vectors, get_embedder, normalise
from mailtriage.core.examples import Example, ExampleSource, excerpt
from mailtriage.core.message import Message

# Characters of subject + body embedded per message: the opening says what a mail is about,
# and encoding time grows with length.
MAX_CHARS = 1000
# Learned examples are averaged apart from the configuration, then blended in with weight
# n / (n + PRIOR_EXAMPLES): the description counts like 8 examples, so a few noisy
# examples cannot drown it while a long history ends up dominating. (On support-tickets
# 8-shot, a plain mean of description and examples lost 3-4 accuracy points to zero-shot;
# this blend gained 1-3.)
PRIOR_EXAMPLES = 8
# A learned example this similar is the same kind of mail (same sender template, same
# request reworded): its category's score becomes that similarity, so one staff correction
# changes the next decision for such a message. At 0.9, near-duplicates in support-tickets
# (0.2-2% of mail) carried the right label 63-100% of the time; lower cut-offs hurt.
NEAR_DUPLICATE = 0.9
# The review option, made implicit: a pseudo-category at this fixed cosine joins the
# softmax, so a message that resembles no category (top cosine near the ~0.22 median of
# unrelated mail) gets a low confidence and goes to review, instead of a confident pick
# among poor matches. On support-tickets en zero-shot, at the 0.55 cascade threshold it
# cut the share of mail kept from 39% to 16% and raised accuracy on the kept share from
# 0.27 to 0.34; on the example config it sent 3 of 4 vague mails below 0.5.
NONE_SIMILARITY = 0.25
# Encoded learned-example texts kept in memory (examples without a stored vector).
_CACHE_LIMIT = 20_000


def message_text(message: Message, max_chars: int = MAX_CHARS) -> str:
    """Subject and cleaned body, whitespace collapsed, cut to `max_chars`."""
    text = " ".join(f"{message.subject}\n{message.text}".split())
    return text[:max_chars]


def category_text(category: Category) -> str:
    """What a category's description embeds as: its display name, then the description."""
    return f"{category.name}: {' '.join(category.description.split())}"


@dataclass(frozen=True, slots=True)
class _Prototypes:
    keys: list[str]
    names: list[str]
    matrix: Vectors  # (n_categories, dim), normalised rows
    learned: Vectors  # (n_examples, dim): learned examples, for near-duplicates
    learned_category: list[int]  # row of `matrix` each learned example belongs to


class EmbeddedClassifier:
    """Zero-shot and few-shot classification with a local sentence-embedding model."""

    name = "embedded"

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder | None = None,
        examples: ExampleSource | None = None,
        *,
        max_chars: int = MAX_CHARS,
    ) -> None:
        self.settings = settings
        self.embedder = embedder if embedder is not None else get_embedder(settings.embedded)
        self.examples = examples
        self.max_chars = max_chars
        self._lock = threading.Lock()
        # category key -> component vectors from the configuration (description, examples)
        self._config_vectors: dict[str, Vectors] = {}
        self._example_cache: dict[str, Vectors] = {}

    # -- public API ---------------------------------------------------------------------

    async def classify(self, message: Message) -> Decision:
        """Classify one message; the CPU-bound encoding runs off the event loop."""
        return (await asyncio.to_thread(self.classify_batch, [message]))[0]

    async def classify_many(self, messages: Sequence[Message]) -> list[Decision]:
        """Classify many messages in one batched encoding (eval and benchmarks)."""
        return await asyncio.to_thread(self.classify_batch, list(messages))

    def classify_batch(self, messages: Sequence[Message]) -> list[Decision]:
        """Synchronous batch classification, in input order."""
        if not messages:
            return []
        started = time.perf_counter()
        vectors = self.embed(messages)
        per_message_ms = (time.perf_counter() - started) * 1000 / len(messages)
        decisions: list[Decision] = []
        prototypes: dict[str | None, _Prototypes] = {}
        for message, vector in zip(messages, vectors, strict=True):
            key = message.mailbox.lower() if message.mailbox else None
            if key not in prototypes:
                prototypes[key] = self.prototypes(message.mailbox)
            decisions.append(self._decide(prototypes[key], vector, per_message_ms))
        return decisions

    def embed(self, messages: Sequence[Message]) -> Vectors:
        """The normalised vectors of `messages` (as the classifier sees them)."""
        return self.embedder.encode([message_text(m, self.max_chars) for m in messages])

    def prototypes(self, mailbox: str | None) -> _Prototypes:
        """One normalised prototype per candidate category of `mailbox`."""
        candidates = [
            c
            for c in self.settings.categories_for(mailbox)
            if c.key != self.settings.review_category
        ]
        learned = self._learned_vectors(mailbox, {c.key for c in candidates})
        rows = []
        learned_rows: list[Vectors] = []
        learned_category: list[int] = []
        for i, category in enumerate(candidates):
            row = normalise(self._category_vectors(category).mean(axis=0))[0]
            if category.key in learned:
                vectors = learned[category.key]
                weight = len(vectors) / (len(vectors) + PRIOR_EXAMPLES)
                row = row + weight * normalise(vectors.mean(axis=0))[0]
                learned_rows.append(vectors)
                learned_category += [i] * len(vectors)
            rows.append(row)
        dim = self.embedder.dim
        return _Prototypes(
            keys=[c.key for c in candidates],
            names=[c.name for c in candidates],
            matrix=normalise(np.asarray(rows)) if rows else np.zeros((0, dim), np.float32),
            learned=np.concatenate(learned_rows)
            if learned_rows
            else np.zeros((0, dim), np.float32),
            learned_category=learned_category,
        )

    # -- internals ----------------------------------------------------------------------

    def _decide(self, protos: _Prototypes, vector: Vectors, latency_ms: float) -> Decision:
        model = self.embedder.name
        if not protos.keys:
            return Decision(
                category=self.settings.review_category,
                confidence=0.0,
                reason="no category to compare with",
                classifier=self.name,
                model=model,
                confidence_source=ConfidenceSource.SIMILARITY,
                latency_ms=latency_ms,
            )
        sims = protos.matrix @ vector
        near: set[int] = set()
        if protos.learned_category:
            example_sims = protos.learned @ vector
            for j in np.flatnonzero(example_sims >= NEAR_DUPLICATE):
                row = protos.learned_category[int(j)]
                if example_sims[j] > sims[row]:
                    sims[row] = example_sims[j]
                    near.add(row)
        probs = softmax(np.append(sims, NONE_SIMILARITY), self.settings.embedded.temperature)
        order = np.argsort(-sims, kind="stable")
        best = int(order[0])
        reason = f"closest to {protos.names[best]} (cosine {sims[best]:.2f}"
        if len(order) > 1:
            second = int(order[1])
            reason += f"; next {protos.names[second]} {sims[second]:.2f}"
        reason += "; a near-duplicate of a learned example)" if best in near else ")"
        return Decision(
            category=protos.keys[best],
            confidence=round(float(probs[best]), 4),
            reason=reason,
            classifier=self.name,
            model=model,
            confidence_source=ConfidenceSource.SIMILARITY,
            latency_ms=latency_ms,
        )

    def _category_vectors(self, category: Category) -> Vectors:
        with self._lock:
            cached = self._config_vectors.get(category.key)
        if cached is None:
            cached = self.embedder.encode([category_text(category), *category.examples])
            with self._lock:
                self._config_vectors[category.key] = cached
        return cached

    def _learned_vectors(self, mailbox: str | None, keys: set[str]) -> dict[str, Vectors]:
        if self.examples is None:
            return {}
        examples = [ex for ex in self.examples.examples_for(mailbox) if ex.category in keys]
        vectors = self._example_vectors(examples)
        grouped: dict[str, list[Vectors]] = {}
        for ex, vec in zip(examples, vectors, strict=True):
            grouped.setdefault(ex.category, []).append(vec)
        return {key: np.asarray(vecs, dtype=np.float32) for key, vecs in grouped.items()}

    def _example_vectors(self, examples: Sequence[Example]) -> list[Vectors]:
        """Stored vectors when they come from this embedder, else encoded once and cached."""
        name = self.embedder.name

        def stored(ex: Example) -> bool:
            return ex.embedding is not None and ex.embedder == name

        needed = {ex.text_excerpt for ex in examples if not stored(ex)}
        with self._lock:
            known = {t: self._example_cache[t] for t in needed if t in self._example_cache}
        missing = sorted(needed - known.keys())
        if missing:
            fresh = dict(zip(missing, self.embedder.encode(missing), strict=True))
            known.update(fresh)
            with self._lock:
                if len(self._example_cache) + len(fresh) > _CACHE_LIMIT:
                    self._example_cache.clear()
                self._example_cache.update(fresh)
        out = []
        for ex in examples:
            if ex.embedding is not None and ex.embedder == name:
                out.append(normalise(ex.embedding)[0])
            else:
                out.append(known[ex.text_excerpt])
        return out


def softmax(scores: Vectors, temperature: float) -> Vectors:
    """Numerically stable softmax of `scores / temperature`."""
    z = scores.astype(np.float64) / temperature
    z -= z.max()
    e = np.exp(z)
    out: Vectors = (e / e.sum()).astype(np.float32)
    return out


def example_from_message(
    message: Message, category: str, source: str, embedder: Embedder | None = None
) -> Example:
    """A labelled example from a message: a short excerpt, and its vector when an embedder
    is given (the ledger stores both; the body itself is not kept)."""
    text = message_text(message)
    vector = None
    if embedder is not None:
        vector = [float(x) for x in embedder.encode([text])[0]]
    return Example(
        category=category,
        text_excerpt=excerpt(text),
        embedding=vector,
        source=source,
        embedder=embedder.name if embedder is not None else "",
    )


def nearest_examples(
    source: ExampleSource, embedder: Embedder, message: Message, k: int
) -> list[Example]:
    """The `k` learned examples closest to `message`: the LLM's few-shot hook."""
    if k <= 0:
        return []
    vector = embedder.encode([message_text(message)])[0]
    return source.nearest([float(x) for x in vector], k, mailbox=message.mailbox)


def few_shot_hook(
    source: ExampleSource, embedder: Embedder, k: int
) -> Callable[[Message], Awaitable[list[tuple[str, str]]]]:
    """The LLM classifier's `examples_for` hook: the `k` nearest (excerpt, key) pairs,
    computed off the event loop."""

    async def examples_for(message: Message) -> list[tuple[str, str]]:
        found = await asyncio.to_thread(nearest_examples, source, embedder, message, k)
        return [(ex.text_excerpt, ex.category) for ex in found]

    return examples_for
