"""An in-memory Mailbox: the fake beside the port, for tests and previews.

It behaves like a provider in the ways the pipeline relies on: a cursor that only moves
forward, a move that changes nothing about the id, a processed marker that survives a lost
ledger, forwards that can be found again by their id, and failures that can be injected per
action kind: refused (`fail_kinds`), done but answered with an unknown outcome
(`lose_kinds`), or done and then the process "dies" (`crash_after`, a BaseException the
pipeline does not catch, as a kill would leave the ledger).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailtriage.core.actions import ActionPlan, Forward, Label, MarkRead, Move
from mailtriage.core.decision import Decision
from mailtriage.core.errors import (
    ConnectorError,
    MessageParseError,
    NotFoundError,
    OutcomeUnknownError,
)
from mailtriage.core.message import Message
from mailtriage.core.ports import NULL_JOURNAL, ActionResult, ChangePage, Failure, Journal


class Crash(BaseException):
    """Stands for a kill right after a provider write (`MemoryMailbox.crash_after`)."""


@dataclass(slots=True)
class StoredMessage:
    message: Message
    folder: str = "Inbox"
    labels: list[str] = field(default_factory=list)
    read: bool = False
    processed: bool = False


class MemoryMailbox:
    """Mailbox protocol over a list; `deliver()` adds mail, `sent` collects forwards."""

    provider = "memory"
    supports_push = False

    def __init__(self, address: str, *, page_size: int = 50) -> None:
        self.address = address
        self.page_size = page_size
        self.log: list[Message | Failure] = []
        self.store: dict[str, StoredMessage] = {}
        self.sent: list[tuple[Forward, Message]] = []
        self.sent_keys: list[str] = []  # the forward id of each sent forward
        self.fail_kinds: dict[str, str] = {}  # action kind -> error to return
        self.lose_kinds: dict[str, int] = {}  # action kind -> times done, answer lost
        self.crash_after: set[str] = set()  # action kinds after which the process dies
        self.fail_fetch: set[str] = set()
        self.unreadable: dict[str, str] = {}
        self.calls: list[str] = []

    def deliver(self, message: Message) -> Message:
        message = dataclasses.replace(message, mailbox=self.address)
        self.log.append(message)
        self.store[message.provider_id] = StoredMessage(message)
        return message

    def deliver_unreadable(self, provider_id: str, reason: str) -> None:
        self.log.append(Failure(provider_id=provider_id, reason=reason))
        self.unreadable[provider_id] = reason

    async def changes(self, cursor: str | None) -> ChangePage:
        self.calls.append("changes")
        start = int(cursor or 0)
        chunk = self.log[start : start + self.page_size]
        end = start + len(chunk)
        page = ChangePage(cursor=str(end), more=end < len(self.log))
        for item in chunk:
            if isinstance(item, Failure):
                page.failures.append(item)
            elif (stored := self.store.get(item.provider_id)) is not None:  # not deleted
                page.messages.append(dataclasses.replace(item, processed_marker=stored.processed))
        return page

    async def fetch(self, provider_id: str) -> Message:
        self.calls.append("fetch")
        if provider_id in self.fail_fetch:
            raise ConnectorError(f"cannot read {provider_id}", mailbox=self.address)
        if provider_id in self.unreadable:
            raise MessageParseError(self.unreadable[provider_id])
        stored = self.store.get(provider_id)
        if stored is None:
            raise NotFoundError(f"{provider_id} not found", mailbox=self.address)
        return dataclasses.replace(stored.message, processed_marker=stored.processed)

    async def apply(
        self, message: Message, plan: ActionPlan, journal: Journal | None = None
    ) -> Sequence[ActionResult]:
        journal = journal or NULL_JOURNAL
        stored = self.store.get(message.provider_id)
        results = []
        for index, action in enumerate(plan.actions):
            self.calls.append(action.kind)
            error = self.fail_kinds.get(action.kind)
            if error:
                results.append(ActionResult(action, ok=False, error=error))
                await journal.record(index, results[-1])
                break
            intent = journal.intent(index)
            found = intent.earlier and bool(intent.key) and intent.key in self.sent_keys
            if isinstance(action, Forward) and found:
                results.append(ActionResult(action, ok=True))  # its sent copy exists
                await journal.record(index, results[-1])
                continue
            if stored is None:
                raise NotFoundError(f"{message.provider_id} not found", mailbox=self.address)
            if isinstance(action, Label):
                if action.name not in stored.labels:
                    stored.labels.append(action.name)
            elif isinstance(action, Move):
                stored.folder = action.folder
            elif isinstance(action, MarkRead):
                stored.read = True
            elif isinstance(action, Forward):
                self.sent.append((action, stored.message))
                self.sent_keys.append(intent.key)
            if action.kind in self.crash_after:
                raise Crash(action.kind)
            if self.lose_kinds.get(action.kind, 0) > 0:
                self.lose_kinds[action.kind] -= 1
                raise OutcomeUnknownError(f"{action.kind}: answer lost", mailbox=self.address)
            results.append(ActionResult(action, ok=True))
            await journal.record(index, results[-1])
        return results

    async def mark_processed(self, message: Message, decision: Decision) -> None:
        self.calls.append("mark_processed")
        self.store[message.provider_id].processed = True

    async def aclose(self) -> None:
        return None
