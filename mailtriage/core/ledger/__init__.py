"""The ledger: mailtriage's state database (SQLAlchemy 2; SQLite by default, PostgreSQL by URL).

One module per concern, each a mixin over `LedgerBase` (engine and transactions):

- `schema`: tables, states and migrations;
- `records`: read-only `Record` snapshots and action JSON;
- `messages`: claims, decisions, failures, retries;
- `intents`: the per-action journal: intent before a write, result right after it;
- `state`: sync cursors and the connectors' key/value `StateStore`;
- `leases`: which process works on which mailbox;
- `processes`: which processes are alive (the fleet's registry, for fair shares);
- `learning`: examples and corrections.

Message bodies are stored only when `store_text = true`.
"""

from __future__ import annotations

from mailtriage.core.ledger.intents import Intents, OpenIntent
from mailtriage.core.ledger.learning import Learning
from mailtriage.core.ledger.leases import Leases
from mailtriage.core.ledger.messages import Messages
from mailtriage.core.ledger.processes import Processes
from mailtriage.core.ledger.records import (
    ActionIntent,
    Record,
    action_from_row,
    action_to_json,
)
from mailtriage.core.ledger.schema import SCHEMA_VERSION, ActionState, Status, migrate, utcnow
from mailtriage.core.ledger.state import State

__all__ = [
    "SCHEMA_VERSION",
    "ActionIntent",
    "ActionState",
    "Ledger",
    "OpenIntent",
    "Record",
    "Status",
    "action_from_row",
    "action_to_json",
    "migrate",
    "utcnow",
]


class Ledger(Messages, Intents, State, Leases, Processes, Learning):
    """Synchronous ledger API (one short transaction per method), plus the async
    `StateStore` methods connectors use."""
