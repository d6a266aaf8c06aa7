"""The per-action journal: the intent before a write, the result right after it.

Intents live on the action rows themselves (schema 2), not in a table of their own: an
intent is one planned action's attempt, 1:1 with its row, created and dropped with the plan;
a separate table would repeat (message, seq) and need a join on every resume. What this
module adds is the protocol around those columns:

- `begin_actions` marks the pending actions of a plan STARTED in one transaction before the
  connector touches the mailbox, gives each forward its stable id, and tells the pipeline
  which actions an earlier attempt may already have done (`decide` does the same for a new
  plan in the transaction that records it);
- `note_action` records a handle before an effect that cannot be undone (the draft about to
  be sent), so a resume can look for it;
- `record_action` records each result the moment the connector knows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from mailtriage.core.actions import ActionPlan
from mailtriage.core.decision import Decision
from mailtriage.core.intents import Intent, forward_key, needs_intent
from mailtriage.core.ledger.base import LedgerBase
from mailtriage.core.ledger.messages import write_decision
from mailtriage.core.ledger.records import Record, snapshot
from mailtriage.core.ledger.schema import ActionRow, ActionState, MessageRow, Status, aware, utcnow


def _start(row: MessageRow, seqs: Iterable[int], now: datetime) -> list[Intent]:
    """Mark the actions `seqs` of `row` STARTED; one `Intent` per seq, in order."""
    by_seq = {a.seq: a for a in row.actions}
    out: list[Intent] = []
    for seq in seqs:
        a = by_seq[seq]
        earlier = a.state != ActionState.PLANNED or (a.tries or 0) > 0
        if a.kind == "forward" and not a.intent_key:
            a.intent_key = forward_key(row.mailbox, row.provider_id, row.category or "")
        a.started_at = a.started_at or now
        a.tries = (a.tries or 0) + 1
        if a.state != ActionState.APPLIED:
            a.state = ActionState.STARTED
        out.append(
            Intent(
                key=a.intent_key or "",
                earlier=earlier,
                evidence=a.evidence or "",
                since=aware(a.started_at),
            )
        )
    row.updated_at = now
    return out


@dataclass(frozen=True, slots=True)
class OpenIntent:
    """An action attempted but not applied (for reports, sweeps and the chaos bench)."""

    row_id: int
    mailbox: str
    provider_id: str
    seq: int
    kind: str
    key: str
    state: str
    started_at: datetime | None
    evidence: str


class Intents(LedgerBase):
    """Intent before effect, result after it: one row per planned action."""

    def begin_actions(self, row_id: int, seqs: Sequence[int], owner: str) -> list[Intent] | None:
        """Mark the actions `seqs` of a row STARTED before they are attempted.

        Returns one `Intent` per seq, in order; `earlier` is set where an attempt began
        before (the action may have been done). None when the row belongs to another worker
        now (a retry claimed it): this one must not act.
        """
        with self.session() as s:
            row = s.get_one(MessageRow, row_id, with_for_update=True)
            if row.owner != owner or row.status != Status.PENDING:
                return None
            return _start(row, seqs, utcnow())

    def decide(
        self,
        row_id: int,
        decision: Decision,
        plan: ActionPlan,
        *,
        routed_to_review: bool,
        owner: str,
    ) -> tuple[Record, list[Intent] | None]:
        """`record_decision` and, when the plan has forwards or moves, `begin_actions` on
        all of its actions, in one transaction: a new plan's intents cost no round trip of
        their own. Intents are None when the row belongs to another worker now, [] when the
        plan needs none (labels, read flags) or is a dry run.
        """
        with self.session() as s:
            row = s.get_one(MessageRow, row_id, with_for_update=True)
            write_decision(s, row, decision, plan, routed_to_review=routed_to_review)
            intents: list[Intent] | None = []
            if not plan.dry_run and any(needs_intent(a) for a in plan.actions):
                if row.owner != owner or row.status != Status.PENDING:
                    intents = None
                else:
                    intents = _start(row, range(len(plan.actions)), utcnow())
                    s.flush()
            return snapshot(row), intents

    def note_action(self, row_id: int, seq: int, evidence: str) -> None:
        """Record a handle (e.g. `send:<draft id>`) before an effect that cannot be undone."""
        with self.session() as s:
            s.execute(
                update(ActionRow)
                .where(ActionRow.message_id == row_id, ActionRow.seq == seq)
                .values(evidence=evidence[:300], updated_at=utcnow())
            )

    def record_action(
        self,
        row_id: int,
        seq: int,
        *,
        ok: bool,
        error: str = "",
        new_id: str | None = None,
        note: str = "",
    ) -> None:
        """The action's result, as soon as the connector knows it: its error, or for an
        applied action the connector's note of how it was done (same column)."""
        with self.session() as s:
            s.execute(
                update(ActionRow)
                .where(ActionRow.message_id == row_id, ActionRow.seq == seq)
                .values(
                    state=ActionState.APPLIED if ok else ActionState.FAILED,
                    error=(error if not ok else note)[:2000],
                    updated_at=utcnow(),
                )
            )
            if new_id:
                s.execute(
                    update(MessageRow)
                    .where(MessageRow.id == row_id)
                    .values(current_provider_id=new_id)
                )

    def open_intents(self, mailbox: str | None = None) -> list[OpenIntent]:
        """Actions attempted (STARTED or FAILED after an attempt) and not applied."""
        with self.session() as s:
            q = (
                select(ActionRow, MessageRow)
                .join(MessageRow, ActionRow.message_id == MessageRow.id)
                .where(
                    ActionRow.state.in_((ActionState.STARTED, ActionState.FAILED)),
                    ActionRow.tries > 0,
                )
                .order_by(MessageRow.id, ActionRow.seq)
            )
            if mailbox:
                q = q.where(MessageRow.mailbox == mailbox)
            return [
                OpenIntent(
                    m.id,
                    m.mailbox,
                    m.provider_id,
                    a.seq,
                    a.kind,
                    a.intent_key or "",
                    a.state,
                    aware(a.started_at),
                    a.evidence or "",
                )
                for a, m in s.execute(q).all()
            ]
