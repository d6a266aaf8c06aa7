"""Cascade: the embedded classifier first, the LLM only when the embedded one is unsure.

Model calls cost money and seconds; most mail in a contact mailbox is easy. The embedded
decision is kept when its confidence reaches `embedded.cascade_threshold` (0 keeps every
embedded decision, 1 sends everything to the LLM) and the threshold the planner applies to
its category (`min_confidence`, or the category's own): a decision the planner would send
to review goes to the LLM instead. Otherwise the LLM decides. This is how the confusions
that need knowledge of the company reach the LLM: who issued an invoice, a vendor's pitch
or a prospect's request for a quote, a complaint about a visit or an HR matter. Raise the
`min_confidence` of the categories involved and their mail goes to the LLM unless the
embedded model is very sure. If the LLM
fails (ClassifierError: endpoint down, unusable answer after its retries), the embedded
guess is returned with confidence 0.0 and a reason that says so:
the planner then sends the message to review (any `min_confidence` above zero) instead of
retrying forever or routing on a guess. The ledger sees who decided in `classifier`:
"cascade:embedded" or "cascade:llm".
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Sequence

from mailtriage.core.config import Settings
from mailtriage.core.decision import Decision
from mailtriage.core.embedded import EmbeddedClassifier
from mailtriage.core.errors import ClassifierError
from mailtriage.core.message import Message
from mailtriage.core.ports import Classifier


class CascadeClassifier:
    """Rules run before any classifier (pipeline); this class chains embedded → LLM.

    `stats` counts, since creation: "embedded" (kept embedded decisions, i.e. model calls
    saved), "llm" (LLM decisions) and "llm_errors" (LLM failures that fell back).
    """

    name = "cascade"

    def __init__(self, settings: Settings, embedded: EmbeddedClassifier, llm: Classifier) -> None:
        self.settings = settings
        self.embedded = embedded
        self.llm = llm
        self.threshold = settings.embedded.cascade_threshold
        self.stats: dict[str, int] = {"embedded": 0, "llm": 0, "llm_errors": 0}
        self._stats_lock = threading.Lock()

    @property
    def calls_saved(self) -> int:
        """LLM calls not made because the embedded classifier was confident."""
        return self.stats["embedded"]

    async def classify(self, message: Message) -> Decision:
        first = await self.embedded.classify(message)
        return await self._resolve(message, first)

    async def classify_many(self, messages: Sequence[Message]) -> list[Decision]:
        """Batch the embedded pass; unsure messages go to the LLM concurrently (the LLM
        classifier bounds its own concurrency)."""
        firsts = await self.embedded.classify_many(messages)
        pairs = zip(messages, firsts, strict=True)
        return list(await asyncio.gather(*(self._resolve(m, d) for m, d in pairs)))

    async def _resolve(self, message: Message, first: Decision) -> Decision:
        # 0 never asks the LLM; otherwise the stricter of the two thresholds applies.
        needed = max(self.threshold, self.settings.threshold(first.category))
        if self.threshold == 0.0 or (self.threshold < 1.0 and first.confidence >= needed):
            self._count("embedded")
            return dataclasses.replace(first, classifier="cascade:embedded")
        try:
            second = await self.llm.classify(message)
        except ClassifierError as exc:
            self._count("llm_errors")
            return dataclasses.replace(
                first,
                confidence=0.0,
                classifier="cascade:embedded",
                reason=(
                    f"LLM unavailable ({exc}); embedded guess {first.category} at "
                    f"{first.confidence:.2f} is below the cascade threshold {self.threshold:.2f}"
                ),
            )
        self._count("llm")
        return dataclasses.replace(
            second,
            classifier="cascade:llm",
            latency_ms=second.latency_ms + first.latency_ms,
        )

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1
