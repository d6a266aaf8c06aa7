"""Message rows: claiming, decisions, per-action state, failures and retries.

One row per (mailbox, message) under a unique constraint: inserting that row is how a worker
claims a message, so two processes can never both act on it. Each planned action has its own
row and state, so a retry re-applies only what is missing (the per-action journal, intents
and results, is `ledger.intents`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailtriage.core.actions import ActionPlan
from mailtriage.core.decision import Decision
from mailtriage.core.ledger.base import LedgerBase
from mailtriage.core.ledger.records import Record, action_to_json, snapshot
from mailtriage.core.ledger.schema import (
    ActionRow,
    ActionState,
    MessageRow,
    Status,
    aware,
    utcnow,
)
from mailtriage.core.message import Message


def _known(mailbox: str, provider_id: str, internet_message_id: str | None) -> ColumnElement[bool]:
    """Rows of `mailbox` for this message: by provider id (original or current), Message-ID."""
    cond = (MessageRow.provider_id == provider_id) | (MessageRow.current_provider_id == provider_id)
    if internet_message_id:
        cond = cond | (MessageRow.internet_message_id == internet_message_id)
    return (MessageRow.mailbox == mailbox) & cond


def _set_applied(s: Session, row_id: int, seqs: Sequence[int], now: datetime) -> None:
    if seqs:
        s.execute(
            update(ActionRow)
            .where(ActionRow.message_id == row_id, ActionRow.seq.in_(list(seqs)))
            .values(state=ActionState.APPLIED, error="", updated_at=now)
        )


def write_decision(
    s: Session, row: MessageRow, decision: Decision, plan: ActionPlan, *, routed_to_review: bool
) -> None:
    """Set the decision and its planned actions on `row` (replacing any earlier plan)."""
    row.category = plan.category
    row.decided_category = decision.category[:40]
    row.confidence = decision.confidence
    row.confidence_source = str(decision.confidence_source)
    row.reason = decision.reason[:500]
    row.classifier = decision.classifier
    row.model = decision.model
    row.latency_ms = decision.latency_ms
    row.prompt_tokens = decision.prompt_tokens
    row.completion_tokens = decision.completion_tokens
    row.routed_to_review = routed_to_review
    row.dry_run = plan.dry_run
    row.status = Status.DRY_RUN if plan.dry_run else Status.PENDING
    if row.actions:
        row.actions.clear()
        s.flush()
    for seq, action in enumerate(plan.actions):
        row.actions.append(ActionRow(seq=seq, kind=action.kind, params=action_to_json(action)))
    s.flush()


class Messages(LedgerBase):
    """The message rows and their actions."""

    def find(
        self, mailbox: str, provider_id: str, internet_message_id: str | None = None
    ) -> Record | None:
        """The row for this message: by provider id (original or current) or Message-ID."""
        with self.session() as s:
            row = s.scalars(
                select(MessageRow).where(_known(mailbox, provider_id, internet_message_id)).limit(1)
            ).first()
            return snapshot(row) if row else None

    def claim(self, message: Message, owner: str = "") -> Record | None:
        """Insert the message's row; None when it is known already (by provider id, current
        id or Message-ID: an earlier run) or another worker inserted it first.

        The lookup and the insert are one transaction: one round trip per new message.
        """
        known = _known(message.mailbox, message.provider_id, message.internet_message_id)
        row = MessageRow(
            mailbox=message.mailbox,
            provider_id=message.provider_id,
            current_provider_id=message.provider_id,
            internet_message_id=message.internet_message_id,
            subject=message.subject[:300],
            sender=message.sender.email if message.sender else "",
            received_at=message.date,
            status=Status.PENDING,
            owner=owner,
            text=message.text if self.store_text else None,
            actions=[],
        )
        return self._insert(row, unless=known)

    def record_failure_seen(
        self,
        mailbox: str,
        provider_id: str,
        reason: str,
        *,
        internet_message_id: str | None = None,
        subject: str = "",
        retry_at: datetime | None = None,
    ) -> Record | None:
        """Record a message the connector could not read; None when already recorded."""
        row = MessageRow(
            mailbox=mailbox,
            provider_id=provider_id,
            current_provider_id=provider_id,
            internet_message_id=internet_message_id,
            subject=subject[:300],
            status=Status.FAILED,
            attempts=1,
            last_error=reason,
            next_attempt_at=retry_at,
            actions=[],
        )
        return self._insert(row)

    def _insert(
        self, row: MessageRow, *, unless: ColumnElement[bool] | None = None
    ) -> Record | None:
        """Insert a new message row (built with `actions=[]`); None when a row matching
        `unless` exists, or the unique (mailbox, message) row does."""
        try:
            with self.session() as s:
                if unless is not None and s.scalar(select(MessageRow.id).where(unless).limit(1)):
                    return None
                s.add(row)
                s.flush()
                return snapshot(row)
        except IntegrityError:
            return None

    def skip(self, row_id: int, reason: str) -> None:
        with self.session() as s:
            s.execute(
                update(MessageRow)
                .where(MessageRow.id == row_id)
                .values(status=Status.SKIPPED, skip_reason=reason[:300], updated_at=utcnow())
            )

    def record_decision(
        self, row_id: int, decision: Decision, plan: ActionPlan, *, routed_to_review: bool
    ) -> Record:
        """Store the decision and its planned actions (replacing any earlier plan)."""
        with self.session() as s:
            row = s.get_one(MessageRow, row_id)
            write_decision(s, row, decision, plan, routed_to_review=routed_to_review)
            return snapshot(row)

    def finish(self, row_id: int, applied: Sequence[int] = ()) -> Record:
        """Mark the row done, and the actions `applied` (seqs whose results the journal held
        back) applied, in one transaction; returns the row as it now stands."""
        now = utcnow()
        with self.session() as s:
            _set_applied(s, row_id, applied, now)
            row = s.get_one(MessageRow, row_id)
            row.status = Status.DONE
            row.last_error = ""
            row.next_attempt_at = None
            row.updated_at = now
            s.flush()
            return snapshot(row)

    def mark_applied(self, row_id: int, applied: Sequence[int]) -> None:
        """Mark the actions `applied` of a row applied (results the journal held back)."""
        with self.session() as s:
            _set_applied(s, row_id, applied, utcnow())

    def fail(self, row_id: int, error: str, *, retry_at: datetime | None, give_up: bool) -> int:
        """Record a failed attempt; returns the attempt count."""
        with self.session() as s:
            row = s.get_one(MessageRow, row_id)
            row.attempts += 1
            row.last_error = error[:2000]
            row.status = Status.GAVE_UP if give_up else Status.FAILED
            row.next_attempt_at = None if give_up else retry_at
            return row.attempts

    def due_for_retry(
        self, mailbox: str, now: datetime | None = None, *, stale_after_s: float = 600
    ) -> list[Record]:
        """Failed rows whose backoff has passed, and pending rows left by a crash.

        A pending row counts as abandoned only when untouched for `stale_after_s`: a fresh
        one is being worked on right now, possibly by another process.
        """
        now = now or utcnow()
        stale = now - timedelta(seconds=stale_after_s)
        with self.session() as s:
            rows = s.scalars(
                select(MessageRow)
                .where(
                    MessageRow.mailbox == mailbox,
                    (
                        (MessageRow.status == Status.FAILED)
                        & (
                            MessageRow.next_attempt_at.is_(None)
                            | (MessageRow.next_attempt_at <= now)
                        )
                    )
                    | ((MessageRow.status == Status.PENDING) & (MessageRow.updated_at < stale)),
                )
                .order_by(MessageRow.id)
            ).all()
            return [snapshot(r) for r in rows]

    def next_retry_at(self, mailbox: str) -> datetime | None:
        """When the earliest failed row of `mailbox` becomes due (the retry schedule)."""
        with self.session() as s:
            value = s.scalar(
                select(func.min(MessageRow.next_attempt_at)).where(
                    MessageRow.mailbox == mailbox,
                    MessageRow.status == Status.FAILED,
                    MessageRow.next_attempt_at.is_not(None),
                )
            )
            return aware(value)

    def claim_retry(self, rec: Record, owner: str) -> bool:
        """Take a due row for a retry; False when another worker took it first.

        The update matches only the row as it was read (status and timestamp), so of two
        workers racing for the same retry exactly one wins.
        """
        with self.session() as s:
            result = s.execute(
                update(MessageRow)
                .where(
                    MessageRow.id == rec.id,
                    MessageRow.status == rec.status,
                    MessageRow.updated_at == rec.raw_updated_at,
                )
                .values(status=Status.PENDING, owner=owner, updated_at=utcnow())
            )
            return getattr(result, "rowcount", 0) == 1

    def record(self, row_id: int) -> Record:
        with self.session() as s:
            return snapshot(s.get_one(MessageRow, row_id))

    def recent(
        self,
        *,
        limit: int = 50,
        mailbox: str | None = None,
        since: datetime | None = None,
    ) -> list[Record]:
        with self.session() as s:
            q = select(MessageRow).order_by(MessageRow.updated_at.desc(), MessageRow.id.desc())
            if mailbox:
                q = q.where(MessageRow.mailbox == mailbox)
            if since:
                q = q.where(MessageRow.updated_at >= since)
            return [snapshot(r) for r in s.scalars(q.limit(limit)).all()]

    def counts(
        self, *, since: datetime | None = None, mailbox: str | None = None
    ) -> list[tuple[str, str | None, int]]:
        """(status, category, count) rows for `stats`."""
        with self.session() as s:
            q = select(MessageRow.status, MessageRow.category, func.count()).group_by(
                MessageRow.status, MessageRow.category
            )
            if since:
                q = q.where(MessageRow.updated_at >= since)
            if mailbox:
                q = q.where(MessageRow.mailbox == mailbox)
            return [(st, cat, int(n)) for st, cat, n in s.execute(q).all()]
