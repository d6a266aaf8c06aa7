"""Intents: a write that is not idempotent is recorded before it is attempted.

A forward or a move may reach the provider and its answer be lost (a crash, a timeout, a
5xx, a dropped connection). The ledger records the intent before the attempt, with a stable
id for a forward; the forward carries that id where the provider lets us find it again (a
Graph extended property, a Gmail Message-ID). The next attempt of an action with an intent
looks for that evidence first: found means done, not found means do it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from mailtriage.core.actions import Action, Forward, Move
from mailtriage.core.errors import OutcomeUnknownError

# Every forward id (and the Message-ID of a Gmail forward) starts with this.
FORWARD_KEY_PREFIX = "mtf-"


def forward_key(mailbox: str, provider_id: str, category: str) -> str:
    """The stable id of the forward of one message to one category's recipients."""
    seed = f"{mailbox.strip().lower()}\n{provider_id}\n{category}".encode()
    return FORWARD_KEY_PREFIX + hashlib.sha256(seed).hexdigest()[:32]


def forward_message_id(key: str, mailbox: str) -> str:
    """A deterministic RFC 5322 Message-ID for the forward with id `key`."""
    domain = mailbox.rpartition("@")[2] or "localhost"
    return f"<{key}@{domain}>"


def is_forward_message_id(message_id: str | None) -> bool:
    """Whether a Message-ID is one mailtriage gave a forward."""
    return bool(message_id) and str(message_id).strip().lstrip("<").startswith(FORWARD_KEY_PREFIX)


def needs_intent(action: Action) -> bool:
    """Forwards and moves are not idempotent; labels and read flags are set-based."""
    return isinstance(action, Forward | Move)


@dataclass(frozen=True, slots=True)
class Intent:
    """What the ledger knows about an action before the connector attempts it.

    `earlier`: an earlier attempt may have done it, so look for the evidence first.
    `evidence`: what that attempt noted (e.g. the draft it was about to send).
    `since`: when the first attempt started.
    """

    key: str = ""
    earlier: bool = False
    evidence: str = ""
    since: datetime | None = None


NO_INTENT = Intent()


async def write_once(
    write: Callable[[], Awaitable[None]],
    settle: Callable[[], Awaitable[bool]],
    *,
    look_first: bool,
    attempts: int,
    delay_s: float,
    on_unknown: Callable[[OutcomeUnknownError], None] | None = None,
) -> None:
    """Do a write that is not idempotent, at most once.

    `settle()` looks for the write's evidence and finishes what it finds (True: done). It
    runs first when an earlier attempt may have written (`look_first`), and before every
    retry after an `OutcomeUnknownError`; the last one propagates.
    """
    look = look_first
    for attempt in range(attempts):
        try:
            if look and await settle():
                return
            await write()
            return
        except OutcomeUnknownError as exc:
            if attempt + 1 == attempts:
                raise
            if on_unknown is not None:
                on_unknown(exc)
            look = True
            if delay_s:
                await asyncio.sleep(delay_s * (attempt + 1))
