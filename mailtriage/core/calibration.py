"""Calibrated confidence: temperature scaling fitted on held-out predictions, and ECE.

A classifier's raw confidence (a softmax over similarities or logits) ranks messages but
is not a probability: 0.8 may be right 95 % of the time in one mailbox and 60 % in
another. Temperature scaling (Guo et al., 2017) divides the logits by one number fitted
to minimise the negative log-likelihood of labelled messages the model did not train on
(cross-validated folds of the mailbox's own examples), so that the confidence comes close
to the share of right answers. It changes no decision, only the confidence.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mailtriage.core.head import Array, softmax_rows

# Temperatures searched: e5 cosines need ~0.01, a head's logits ~1-10.
MIN_TEMPERATURE = 0.001
MAX_TEMPERATURE = 100.0


def nll(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    temperature: float = 1.0,
    smoothing: float = 0.0,
) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature);
    with `smoothing` e, against targets 1 - e on the label and e / (k - 1) elsewhere."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    y = np.asarray(labels, dtype=np.int64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    gold = log_probs[np.arange(len(y)), y]
    if smoothing <= 0 or z.shape[1] < 2:
        return float(-gold.mean())
    others = (log_probs.sum(axis=1) - gold) / (z.shape[1] - 1)
    return float(-((1 - smoothing) * gold + smoothing * others).mean())


def fit_temperature(logits: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """The temperature minimising the NLL (golden-section search on its logarithm).

    The NLL is convex in 1/temperature, hence unimodal on a log scale. Targets are
    smoothed by 1 / (n + 2) (Laplace's rule of succession): held-out predictions that are
    all right, as 20 easy examples can be, would otherwise drive the temperature to zero
    and every confidence to 1.0. With no data the answer is 1 (no change).
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.shape[0] == 0:
        return 1.0
    eps = 1.0 / (z.shape[0] + 2)
    lo, hi = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(z, labels, math.exp(a), eps), nll(z, labels, math.exp(b), eps)
    for _ in range(80):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(z, labels, math.exp(a), eps)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(z, labels, math.exp(b), eps)
    return math.exp((lo + hi) / 2)


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """Predictions whose confidence fell in [low, high): how many, how sure, how right."""

    low: float
    high: float
    count: int
    confidence: float  # mean confidence in the bin (0 when empty)
    accuracy: float  # share of right predictions in the bin (0 when empty)


def reliability(
    confidence: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> list[ReliabilityBin]:
    """Equal-width confidence bins over [0, 1] (the last one includes 1.0)."""
    conf = np.asarray(confidence, dtype=np.float64)
    right = np.asarray(correct, dtype=np.float64)
    index = np.minimum((conf * bins).astype(np.int64), bins - 1)
    out = []
    for i in range(bins):
        mask = index == i
        n = int(mask.sum())
        out.append(
            ReliabilityBin(
                low=i / bins,
                high=(i + 1) / bins,
                count=n,
                confidence=float(conf[mask].mean()) if n else 0.0,
                accuracy=float(right[mask].mean()) if n else 0.0,
            )
        )
    return out


def expected_calibration_error(
    confidence: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> float:
    """ECE: the bins' |accuracy - confidence| weighted by their share of predictions."""
    n = len(confidence)
    if n == 0:
        return 0.0
    return sum(
        b.count / n * abs(b.accuracy - b.confidence) for b in reliability(confidence, correct, bins)
    )


def stratified_folds(labels: Sequence[int], folds: int, seed: int = 0) -> list[int]:
    """A fold number per item, each label dealt round-robin over the folds after a shuffle."""
    rng = random.Random(seed)
    fold = [0] * len(labels)
    by_label: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_label.setdefault(int(y), []).append(i)
    offset = 0
    for y in sorted(by_label):
        ids = by_label[y]
        rng.shuffle(ids)
        for j, i in enumerate(ids):
            fold[i] = (offset + j) % folds
        offset += len(ids)
    return fold


def cross_validated_logits(
    fit_predict: Callable[[Array, Array, Array], Array],
    vectors: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    folds: int = 5,
    seed: int = 0,
) -> Array:
    """Held-out logits for every item: `fit_predict(train_x, train_y, test_x)` per fold."""
    x = np.asarray(vectors, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    assignment = np.asarray(stratified_folds(list(y), folds, seed))
    out: Array | None = None
    for f in range(folds):
        test = assignment == f
        if not test.any():
            continue
        logits = fit_predict(x[~test], y[~test], x[test])
        if out is None:
            out = np.zeros((len(y), logits.shape[1]))
        out[test] = logits
    return out if out is not None else np.zeros((0, 0))


def calibrated(logits: npt.ArrayLike, temperature: float) -> Array:
    """Probabilities softmax(logits / temperature)."""
    return softmax_rows(np.asarray(logits, dtype=np.float64) / temperature)
