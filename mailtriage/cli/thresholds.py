"""Terminal views of routing evidence, shared by `eval` and `learn`: a risk-coverage
table, a reliability diagram and the recommended `min_confidence`."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from mailtriage.cli import console
from mailtriage.core.calibration import ReliabilityBin
from mailtriage.core.thresholds import (
    Recommendation,
    Scored,
    recommend,
    recommend_per_category,
    risk_coverage,
)

BAR = 30  # characters of a full reliability bar


def print_risk_coverage(scored: Sequence[Scored], current: float) -> None:
    table = Table(
        title="risk-coverage: mail at or above the threshold is routed, the rest reviewed"
    )
    for col in ("min_confidence", "routed", "messages routed", "precision on routed"):
        table.add_column(col, justify="right")
    for p in risk_coverage(scored):
        mark = " (configured)" if abs(p.threshold - current) < 1e-9 else ""
        table.add_row(
            f"{p.threshold:.2f}{mark}", f"{p.coverage:.0%}", str(p.routed), f"{p.precision:.3f}"
        )
    console.print(table)


def reliability_lines(bins: Sequence[ReliabilityBin]) -> list[str]:
    """One line per non-empty bin: a bar of its accuracy, '|' where its mean confidence
    falls (a calibrated model's bars end at their '|')."""
    lines = []
    for b in bins:
        if not b.count:
            continue
        filled = round(b.accuracy * BAR)
        bar = list("█" * filled + "·" * (BAR - filled))
        mark = min(BAR - 1, int(b.confidence * BAR))
        bar[mark] = "|"
        lines.append(
            f"{b.low:.1f}-{b.high:.1f} {''.join(bar)} accuracy {b.accuracy:.2f} "
            f"at confidence {b.confidence:.2f} (n={b.count})"
        )
    return lines


def print_reliability(
    bins: Sequence[ReliabilityBin], ece_raw: float | None, ece: float, model: str
) -> None:
    console.print("reliability diagram (bar: accuracy; |: mean confidence)", highlight=False)
    for line in reliability_lines(bins):
        console.print("  " + line, highlight=False)
    if ece_raw is not None:
        console.print(
            f"ECE before calibration {ece_raw:.3f}, after {ece:.3f} · {model}", highlight=False
        )
    else:
        console.print(f"ECE {ece:.3f} · {model}", highlight=False)


def recommendations(
    scored: Sequence[Scored], target: float, global_threshold: float
) -> list[Recommendation]:
    """The global recommendation, then per-category ones where the evidence supports them."""
    first = recommend(scored, target)
    base = first.threshold if first.threshold is not None else global_threshold
    return [first, *recommend_per_category(scored, target, base)]


def print_recommendations(
    scored: Sequence[Scored], target: float, global_threshold: float
) -> list[Recommendation]:
    recs = recommendations(scored, target, global_threshold)
    console.print(f"to reach precision {target:.2f} on routed mail:", highlight=False)
    for rec in recs:
        console.print("  " + rec.describe(), highlight=False, markup=False)
    glob = recs[0]
    if glob.threshold is not None:
        lines = [f"min_confidence = {glob.threshold:.2f}"]
        lines += [
            f'[[category]] key = "{r.category}" → min_confidence = {r.threshold:.2f}'
            for r in recs[1:]
        ]
        console.print("in mailtriage.toml: " + "; ".join(lines), highlight=False, markup=False)
    return recs
