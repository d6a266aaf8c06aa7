"""How the demo's decisions compare with the demo corpus's intended departments.

The summary line of `mailtriage demo`: agreement, review rate and precision on routed
mail, per mailbox and together, and which classifier decided at which threshold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailtriage.core.config import Settings
from mailtriage.core.ledger import Record, Status


@dataclass(frozen=True, slots=True)
class DemoScore:
    """How the demo's decisions compare with the corpus's intended departments.

    `total` counts messages with an intended department; `classified` those that reached
    a classifier (not skipped by a rule); `routed` those sent to a department (not review);
    `routed_right` the routed ones whose department is the intended one.
    """

    total: int = 0
    agreed: int = 0
    classified: int = 0
    to_review: int = 0
    routed: int = 0
    routed_right: int = 0

    @property
    def review_rate(self) -> float:
        return self.to_review / self.classified if self.classified else 0.0

    @property
    def precision(self) -> float:
        return self.routed_right / self.routed if self.routed else 1.0

    def line(self) -> str:
        return (
            f"agreement {self.agreed}/{self.total} ({self.agreed / self.total:.0%}) · "
            f"review {self.to_review}/{self.classified} ({self.review_rate:.0%}) · "
            f"precision on routed mail {self.precision:.2f} ({self.routed_right}/{self.routed})"
        )

    @staticmethod
    def combine(scores: Iterable[DemoScore]) -> DemoScore:
        parts = list(scores)
        return DemoScore(*(sum(getattr(s, f) for s in parts) for f in DemoScore.__slots__))


def summarise(rows: Sequence[Record], expected: dict[str, str], review: str) -> DemoScore:
    """Agreement, review rate and precision on routed mail of one mailbox's ledger rows."""
    total = agreed = classified = to_review = routed = routed_right = 0
    for r in rows:
        want = expected.get(f"{r.mailbox}|{r.internet_message_id}")
        if want is None:
            continue
        total += 1
        if r.status == Status.SKIPPED:
            agreed += want == "skip"
            continue
        classified += 1
        agreed += want == r.category
        if r.category == review:
            to_review += 1
        else:
            routed += 1
            routed_right += want == r.category
    return DemoScore(total, agreed, classified, to_review, routed, routed_right)


def classifier_line(settings: Settings, rows: Sequence[Record]) -> str:
    """Which classifier and model decided, and at which threshold."""
    used = Counter(
        f"{r.classifier} ({r.model})" if r.model else r.classifier
        for r in rows
        if r.status != Status.SKIPPED and r.classifier and r.classifier != "rule"
    )
    who = ", ".join(f"{name} x{n}" for name, n in used.most_common()) or "none"
    per_category = [
        f"{c.key} {c.min_confidence:.2f}"
        for c in settings.categories
        if c.min_confidence is not None
    ]
    threshold = f"min_confidence {settings.min_confidence:.2f}"
    if per_category:
        threshold += " (per category: " + ", ".join(per_category) + ")"
    return f"{who}; {threshold}"
