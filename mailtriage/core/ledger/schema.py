"""The ledger's tables, states and schema migrations (one place for the database shape).

The schema is versioned: `schema_version` holds the applied version and `MIGRATIONS` lists
the steps to reach the current one (see `migrate`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from mailtriage.core.errors import LedgerError

SCHEMA_VERSION = 3


class Status:
    """Message states. Final states are never processed again."""

    PENDING = "pending"  # claimed, decision not yet applied (or crash mid-way)
    DONE = "done"  # every action applied
    DRY_RUN = "dry_run"  # decided and recorded, mailbox untouched
    SKIPPED = "skipped"  # rules: auto-reply, bounce, own forward, already marked
    FAILED = "failed"  # will be retried after next_attempt_at
    GAVE_UP = "gave_up"  # attempts exhausted; left in the inbox (review label if possible)

    FINAL = frozenset({DONE, DRY_RUN, SKIPPED, GAVE_UP})


class ActionState:
    PLANNED = "planned"
    STARTED = "started"  # intent recorded, outcome not (yet) known: look before repeating
    APPLIED = "applied"
    FAILED = "failed"


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything in the ledger is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("mailbox", "provider_id", name="uq_mailbox_message"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(320), index=True)
    provider_id: Mapped[str] = mapped_column(String(512))
    current_provider_id: Mapped[str] = mapped_column(String(512))
    internet_message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    subject: Mapped[str] = mapped_column(String(300), default="")
    sender: Mapped[str] = mapped_column(String(320), default="")
    received_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), index=True, default=Status.PENDING)
    skip_reason: Mapped[str] = mapped_column(String(300), default="")
    category: Mapped[str | None] = mapped_column(String(40), index=True)
    # What the classifier said, before low confidence or an unknown key sent it to review.
    decided_category: Mapped[str] = mapped_column(String(40), default="")
    confidence: Mapped[float | None] = mapped_column(Float)
    confidence_source: Mapped[str] = mapped_column(String(16), default="")
    reason: Mapped[str] = mapped_column(String(500), default="")
    classifier: Mapped[str] = mapped_column(String(40), default="")
    model: Mapped[str] = mapped_column(String(200), default="")
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    routed_to_review: Mapped[bool] = mapped_column(Boolean, default=False)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    owner: Mapped[str] = mapped_column(String(100), default="")
    text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, index=True
    )

    actions: Mapped[list[ActionRow]] = relationship(
        back_populates="message", order_by="ActionRow.seq", cascade="all, delete-orphan"
    )


class ActionRow(Base):
    __tablename__ = "actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    params: Mapped[str] = mapped_column(Text)  # JSON
    state: Mapped[str] = mapped_column(String(16), default=ActionState.PLANNED)
    # Why it failed; for an applied action, how it was done when that differs from the
    # plan (`ActionResult.note`, e.g. a forward sent as a notice).
    error: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    # The intent (schema 2, see `ledger.intents`): the forward's stable id, when the first
    # attempt started, how many attempts began, and what the last one noted.
    intent_key: Mapped[str | None] = mapped_column(String(80))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    tries: Mapped[int] = mapped_column(Integer, default=0)
    evidence: Mapped[str] = mapped_column(String(300), default="")

    message: Mapped[MessageRow] = relationship(back_populates="actions")


class CursorRow(Base):
    __tablename__ = "cursors"
    mailbox: Mapped[str] = mapped_column(String(320), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class KeyValueRow(Base):
    __tablename__ = "kv"
    mailbox: Mapped[str] = mapped_column(String(320), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class LeaseRow(Base):
    __tablename__ = "leases"
    mailbox: Mapped[str] = mapped_column(String(320), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ProcessRow(Base):
    """A live `mailtriage run` process (schema 3): the fleet's registry, for fair shares."""

    __tablename__ = "processes"
    owner: Mapped[str] = mapped_column(String(100), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class ExampleRow(Base):
    """A labelled example learned from the mailbox's own sorting or from a correction."""

    __tablename__ = "examples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(320), index=True)
    category: Mapped[str] = mapped_column(String(40), index=True)
    source: Mapped[str] = mapped_column(String(40))  # "history", "correction", "config"
    provider_id: Mapped[str] = mapped_column(String(512), default="")
    excerpt: Mapped[str] = mapped_column(Text)
    embedding: Mapped[str | None] = mapped_column(Text)  # JSON list of floats
    text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CorrectionRow(Base):
    __tablename__ = "corrections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    mailbox: Mapped[str] = mapped_column(String(320), index=True)
    from_category: Mapped[str] = mapped_column(String(40))
    to_category: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def _migrate_to_1(conn: Connection) -> None:
    Base.metadata.create_all(conn)


# Columns added to `actions` by schema 2 (per-action intents), as portable DDL.
_INTENT_COLUMNS = {
    "intent_key": "VARCHAR(80)",
    "started_at": "TIMESTAMP WITH TIME ZONE",
    "tries": "INTEGER NOT NULL DEFAULT 0",
    "evidence": "VARCHAR(300) NOT NULL DEFAULT ''",
}


def _migrate_to_2(conn: Connection) -> None:
    """Intents on action rows. A database created at version 2 already has the columns."""
    have = {c["name"] for c in inspect(conn).get_columns("actions")}
    for name, ddl in _INTENT_COLUMNS.items():
        if name not in have:
            conn.execute(text(f"ALTER TABLE actions ADD COLUMN {name} {ddl}"))


def _migrate_to_3(conn: Connection) -> None:
    """The process registry. A database created at version 3 already has the table."""
    ProcessRow.__table__.create(conn, checkfirst=True)  # type: ignore[attr-defined]


# Ordered steps: MIGRATIONS[n] brings the schema from version n to n + 1.
MIGRATIONS: list[Callable[[Connection], None]] = [_migrate_to_1, _migrate_to_2, _migrate_to_3]


def migrate(engine: Engine, *, attempts: int = 10) -> int:
    """Bring the schema to SCHEMA_VERSION; returns the version found before migrating.

    Two processes may start on a fresh database at once: PostgreSQL serialises them with an
    advisory lock; on SQLite the loser's DDL fails ("already exists") and it tries again,
    finding the schema current.
    """
    for attempt in range(attempts):
        try:
            return _migrate_once(engine)
        except (OperationalError, ProgrammingError, IntegrityError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def _migrate_once(engine: Engine) -> int:
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(745100001)"))
        if not inspect(conn).has_table("schema_version"):
            SchemaVersion.__table__.create(conn)  # type: ignore[attr-defined]
        found = conn.execute(select(func.max(SchemaVersion.version))).scalar() or 0
        if found > SCHEMA_VERSION:
            raise LedgerError(
                f"state database schema is version {found}, newer than this mailtriage "
                f"({SCHEMA_VERSION}); upgrade mailtriage"
            )
        for version in range(found, SCHEMA_VERSION):
            MIGRATIONS[version](conn)
            conn.execute(SchemaVersion.__table__.insert().values(version=version + 1))  # type: ignore[attr-defined]
    return int(found)
