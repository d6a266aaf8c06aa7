"""`LedgerJournal`: the `Journal` a connector reports to, backed by one ledger row.

Plan index i of the connector is action row `seqs[i]` of the ledger: the pipeline hands the
connector only the actions still pending.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailtriage.core.intents import NO_INTENT, Intent
from mailtriage.core.ledger import Ledger
from mailtriage.core.ports import ActionResult


class LedgerJournal:
    """Records each action's result in the ledger the moment the connector reports it."""

    def __init__(
        self, ledger: Ledger, row_id: int, seqs: Sequence[int], intents: Sequence[Intent]
    ) -> None:
        self.ledger = ledger
        self.row_id = row_id
        self.seqs = list(seqs)
        self.intents = list(intents) or [NO_INTENT] * len(self.seqs)
        self.recorded: dict[int, ActionResult] = {}

    def intent(self, index: int) -> Intent:
        return self.intents[index] if 0 <= index < len(self.intents) else NO_INTENT

    async def note(self, index: int, evidence: str) -> None:
        await self.ledger.run(self.ledger.note_action, self.row_id, self.seqs[index], evidence)

    async def record(self, index: int, result: ActionResult) -> None:
        if index in self.recorded:
            return
        self.recorded[index] = result
        await self.ledger.run(
            lambda: self.ledger.record_action(
                self.row_id,
                self.seqs[index],
                ok=result.ok,
                error=result.error,
                new_id=result.new_provider_id,
                note=result.note,
            )
        )
