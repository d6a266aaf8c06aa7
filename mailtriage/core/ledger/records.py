"""Read-only snapshots of ledger rows, and how planned actions are stored as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailtriage.core.actions import Action, Forward, Label, MarkRead, Move
from mailtriage.core.errors import LedgerError
from mailtriage.core.ledger.schema import ActionState, MessageRow, aware, utcnow


def action_to_json(action: Action) -> str:
    if isinstance(action, Label):
        return json.dumps({"name": action.name, "color": action.color})
    if isinstance(action, Move):
        return json.dumps({"folder": action.folder})
    if isinstance(action, Forward):
        return json.dumps({"to": list(action.to), "note": action.note, "reply_to": action.reply_to})
    return "{}"


def action_from_row(kind: str, params: str) -> Action:
    data: dict[str, Any] = json.loads(params or "{}")
    if kind == "label":
        return Label(data["name"], data.get("color"))
    if kind == "move":
        return Move(data["folder"])
    if kind == "forward":
        return Forward(tuple(data["to"]), data.get("note", ""), data.get("reply_to"))
    if kind == "mark_read":
        return MarkRead()
    raise LedgerError(f"unknown action kind {kind!r} in ledger")


@dataclass(frozen=True, slots=True)
class ActionIntent:
    """One action's intent as recorded (see `ledger.intents`)."""

    key: str = ""
    started_at: datetime | None = None
    tries: int = 0
    evidence: str = ""


@dataclass(frozen=True, slots=True)
class Record:
    """A read-only snapshot of one ledger row, for the pipeline and the CLI."""

    id: int
    mailbox: str
    provider_id: str
    current_provider_id: str
    internet_message_id: str | None
    subject: str
    sender: str
    status: str
    skip_reason: str
    category: str | None
    decided_category: str
    confidence: float | None
    reason: str
    classifier: str
    model: str
    attempts: int
    last_error: str
    routed_to_review: bool
    dry_run: bool
    updated_at: datetime
    # (state, action, error), the error of an applied action being its note (how it was
    # done, e.g. "sent as a notice: ...")
    actions: tuple[tuple[str, Action, str], ...]
    raw_updated_at: datetime | None = None  # as stored, for compare-and-set
    intents: tuple[ActionIntent, ...] = ()  # one per action, same order

    @property
    def pending_actions(self) -> list[Action]:
        return [a for state, a, _ in self.actions if state != ActionState.APPLIED]

    def describe_actions(self) -> str:
        done = [
            f"{a.describe()} ({note})" if note else a.describe()
            for state, a, note in self.actions
            if state == ActionState.APPLIED
        ]
        return " + ".join(done) or "nothing"


def snapshot(row: MessageRow) -> Record:
    return Record(
        id=row.id,
        mailbox=row.mailbox,
        provider_id=row.provider_id,
        current_provider_id=row.current_provider_id,
        internet_message_id=row.internet_message_id,
        subject=row.subject,
        sender=row.sender,
        status=row.status,
        skip_reason=row.skip_reason,
        category=row.category,
        decided_category=row.decided_category,
        confidence=row.confidence,
        reason=row.reason,
        classifier=row.classifier,
        model=row.model,
        attempts=row.attempts,
        last_error=row.last_error,
        routed_to_review=row.routed_to_review,
        dry_run=row.dry_run,
        updated_at=aware(row.updated_at) or utcnow(),
        actions=tuple((a.state, action_from_row(a.kind, a.params), a.error) for a in row.actions),
        raw_updated_at=row.updated_at,
        intents=tuple(
            ActionIntent(a.intent_key or "", aware(a.started_at), a.tries or 0, a.evidence or "")
            for a in row.actions
        ),
    )
