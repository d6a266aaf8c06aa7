"""Every LLM fault mode through the pipeline: classified, reviewed or recorded for retry.

The real `openai` client talks to the sandbox server; the ledger is the source of truth for
what happened to the message, and nothing is lost: a failed message is retried once the
fault clears.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mailtriage.core.ledger import Ledger, Status
from mailtriage.core.llm import LLMClassifier
from mailtriage.core.memory import MemoryMailbox
from mailtriage.core.pipeline import Outcome, Pipeline, RetryPolicy
from mailtriage.sandbox.llm import DEFAULT_MODEL, Faults, SandboxLLM
from tests.helpers import example_settings, make_message

BOX = "contact@atelier-dupont.fr"


FaultSetter = Callable[[Faults], None]

# (fault, outcome of the first attempt, final category after the retry)
CASES: list[tuple[str, FaultSetter, str, str]] = [
    ("none", lambda f: None, Outcome.DONE, "rh"),
    ("latency", lambda f: f.set_latency(0.2), Outcome.DONE, "rh"),
    ("429 then ok", lambda f: f.throttle(1, retry_after_s=0.05), Outcome.DONE, "rh"),
    ("500 once", lambda f: f.fail(1), Outcome.DONE, "rh"),  # the client's own retry
    ("500 storm", lambda f: f.fail(10), Outcome.FAILED, "rh"),
    ("hang", lambda f: f.hang(2, seconds=5), Outcome.FAILED, "rh"),  # past the retry too
    ("malformed once", lambda f: f.malform(1), Outcome.DONE, "rh"),  # the next rung answers
    ("malformed at every rung", lambda f: f.malform(8), Outcome.FAILED, "rh"),
    ("refusal", lambda f: f.refuse(1), Outcome.DONE, "review"),
    ("no json_schema", lambda f: f.reject_response_formats("json_schema"), Outcome.DONE, "rh"),
    (
        "json_schema refused with 500 (llama-cpp-python)",
        lambda f: f.reject_response_formats("json_schema", status=500),
        Outcome.DONE,
        "rh",
    ),
    (
        "no structured output",
        lambda f: f.reject_response_formats("json_schema", "json_object"),
        Outcome.DONE,
        None,
    ),  # plain text: category found, confidence unknown → review
    ("no logprobs", lambda f: f.set_reject_logprobs(True), Outcome.DONE, "rh"),
]


@pytest.mark.parametrize(("name", "fault", "first", "final"), CASES, ids=[c[0] for c in CASES])
async def test_fault_modes_end_classified_reviewed_or_retried(
    llm: SandboxLLM, tmp_path: Path, name: str, fault: FaultSetter, first: str, final: str | None
) -> None:
    settings = example_settings(
        llm={
            "base_url": llm.base_url,
            "model": DEFAULT_MODEL,
            "timeout_s": 0.5,
            "api_key_env": None,
            "max_retries": 1,
            "few_shot": 0,
        },
        classifier="llm",
    )
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.sqlite'}")
    box = MemoryMailbox(BOX)
    box.deliver(
        make_message(
            "Candidature spontanée",
            "Bonjour, je postule au poste de technicien. CV et lettre de motivation joints.",
        )
    )
    classifier = LLMClassifier(settings)
    pipeline = Pipeline(settings, ledger, classifier, retry=RetryPolicy(3600, 3600))
    fault(llm.faults)
    report = await pipeline.sync_mailbox(box)
    assert report.results[0].status == first, name
    record = ledger.recent()[0]
    if first == Outcome.FAILED:
        assert record.status == Status.FAILED and record.last_error.startswith("classifier:")
        assert box.sent == [] and next(iter(box.store.values())).folder == "Inbox"
        llm.faults = Faults()  # the fault clears; the retry is due
        pipeline.retry = RetryPolicy(0, 0)
        ledger.fail(record.id, record.last_error, retry_at=None, give_up=False)
        await pipeline.sync_mailbox(box)
        record = ledger.recent()[0]
    assert record.status == Status.DONE
    if final is not None:
        assert record.category == final
    else:
        assert record.category in {"rh", "review"}
    assert len(box.sent) == (1 if record.category == "rh" else 0)
    await classifier.aclose()
