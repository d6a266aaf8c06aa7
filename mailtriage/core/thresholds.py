"""Choosing `min_confidence` from evidence: risk-coverage and a recommended threshold.

Each labelled message the classifier has seen gives a (confidence, predicted, right)
triple. For a threshold t, mail at or above t is routed and the rest goes to review:
`coverage` is the share routed, `precision` the share of routed mail that went to the
right department. The recommended threshold is the lowest one whose precision on routed
mail reaches the target (lowest: it leaves the most mail routed). A per-category
threshold is recommended only where that category has enough routed predictions to
measure (MIN_CATEGORY_SUPPORT) and needs a different one than the global threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Thresholds shown in the risk-coverage table.
TABLE_THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# Fewest routed predictions of a category before its own threshold is recommended: below
# this, one message more or less moves its precision by several points.
MIN_CATEGORY_SUPPORT = 20


@dataclass(frozen=True, slots=True)
class Scored:
    """One labelled prediction."""

    predicted: str
    gold: str
    confidence: float

    @property
    def correct(self) -> bool:
        return self.predicted == self.gold


@dataclass(frozen=True, slots=True)
class CoveragePoint:
    threshold: float
    routed: int
    total: int
    right: int

    @property
    def coverage(self) -> float:
        return self.routed / self.total if self.total else 0.0

    @property
    def precision(self) -> float:
        """Share of routed predictions that were right (1.0 when nothing is routed)."""
        return self.right / self.routed if self.routed else 1.0


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The lowest threshold reaching `target` precision on routed mail, or None."""

    target: float
    threshold: float | None
    point: CoveragePoint | None
    category: str | None = None  # None: the global threshold

    def describe(self) -> str:
        scope = f"category {self.category}" if self.category else "min_confidence"
        if self.threshold is None or self.point is None:
            return f"{scope}: no threshold reaches precision {self.target:.2f} on this history"
        return (
            f"{scope} = {self.threshold:.2f}: precision {self.point.precision:.3f} on routed "
            f"mail ({self.point.right}/{self.point.routed}), routes {self.point.coverage:.0%} "
            f"of {self.point.total} messages, the rest goes to review"
        )


def point(scored: Sequence[Scored], threshold: float) -> CoveragePoint:
    routed = [s for s in scored if s.confidence >= threshold]
    return CoveragePoint(threshold, len(routed), len(scored), sum(s.correct for s in routed))


def risk_coverage(
    scored: Sequence[Scored], thresholds: Sequence[float] = TABLE_THRESHOLDS
) -> list[CoveragePoint]:
    """Coverage and precision on routed mail at each threshold."""
    return [point(scored, t) for t in thresholds]


def candidate_thresholds(scored: Sequence[Scored]) -> list[float]:
    """Every distinct confidence, rounded down to 2 decimals (a config value), ascending.

    The lowest candidate is the lowest confidence seen, not 0: below it the history says
    nothing (a two-category classifier is never under 0.5), and "0.00" would read as
    "route everything, however unsure"."""
    return sorted({int(s.confidence * 100) / 100 for s in scored})


def recommend(scored: Sequence[Scored], target: float, *, min_routed: int = 1) -> Recommendation:
    """The lowest 2-decimal threshold whose precision on routed mail is at least `target`
    with at least `min_routed` messages routed."""
    for t in candidate_thresholds(scored):
        p = point(scored, t)
        if p.routed >= min_routed and p.precision >= target:
            return Recommendation(target, t, p)
    return Recommendation(target, None, None)


def recommend_per_category(
    scored: Sequence[Scored],
    target: float,
    global_threshold: float,
    *,
    min_support: int = MIN_CATEGORY_SUPPORT,
) -> list[Recommendation]:
    """Per predicted category, its own threshold where the evidence supports one.

    A category qualifies when at least `min_support` of its predictions are routed at its
    threshold, and that threshold differs from `global_threshold`.
    """
    out = []
    for category in sorted({s.predicted for s in scored}):
        mine = [s for s in scored if s.predicted == category]
        rec = recommend(mine, target, min_routed=min_support)
        if rec.threshold is not None and abs(rec.threshold - global_threshold) >= 0.01:
            out.append(Recommendation(target, rec.threshold, rec.point, category))
    return out
