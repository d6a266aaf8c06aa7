"""The model of one mailbox for the embedded classifier: pure functions of vectors.

Zero-shot, a category's prototype is the normalised mean of the embeddings of its name +
description and of each configured example; the confidence is a softmax over the cosines
at the model's temperature (see `SimilarityProfile`), with a fixed "resembles nothing"
option (none_similarity) so that vague mail comes out unsure.

With labelled examples learned for the mailbox (history, corrections, a k-shot split),
two scorers compete, and the mailbox's own examples decide between them:

- prototypes: the learned examples are averaged and blended into each prototype
  (PRIOR_EXAMPLES);
- a linear head (core/head.py): a multinomial logistic regression on the embeddings,
  anchored to the prototypes, so categories with few examples keep their description.

Once there are MIN_CALIBRATION learned examples, both are cross-validated on them
(CV_FOLDS folds); each one's temperature is fitted to its held-out predictions (core/
calibration.py) and the more accurate scorer is used, its confidence calibrated: 0.8 then
means about 80 % right on this mailbox's kind of mail. The held-out predictions are kept
(`CategoryModel.held_out`) so that `learn` and `eval` can say which `min_confidence`
reaches a precision target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from mailtriage.core.calibration import cross_validated_logits, fit_temperature, nll
from mailtriage.core.embedding import SimilarityProfile, Vectors, normalise
from mailtriage.core.head import Array, Head, fit_head, prototype_head, softmax_rows, standardiser
from mailtriage.core.thresholds import Scored

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
