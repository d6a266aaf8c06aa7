"""What a classifier (or a rule) decided about one message."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ConfidenceSource(StrEnum):
    """Where a confidence figure comes from, so that readers know how far to trust it."""

    LOGPROB = "logprob"  # probability of the chosen key's tokens
    MODEL = "model"  # the number the model wrote itself (uncalibrated)
    SIMILARITY = "similarity"  # embedded classifier's softmax over similarities
    CALIBRATED = "calibrated"  # embedded classifier, fitted to the mailbox's own examples
    RULE = "rule"  # deterministic rule: 1.0
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Decision:
    """A routing decision; `category` is always a configured key (or the review key)."""

    category: str
    confidence: float
    reason: str
    classifier: str  # "rule", "llm", "embedded", "cascade:embedded", ...
    model: str = ""
    confidence_source: ConfidenceSource = ConfidenceSource.NONE
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Skip:
    """A message the rules decided not to route at all (auto-reply, bounce, own forward...)."""

    reason: str
