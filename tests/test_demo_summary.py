"""The demo's summary line: agreement, review rate, precision on routed mail, by hand."""

from __future__ import annotations

from datetime import UTC, datetime

from mailtriage.core.config import parse_settings
from mailtriage.core.ledger import Record, Status
from mailtriage.sandbox.demo_score import DemoScore, classifier_line, summarise

BOX = "contact@example.fr"


def record(mid: str, status: str, category: str | None, classifier: str = "embedded") -> Record:
    return Record(
        id=0, mailbox=BOX, provider_id=mid, current_provider_id=mid, internet_message_id=mid,
        subject="", sender="", status=status, skip_reason="", category=category,
        decided_category=category or "", confidence=0.9, reason="", classifier=classifier,
        model="e5", attempts=1, last_error="", routed_to_review=category == "review",
        dry_run=False, updated_at=datetime.now(UTC), actions=(),
    )  # fmt: skip


def test_summary_counts_by_hand() -> None:
    expected = {f"{BOX}|{m}": want for m, want in [
        ("a", "rh"), ("b", "rh"), ("c", "clients"), ("d", "review"), ("e", "skip"), ("f", "devis"),
    ]}  # fmt: skip
    rows = [
        record("a", Status.DONE, "rh"),  # routed, right
        record("b", Status.DONE, "clients"),  # routed, wrong
        record("c", Status.DONE, "review"),  # reviewed (intended clients)
        record("d", Status.DONE, "review"),  # reviewed, as intended
        record("e", Status.SKIPPED, None, classifier="rule"),  # skipped, as intended
        record("f", Status.DONE, "devis"),  # routed, right
        record("z", Status.DONE, "rh"),  # not in the corpus: ignored
    ]
    score = summarise(rows, expected, "review")
    assert score == DemoScore(total=6, agreed=4, classified=5, to_review=2, routed=3,
                              routed_right=2)  # fmt: skip
    assert score.review_rate == 2 / 5 and score.precision == 2 / 3
    assert score.line() == (
        "agreement 4/6 (67%) · review 2/5 (40%) · precision on routed mail 0.67 (2/3)"
    )
    both = DemoScore.combine([score, score])
    assert (both.total, both.routed_right) == (12, 4)


def test_classifier_line_names_model_and_thresholds() -> None:
    settings = parse_settings({
        "min_confidence": 0.6,
        "category": [
            {"key": "rh", "name": "RH", "description": "rh", "min_confidence": 0.8},
            {"key": "review", "name": "R", "description": "r"},
        ],
    })  # fmt: skip
    rows = [record("a", Status.DONE, "rh"), record("e", Status.SKIPPED, None, "rule")]
    assert classifier_line(settings, rows) == (
        "embedded (e5) x1; min_confidence 0.60 (per category: rh 0.80)"
    )
