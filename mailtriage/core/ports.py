"""The interfaces the core needs from the outside world (ports); connectors implement them.

The pipeline talks only to these protocols, so a Graph mailbox, a Gmail mailbox and a
test fake are interchangeable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mailtriage.core.actions import Action, ActionPlan
from mailtriage.core.decision import Decision
from mailtriage.core.intents import NO_INTENT, Intent
from mailtriage.core.message import Message


@dataclass(slots=True)
class Failure:
    """A message the connector saw but could not turn into a `Message`.

    It stays untouched in the inbox; the pipeline records it with `reason`.
    """

    provider_id: str
    reason: str
    internet_message_id: str | None = None
    subject: str = ""


@dataclass(slots=True)
class Change:
    """A staff move of a message already triaged (seen through delta/history).

    `location` is the folder path or label name the message now sits in.
    """

    provider_id: str
    location: str
    internet_message_id: str | None = None


@dataclass(slots=True)
class ChangePage:
    """One page of intake: new messages, failures, and the cursor to resume from.

    `cursor` is opaque to the core (a Graph deltaLink, a Gmail historyId). It is persisted
    only after the page's messages are recorded, so a crash replays, never skips.
    `more` says another page is ready right away.
    """

    messages: list[Message] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    moves: list[Change] = field(default_factory=list)
    cursor: str | None = None
    more: bool = False


@dataclass(frozen=True, slots=True)
class ActionResult:
    """Outcome of one action; `new_provider_id` is set when a move changed the id.

    `note`: how an applied action was done when that differs from the plan (a forward too
    large to send that went as a notice); recorded in the ledger with the result.
    """

    action: Action
    ok: bool
    error: str = ""
    new_provider_id: str | None = None
    note: str = ""


@runtime_checkable
class Journal(Protocol):
    """Where a connector reports while it applies a plan (indices are the plan's).

    `intent(i)` says what the ledger recorded before the attempt (an earlier attempt may
    have done action i: look for its evidence first). `note(i, evidence)` records a handle
    before the effect that cannot be undone (the draft about to be sent). `record(i, r)`
    records each action's result once it is known, so a crash right after a forward or a
    move never repeats it (the ledger may hold back a label's result: setting it twice is
    harmless, see `core.journal`).
    """

    def intent(self, index: int) -> Intent: ...

    async def note(self, index: int, evidence: str) -> None: ...

    async def record(self, index: int, result: ActionResult) -> None: ...


class NullJournal:
    """No ledger behind the plan (previews, the review label after giving up)."""

    def intent(self, index: int) -> Intent:
        return NO_INTENT

    async def note(self, index: int, evidence: str) -> None:
        return None

    async def record(self, index: int, result: ActionResult) -> None:
        return None


NULL_JOURNAL = NullJournal()


@runtime_checkable
class Mailbox(Protocol):
    """One shared mailbox at a provider."""

    provider: str  # "graph" | "gmail" | "files" ...
    address: str

    async def changes(self, cursor: str | None) -> ChangePage:
        """New inbox messages since `cursor` (None: start per the backfill settings)."""
        ...

    async def fetch(self, provider_id: str) -> Message:
        """Read one message again (for retries); NotFoundError when it is gone."""
        ...

    async def apply(
        self, message: Message, plan: ActionPlan, journal: Journal | None = None
    ) -> Sequence[ActionResult]:
        """Apply the plan natively, in order; stop at the first failed action.

        Each result is reported to `journal` as soon as it is known. An action whose intent
        says an earlier attempt may have done it is first looked for (sent copy, draft,
        current folder), never blindly repeated.
        """
        ...

    async def mark_processed(self, message: Message, decision: Decision) -> None:
        """Leave a durable marker on the message (extended property / label)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Classifier(Protocol):
    """Anything that turns a Message into a Decision among the configured categories."""

    name: str

    async def classify(self, message: Message) -> Decision: ...


@runtime_checkable
class StateStore(Protocol):
    """Small per-mailbox key/value state kept in the ledger database.

    Connectors keep provider state here: subscription ids and expiry, Gmail watch expiry,
    folder/label id caches. Values are strings (JSON when structured).
    """

    async def get(self, mailbox: str, key: str) -> str | None: ...

    async def put(self, mailbox: str, key: str, value: str | None) -> None:
        """Store `value`; None deletes the key."""
        ...


class MemoryStateStore:
    """In-memory StateStore, for previews and tests."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], str] = {}

    async def get(self, mailbox: str, key: str) -> str | None:
        return self._data.get((mailbox, key))

    async def put(self, mailbox: str, key: str, value: str | None) -> None:
        if value is None:
            self._data.pop((mailbox, key), None)
        else:
            self._data[(mailbox, key)] = value


Trigger = Callable[[str], Awaitable[None]]


@runtime_checkable
class PushChannel(Protocol):
    """A provider's push intake: subscriptions or watches, and the webhook that receives them.

    The webhook only acknowledges and calls `trigger(address)`; the sync path does the work.
    """

    provider: str

    def routes(self, trigger: Trigger) -> list[Any]:
        """Starlette routes to mount on the service's web app."""
        ...

    async def install(self) -> None:
        """Create missing subscriptions/watches."""
        ...

    async def renew_due(self) -> None:
        """Renew what expires soon; recreate what disappeared."""
        ...

    async def uninstall(self) -> None:
        """Delete every subscription/watch this installation created."""
        ...


@runtime_checkable
class HistorySource(Protocol):
    """A mailbox whose hand-sorted folders or labels can be read (`mailtriage learn`).

    Read-only: nothing here changes the mailbox.
    """

    address: str

    async def folders(self) -> list[str]:
        """Folder paths (Graph, relative to the Inbox when under it) or user label names."""
        ...

    async def sample(self, location: str, limit: int) -> list[Message]:
        """Up to `limit` most recent messages in that folder or label."""
        ...
