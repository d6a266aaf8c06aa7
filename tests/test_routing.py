"""The learned head, calibration, thresholds and per-category thresholds: figures checked
against hand-computed values or exact properties (the optimum's gradient is zero)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from mailtriage.core.calibration import (
    cross_validated_logits,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability,
    stratified_folds,
)
from mailtriage.core.config import parse_settings
from mailtriage.core.decision import ConfidenceSource, Decision
from mailtriage.core.embedded import (
    MIN_CALIBRATION,
    EmbeddedClassifier,
    build_model,
)
from mailtriage.core.embedding import DEFAULT_PROFILE
from mailtriage.core.examples import Example, MemoryExampleSource
from mailtriage.core.head import Head, fit_head, prototype_head, softmax_rows, standardiser
from mailtriage.core.message import Message
from mailtriage.core.planner import effective_category
from mailtriage.core.thresholds import (
    Scored,
    recommend,
    recommend_per_category,
    risk_coverage,
)
from tests.embedders import KeywordEmbedder

# -- calibration ----------------------------------------------------------------------------


def test_nll_of_a_coin_is_log_two() -> None:
    assert nll([[0.0, 0.0]], [0]) == pytest.approx(math.log(2))
    assert nll([[2.0, 0.0]], [0], temperature=2.0) == pytest.approx(math.log(1 + math.exp(-1)))


def test_fitted_temperature_matches_the_observed_accuracy() -> None:
    # Four identical predictions with logit gap 2, right 3 times out of 4. Targets smoothed
    # by 1/(4+2): class 0's mean target is (3 * 5/6 + 1/6) / 4 = 2/3, so the NLL is
    # minimal where sigmoid(2 / T) = 2/3, i.e. T = 2 / ln 2.
    logits = [[2.0, 0.0]] * 4
    labels = [0, 0, 0, 1]
    assert fit_temperature(logits, labels) == pytest.approx(2 / math.log(2), rel=1e-4)
    assert fit_temperature(np.zeros((0, 2)), []) == 1.0
    # All right (separable): the temperature stays finite, the confidence below 1.
    t = fit_temperature([[3.0, 0.0]] * 8, [0] * 8)
    assert 1 / (1 + math.exp(-3 / t)) == pytest.approx(1 - 1 / 10, rel=1e-3)
    assert nll([[0.0, 0.0]], [0], smoothing=0.5) == pytest.approx(math.log(2))


def test_ece_and_reliability_bins_by_hand() -> None:
    conf = [0.95, 0.95, 0.65, 0.65, 1.0]
    right = [True, False, True, True, True]
    bins = reliability(conf, right, bins=10)
    assert [b.count for b in bins] == [0, 0, 0, 0, 0, 0, 2, 0, 0, 3]  # 1.0 is in the last bin
    last = bins[9]
    assert last.confidence == pytest.approx((0.95 + 0.95 + 1.0) / 3)
    assert last.accuracy == pytest.approx(2 / 3)
    # |1 - 0.65| * 2/5 + |2/3 - 0.9667| * 3/5
    expected = 0.35 * 2 / 5 + abs(2 / 3 - 2.9 / 3) * 3 / 5
    assert expected_calibration_error(conf, right) == pytest.approx(expected)
    assert expected_calibration_error([], []) == 0.0


def test_folds_are_stratified_and_cross_validation_never_sees_the_test_item() -> None:
    labels = [0] * 5 + [1] * 5
    folds = stratified_folds(labels, 5, seed=3)
    for f in range(5):
        assert sorted(labels[i] for i in range(10) if folds[i] == f) == [0, 1]
    x = np.arange(10, dtype=float)[:, None]

    def fit_predict(tx: np.ndarray, ty: np.ndarray, test: np.ndarray) -> np.ndarray:
        # column 0: how many training rows; column 1: whether a test row was trained on
        seen = np.isin(test[:, 0], tx[:, 0]).astype(float)
        return np.column_stack([np.full(len(test), len(tx)), seen])

    held = cross_validated_logits(fit_predict, x, labels, folds=5)
    assert held[:, 0].tolist() == [8.0] * 10
    assert held[:, 1].tolist() == [0.0] * 10


# -- the head -------------------------------------------------------------------------------


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    y = np.repeat(np.arange(3), 12)
    x = centres[y] + 0.15 * rng.standard_normal((36, 3))
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def test_prototype_head_reproduces_the_prototype_logits() -> None:
    x, _ = _blobs()
    protos = np.eye(3)
    mean, scale = standardiser(x)
    head = prototype_head(protos, 0.05, mean, scale)
    np.testing.assert_allclose(head.logits(x), x @ protos.T / 0.05, atol=1e-9)


def test_fitted_head_is_the_optimum_of_its_objective() -> None:
    x, y = _blobs()
    mean, scale = standardiser(x)
    prior = prototype_head(np.eye(3) * 0.2, 1.0, mean, scale)
    head = fit_head(x, y, prior, prior_strength=2.0, max_iter=5000, tol=1e-12)
    # Gradient of mean CE + (s / n) / 2 * |theta - theta0|^2 at the solution.
    z = (x - mean) / scale
    za = np.hstack([z, np.ones((len(z), 1))])
    theta = np.hstack([head.weights, head.bias[:, None]])
    theta0 = np.hstack([prior.weights, prior.bias[:, None]])
    onehot = np.eye(3)[y]
    grad = (softmax_rows(za @ theta.T) - onehot).T @ za / len(y) + 2.0 / len(y) * (theta - theta0)
    assert np.abs(grad).max() < 1e-6
    assert (head.logits(x).argmax(axis=1) == y).all()
    # A warm start lands on the same optimum (the objective is strictly convex).
    again = fit_head(x, y, prior, prior_strength=2.0, init=head, max_iter=5000, tol=1e-12)
    np.testing.assert_allclose(again.weights, head.weights, atol=1e-5)


def test_a_strong_prior_keeps_the_prior_and_no_data_returns_it() -> None:
    x, y = _blobs()
    mean, scale = standardiser(x)
    prior = prototype_head(np.eye(3), 0.5, mean, scale)
    stiff = fit_head(x, y, prior, prior_strength=1e6)
    np.testing.assert_allclose(stiff.weights, prior.weights, atol=1e-2)
    assert fit_head(np.zeros((0, 3)), [], prior) is prior


def test_build_model_calibrates_on_learned_examples_and_keeps_held_out_predictions() -> None:
    x, y = _blobs()
    config = [np.eye(3)[i : i + 1].astype(np.float32) for i in range(3)]
    model = build_model(["a", "b", "c"], ["A", "B", "C"], config, x, y.tolist(), DEFAULT_PROFILE)
    assert len(y) >= MIN_CALIBRATION
    assert model.calibrated_on == len(y) and model.calibrated_from == "learned"
    assert len(model.held_out) == len(y)
    assert set(model.log_loss) == {"prototypes", "head"}
    best = max(model.accuracy.values())
    assert model.accuracy[model.kind] == best
    assert model.log_loss[model.kind] == min(
        v for k, v in model.log_loss.items() if model.accuracy[k] == best
    )
    probs = model.probabilities(x)
    assert probs.shape == (36, 3)
    assert (probs.argmax(axis=1) == y).mean() > 0.9
    few = build_model(["a", "b", "c"], ["A", "B", "C"], config, x[:3], y[:3].tolist(),
                      DEFAULT_PROFILE)  # fmt: skip
    assert few.calibrated_on == 0 and few.temperature == DEFAULT_PROFILE.temperature


def test_forced_scorer_is_used() -> None:
    x, y = _blobs()
    config = [np.eye(3)[i : i + 1].astype(np.float32) for i in range(3)]
    head_only = build_model("abc", "ABC", config, x, y.tolist(), DEFAULT_PROFILE, scorers=["head"])
    assert head_only.kind == "head" and isinstance(head_only.head, Head)
    protos = build_model("abc", "ABC", config, x, y.tolist(), DEFAULT_PROFILE,
                         scorers=["prototypes"])  # fmt: skip
    assert protos.kind == "prototypes" and protos.head is None


CONFIG = {
    "review_category": "review",
    "min_confidence": 0.5,
    "category": [
        {"key": "invoice", "name": "Invoice", "description": "invoice",
         "examples": ["invoice due", "invoice attached", "pay the invoice", "invoice 12",
                      "invoice reminder", "our invoice", "invoice overdue", "invoice copy"]},
        {"key": "job", "name": "Job", "description": "job",
         "examples": ["job application", "job offer", "apply for the job", "job cv",
                      "job interview", "a job", "job posting", "student job"],
         "min_confidence": 0.9},
        {"key": "review", "name": "Review", "description": "anything else"},
    ],
}  # fmt: skip


def test_classifier_calibrates_on_configuration_then_on_learned_examples_and_rebuilds() -> None:
    settings = parse_settings(CONFIG)
    embedder = KeywordEmbedder(["invoice", "job", "due", "apply"])
    source = MemoryExampleSource()
    clf = EmbeddedClassifier(settings, embedder, source)
    first = clf.model(None)
    assert first.calibrated_from == "configuration" and first.calibrated_on == 16
    assert clf.model(None) is first  # cached while nothing changed
    for i in range(10):
        source.add(Example("invoice", f"invoice number {i} due"))
        source.add(Example("job", f"job application {i}"))
    second = clf.model(None)
    assert second is not first
    assert second.calibrated_from == "learned" and second.calibrated_on == 20
    (decision,) = clf.classify_batch([Message("m", "1", subject="Invoice", text="invoice due")])
    assert decision.category == "invoice"
    assert decision.confidence_source is ConfidenceSource.CALIBRATED
    raw = clf.decide([Message("m", "1")], embedder.encode(["invoice due"]), calibrated=False)
    assert raw[0].confidence_source is ConfidenceSource.SIMILARITY


# -- thresholds -----------------------------------------------------------------------------

SCORED = [
    Scored("a", "a", 0.9),
    Scored("a", "b", 0.8),
    Scored("b", "b", 0.6),
    Scored("b", "b", 0.4),
]


def test_risk_coverage_by_hand() -> None:
    points = {p.threshold: p for p in risk_coverage(SCORED, (0.0, 0.5, 0.85, 0.95))}
    assert (points[0.0].coverage, points[0.0].precision) == (1.0, 0.75)
    assert (points[0.5].routed, points[0.5].right) == (3, 2)
    assert points[0.85].precision == 1.0 and points[0.85].coverage == 0.25
    assert points[0.95].routed == 0 and points[0.95].precision == 1.0


def test_recommendation_is_the_lowest_threshold_reaching_the_target() -> None:
    rec = recommend(SCORED, 0.9)
    assert rec.threshold == 0.9 and rec.point is not None and rec.point.coverage == 0.25
    assert recommend(SCORED, 0.7).threshold == 0.4  # the lowest confidence seen, not 0
    assert "routes 25% of 4 messages" in rec.describe()
    assert recommend([Scored("a", "b", 0.5)], 0.9).threshold is None


def test_per_category_threshold_only_where_the_evidence_supports_one() -> None:
    scored = [Scored("rh", "rh", 0.9)] * 20 + [Scored("rh", "x", 0.6)] * 5
    scored += [Scored("pub", "pub", 0.55)] * 3
    recs = recommend_per_category(scored, 0.95, global_threshold=0.5, min_support=20)
    assert [(r.category, r.threshold) for r in recs] == [("rh", 0.9)]  # pub: 3 predictions


def test_planner_uses_the_category_threshold() -> None:
    settings = parse_settings(CONFIG)
    message = Message("m", "1")
    assert settings.threshold("job") == 0.9 and settings.threshold("invoice") == 0.5
    job = Decision("job", 0.7, "", "embedded")
    invoice = Decision("invoice", 0.7, "", "embedded")
    assert effective_category(job, message, settings) == "review"
    assert effective_category(invoice, message, settings) == "invoice"
    assert effective_category(Decision("job", 0.95, "", "embedded"), message, settings) == "job"


class AnsweringLLM:
    name = "llm"

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def classify(self, message: Message) -> Decision:
        self.seen.append(message.provider_id)
        return Decision("invoice", 0.9, "llm", "llm", "test", ConfidenceSource.LOGPROB)


async def test_cascade_asks_the_llm_below_the_category_threshold() -> None:
    """A job decision at 0.7 clears the cascade threshold (0.55) but not the job category's
    own 0.9: the planner would send it to review, so the LLM decides instead."""
    from mailtriage.core.cascade import CascadeClassifier

    data = dict(CONFIG)
    data["embedded"] = {"cascade_threshold": 0.55}
    settings = parse_settings(data)

    class Fixed:
        name = "embedded"

        def __init__(self, category: str, confidence: float) -> None:
            self.decision = Decision(category, confidence, "", "embedded")

        async def classify(self, message: Message) -> Decision:
            return self.decision

    llm = AnsweringLLM()
    job = CascadeClassifier(settings, Fixed("job", 0.7), llm)  # type: ignore[arg-type]
    assert (await job.classify(Message("m", "job"))).classifier == "cascade:llm"
    invoice = CascadeClassifier(settings, Fixed("invoice", 0.7), llm)  # type: ignore[arg-type]
    assert (await invoice.classify(Message("m", "inv"))).classifier == "cascade:embedded"
    assert llm.seen == ["job"]


def test_a_correction_refits_without_recalibrating_until_a_tenth_more_examples() -> None:
    x, y = _blobs()
    config = [np.eye(3)[i : i + 1].astype(np.float32) for i in range(3)]
    first = build_model("abc", "ABC", config, x, y.tolist(), DEFAULT_PROFILE)
    one_more = build_model("abc", "ABC", config, np.vstack([x, x[:1]]), [*y.tolist(), 0],
                           DEFAULT_PROFILE, previous=first)  # fmt: skip
    assert one_more.calibrated_on == 36 and one_more.temperature == first.temperature
    assert one_more.held_out == first.held_out and len(one_more.learned) == 37
    assert one_more.kind == first.kind
    grown = build_model("abc", "ABC", config, np.vstack([x, x[:4]]), [*y.tolist(), 0, 0, 0, 0],
                        DEFAULT_PROFILE, previous=first)  # fmt: skip
    assert grown.calibrated_on == 40 and len(grown.held_out) == 40


def test_a_category_without_learned_examples_keeps_its_description() -> None:
    """Learned examples for a and b only: mail like c's description still goes to c."""
    x, y = _blobs()
    keep = y < 2
    config = [np.eye(3)[i : i + 1].astype(np.float32) for i in range(3)]
    model = build_model("abc", "ABC", config, x[keep], y[keep].tolist(), DEFAULT_PROFILE,
                        scorers=["head"])  # fmt: skip
    assert model.kind == "head"
    probs = model.probabilities(np.eye(3))
    assert probs.argmax(axis=1).tolist() == [0, 1, 2]


