"""Cascade: confident messages never reach the LLM; unsure ones do; failures go to review."""

from __future__ import annotations

import pytest

from mailtriage.core import planner
from mailtriage.core.cascade import CascadeClassifier
from mailtriage.core.config import Settings, parse_settings
from mailtriage.core.decision import ConfidenceSource, Decision
from mailtriage.core.embedded import EmbeddedClassifier
from mailtriage.core.errors import ClassifierError
from mailtriage.core.message import Message
from mailtriage.core.ports import Classifier
from tests.embedding_fakes import KeywordEmbedder


def settings_for(threshold: float = 0.55) -> Settings:
    return parse_settings(
        {
            "min_confidence": 0.5,
            "embedded": {"cascade_threshold": threshold},
            "category": [
                {"key": "invoice", "name": "Invoice", "description": "invoice"},
                {"key": "job", "name": "Job", "description": "job"},
                {"key": "review", "name": "Review", "description": "anything else"},
            ],
        }
    )


class CountingLLM:
    """A Classifier standing in for the LLM: answers `answer`, or raises when told to."""

    name = "llm"

    def __init__(self, answer: str = "job", fail: bool = False) -> None:
        self.answer = answer
        self.fail = fail
        self.seen: list[str] = []

    async def classify(self, message: Message) -> Decision:
        self.seen.append(message.provider_id)
        if self.fail:
            raise ClassifierError("endpoint unreachable")
        return Decision(self.answer, 0.9, "llm says so", "llm", "test-model",
                        ConfidenceSource.LOGPROB, latency_ms=5.0)  # fmt: skip


def cascade(llm: Classifier, threshold: float = 0.55) -> CascadeClassifier:
    settings = settings_for(threshold)
    embedded = EmbeddedClassifier(settings, KeywordEmbedder(["invoice", "job"]))
    return CascadeClassifier(settings, embedded, llm)


CONFIDENT = Message("m@example.org", "confident", subject="Invoice", text="invoice invoice")
UNSURE = Message("m@example.org", "unsure", subject="Hello", text="can you call me back")


async def test_confident_messages_never_reach_the_llm() -> None:
    llm = CountingLLM()
    clf = cascade(llm)
    decision = await clf.classify(CONFIDENT)
    assert decision.category == "invoice"
    assert decision.classifier == "cascade:embedded"
    assert decision.confidence >= 0.55
    assert llm.seen == []
    assert clf.stats == {"embedded": 1, "llm": 0, "llm_errors": 0}
    assert clf.calls_saved == 1


async def test_unsure_messages_go_to_the_llm() -> None:
    llm = CountingLLM(answer="job")
    clf = cascade(llm)
    decision = await clf.classify(UNSURE)
    assert llm.seen == ["unsure"]
    assert decision.category == "job"
    assert decision.classifier == "cascade:llm"
    assert decision.confidence_source is ConfidenceSource.LOGPROB
    assert decision.latency_ms >= 5.0
    assert clf.stats == {"embedded": 0, "llm": 1, "llm_errors": 0}


async def test_batch_sends_only_the_unsure_ones() -> None:
    llm = CountingLLM()
    clf = cascade(llm)
    decisions = await clf.classify_many([CONFIDENT, UNSURE, CONFIDENT])
    assert [d.classifier for d in decisions] == [
        "cascade:embedded", "cascade:llm", "cascade:embedded",
    ]  # fmt: skip
    assert llm.seen == ["unsure"]
    assert clf.stats["embedded"] == 2 and clf.stats["llm"] == 1


async def test_threshold_zero_and_one() -> None:
    llm = CountingLLM()
    await cascade(llm, threshold=0.0).classify(UNSURE)
    assert llm.seen == []
    await cascade(llm, threshold=1.0).classify(CONFIDENT)
    assert llm.seen == ["confident"]


async def test_llm_failure_falls_back_to_review() -> None:
    settings = settings_for()
    llm = CountingLLM(fail=True)
    clf = cascade(llm)
    decision = await clf.classify(UNSURE)
    assert llm.seen == ["unsure"]
    assert decision.classifier == "cascade:embedded"
    assert decision.confidence == 0.0
    assert "LLM unavailable" in decision.reason and "endpoint unreachable" in decision.reason
    assert decision.category in {"invoice", "job"}  # the embedded guess, kept for the record
    assert planner.effective_category(decision, UNSURE, settings) == settings.review_category
    assert clf.stats == {"embedded": 0, "llm": 0, "llm_errors": 1}


@pytest.mark.parametrize("kind", ["embedded", "cascade"])
def test_cascade_is_a_classifier(kind: str) -> None:
    clf = cascade(CountingLLM())
    obj = clf if kind == "cascade" else clf.embedded
    assert isinstance(obj, Classifier)
