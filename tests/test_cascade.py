"""Cascade: confident messages never reach the LLM; unsure ones do; failures go to review."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailtriage.core import planner
from mailtriage.core.cascade import CascadeClassifier
from mailtriage.core.config import Settings, parse_settings
from mailtriage.core.decision import ConfidenceSource, Decision
from mailtriage.core.embedded import EmbeddedClassifier
from mailtriage.core.errors import ClassifierError
from mailtriage.core.ledger import Ledger
from mailtriage.core.llm import LLMClassifier
from mailtriage.core.memory import MemoryMailbox
from mailtriage.core.message import Message
from mailtriage.core.pipeline import Pipeline, RetryPolicy
from mailtriage.core.ports import Classifier
from mailtriage.sandbox.llm import DEFAULT_MODEL, SandboxLLM
from tests.embedders import KeywordEmbedder, real_embedder
from tests.helpers import example_settings, make_message


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


# -- acceptance: through the pipeline, with the real model and the ledger ------------------

BOX = "contact@atelier-dupont.fr"
CLEAR = (
    "Candidature au poste de soudeur",
    "Madame, Monsieur, je vous adresse ma candidature pour le poste de soudeur. "
    "Vous trouverez mon CV et ma lettre de motivation en pièce jointe.",
)
VAGUE = ("Question", "Bonjour, pouvez-vous me rappeler ? Merci.")


async def _run_pipeline(
    tmp_path: Path, second: Classifier, **overrides: object
) -> tuple[CascadeClassifier, Ledger, MemoryMailbox]:
    settings = example_settings(**overrides)  # type: ignore[arg-type]
    embedded = EmbeddedClassifier(settings, real_embedder())
    clf = CascadeClassifier(settings, embedded, second)
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.sqlite'}")
    box = MemoryMailbox(BOX)
    box.deliver(make_message(*CLEAR, provider_id="clear"))
    box.deliver(make_message(*VAGUE, provider_id="vague"))
    pipeline = Pipeline(settings, ledger, clf, retry=RetryPolicy(base_delay_s=0, max_delay_s=0))
    await pipeline.sync_mailbox(box)
    return clf, ledger, box


async def test_pipeline_ledger_records_who_decided(tmp_path: Path) -> None:
    llm = CountingLLM(answer="clients")
    clf, ledger, _ = await _run_pipeline(tmp_path, llm)
    assert llm.seen == ["vague"]  # the confident one never reached the LLM
    clear, vague = ledger.find(BOX, "clear"), ledger.find(BOX, "vague")
    assert clear is not None and vague is not None
    assert (clear.category, clear.classifier) == ("rh", "cascade:embedded")
    assert (vague.category, vague.classifier) == ("clients", "cascade:llm")
    assert clf.stats == {"embedded": 1, "llm": 1, "llm_errors": 0}


async def test_sandbox_llm_sees_only_unsure_mail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real openai client against the sandbox OpenAI-compatible server."""
    monkeypatch.setenv("MAILTRIAGE_LLM_KEY", "sk-sandbox")
    with SandboxLLM() as server:
        endpoint = {"base_url": server.base_url, "model": DEFAULT_MODEL}
        llm = LLMClassifier(example_settings(llm=endpoint))
        try:
            clf, ledger, _ = await _run_pipeline(tmp_path, llm, llm=endpoint)
        finally:
            await llm.aclose()
        bodies = server.bodies()
    assert len(bodies) == 1  # the vague message only
    sent = json.dumps(bodies[0], ensure_ascii=False)
    assert "pouvez-vous me rappeler" in sent and "soudeur" not in sent
    clear, vague = ledger.find(BOX, "clear"), ledger.find(BOX, "vague")
    assert clear is not None and clear.classifier == "cascade:embedded"
    assert vague is not None and vague.classifier == "cascade:llm"
    assert clf.stats["embedded"] == 1 and clf.stats["llm"] == 1