def test_learn_recommends_a_threshold_from_the_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After `learn`, the history's cross-validated predictions give a min_confidence."""
    from mailtriage.cli import learn as learn_cli
    from mailtriage.core import learn as core_learn
    from mailtriage.core.ledger import Ledger

    embedder = KeywordEmbedder(["invoice", "job", "due", "apply"])
    monkeypatch.setattr(core_learn, "get_embedder", lambda settings: embedder)
    settings = parse_settings(CONFIG)
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.sqlite'}")
    box = "contact@example.fr"
    learn_cli.advise_threshold(settings, ledger, box, 0.95)
    assert "no threshold recommendation yet" in " ".join(capsys.readouterr().out.split())
    for i in range(10):
        for key, text in (("invoice", f"invoice {i} due"), ("job", f"job apply {i}")):
            vector = embedder.encode([text])[0]
            ledger.add_example(box, key, text, source="history", embedding=list(vector))
    learn_cli.advise_threshold(settings, ledger, box, 0.95)
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    assert "calibrated on 20 learned examples" in out
    assert "risk-coverage" in out
    # Keyword-separable history: every held-out prediction is right, at any threshold, so
    # the recommendation is the lowest confidence seen (not 0) and routes everything.
    found = re.search(
        r"min_confidence = (\d\.\d\d): precision 1\.000 on routed mail \(20/20\), "
        r"routes 100% of 20 messages",
        out,
    )
    assert found, out
    assert 0.5 <= float(found.group(1)) < 1.0  # two categories: never below 0.5
