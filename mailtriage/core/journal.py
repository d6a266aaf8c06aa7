"""`LedgerJournal`: the `Journal` a connector reports to, backed by one ledger row.

Plan index i of the connector is action row `seqs[i]` of the ledger: the pipeline hands the
connector only the actions still pending.

Results of writes that need an intent (forwards, moves: `core.intents.needs_intent`) and
every failure are written the moment they are reported. The success of a set-based write
(a label, the read flag) is held back and written with the row's final state (`finish`),
saving a transaction per action: if the process dies in between, the retry sets the label
again, which changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailtriage.core.intents import NO_INTENT, Intent, needs_intent
from mailtriage.core.ledger import Ledger
from mailtriage.core.ports import ActionResult


class LedgerJournal:
    """Records each action's result in the ledger (at once, or with the row's end)."""

    def __init__(
        self, ledger: Ledger, row_id: int, seqs: Sequence[int], intents: Sequence[Intent]
    ) -> None:
        self.ledger = ledger
        self.row_id = row_id
        self.seqs = list(seqs)
        self.intents = list(intents) or [NO_INTENT] * len(self.seqs)
        self.recorded: dict[int, ActionResult] = {}
        self.held: list[int] = []  # seqs applied, not yet written

    def intent(self, index: int) -> Intent:
        return self.intents[index] if 0 <= index < len(self.intents) else NO_INTENT

    async def note(self, index: int, evidence: str) -> None:
        await self.ledger.run(self.ledger.note_action, self.row_id, self.seqs[index], evidence)

    async def record(self, index: int, result: ActionResult) -> None:
        if index in self.recorded:
            return
        self.recorded[index] = result
        if result.ok and not result.new_provider_id and not needs_intent(result.action):
            self.held.append(self.seqs[index])
            return
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

    async def flush(self) -> None:
        """Write the held-back results now (before a failure is recorded)."""
        held, self.held = self.held, []
        if held:
            await self.ledger.run(self.ledger.mark_applied, self.row_id, held)
