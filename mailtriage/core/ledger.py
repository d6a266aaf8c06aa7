"""The ledger: mailtriage's state database (SQLAlchemy 2; SQLite by default, PostgreSQL by URL).

One row per (mailbox, message) under a unique constraint: inserting that row is how a worker
claims a message, so two processes can never both act on it. Each planned action has its own
row and state, so a retry re-applies only what is missing (a forward is never sent twice).
Message bodies are stored only when `store_text = true`.

The schema is versioned: `schema_version` holds the applied version and `MIGRATIONS` lists
the steps to reach the current one (see `migrate`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from mailtriage.core.actions import Action, ActionPlan, Forward, Label, MarkRead, Move
from mailtriage.core.decision import Decision
from mailtriage.core.errors import LedgerError
from mailtriage.core.message import Message

T = TypeVar("T")

SCHEMA_VERSION = 1


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
    APPLIED = "applied"
    FAILED = "failed"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
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
    error: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

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


# Ordered steps: MIGRATIONS[n] brings the schema from version n to n + 1.
MIGRATIONS: list[Callable[[Connection], None]] = [_migrate_to_1]


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
    actions: tuple[tuple[str, Action, str], ...]  # (state, action, error)
    raw_updated_at: datetime | None = None  # as stored, for compare-and-set

    @property
    def pending_actions(self) -> list[Action]:
        return [a for state, a, _ in self.actions if state != ActionState.APPLIED]

    def describe_actions(self) -> str:
        done = [a.describe() for state, a, _ in self.actions if state == ActionState.APPLIED]
        return " + ".join(done) or "nothing"


def _snapshot(row: MessageRow) -> Record:
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
        updated_at=_aware(row.updated_at) or utcnow(),
        actions=tuple((a.state, action_from_row(a.kind, a.params), a.error) for a in row.actions),
        raw_updated_at=row.updated_at,
    )


def _make_engine(url: str) -> Engine:
    engine = create_engine(url, future=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


class Ledger:
    """Synchronous ledger API, plus async `StateStore` methods for connectors.

    Every method is one short transaction. Callers on the event loop use `run()` to keep
    database latency (PostgreSQL over a network) off the loop.
    """

    def __init__(self, url: str, *, store_text: bool = False) -> None:
        try:
            self.engine = _make_engine(url)
            migrate(self.engine)
        except SQLAlchemyError as exc:
            raise LedgerError(f"state database {self._redacted(url)}: {exc}") from exc
        self.store_text = store_text
        self.url = url

    @staticmethod
    def _redacted(url: str) -> str:
        from sqlalchemy.engine import make_url

        try:
            return make_url(url).render_as_string(hide_password=True)
        except Exception:
            return "(unparseable URL)"

    @property
    def display_url(self) -> str:
        return self._redacted(self.url)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a ledger method in a worker thread."""
        return await asyncio.to_thread(fn, *args)

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as s, s.begin():
                yield s
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise LedgerError(f"state database error: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        """True when the database answers (readiness)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    # -- messages ----------------------------------------------------------------------

    def find(
        self, mailbox: str, provider_id: str, internet_message_id: str | None = None
    ) -> Record | None:
        """The row for this message: by provider id (original or current) or Message-ID."""
        with self.session() as s:
            cond = (MessageRow.provider_id == provider_id) | (
                MessageRow.current_provider_id == provider_id
            )
            if internet_message_id:
                cond = cond | (MessageRow.internet_message_id == internet_message_id)
            row = s.scalars(
                select(MessageRow).where(MessageRow.mailbox == mailbox, cond).limit(1)
            ).first()
            return _snapshot(row) if row else None

    def claim(self, message: Message, owner: str = "") -> Record | None:
        """Insert the message's row; None when another worker (or an earlier run) has it."""
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
        )
        return self._insert(row)

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
        )
        return self._insert(row)

    def _insert(self, row: MessageRow) -> Record | None:
        """Insert a new message row; None when the unique (mailbox, message) row exists."""
        try:
            with self.session() as s:
                s.add(row)
                s.flush()
                s.refresh(row, attribute_names=["actions"])
                return _snapshot(row)
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
            row.actions.clear()
            s.flush()
            for seq, action in enumerate(plan.actions):
                row.actions.append(
                    ActionRow(seq=seq, kind=action.kind, params=action_to_json(action))
                )
            s.flush()
            return _snapshot(row)

    def record_action(
        self, row_id: int, seq: int, *, ok: bool, error: str = "", new_id: str | None = None
    ) -> None:
        with self.session() as s:
            s.execute(
                update(ActionRow)
                .where(ActionRow.message_id == row_id, ActionRow.seq == seq)
                .values(
                    state=ActionState.APPLIED if ok else ActionState.FAILED,
                    error=error[:2000],
                    updated_at=utcnow(),
                )
            )
            if new_id:
                s.execute(
                    update(MessageRow)
                    .where(MessageRow.id == row_id)
                    .values(current_provider_id=new_id)
                )

    def finish(self, row_id: int) -> None:
        with self.session() as s:
            s.execute(
                update(MessageRow)
                .where(MessageRow.id == row_id)
                .values(
                    status=Status.DONE, last_error="", next_attempt_at=None, updated_at=utcnow()
                )
            )

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
            return [_snapshot(r) for r in rows]

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
            return _snapshot(s.get_one(MessageRow, row_id))

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
            return [_snapshot(r) for r in s.scalars(q.limit(limit)).all()]

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

    # -- cursors -----------------------------------------------------------------------

    def get_cursor(self, mailbox: str) -> str | None:
        with self.session() as s:
            row = s.get(CursorRow, mailbox)
            return row.value if row else None

    def set_cursor(self, mailbox: str, value: str | None) -> None:
        now = utcnow()
        self._upsert(
            CursorRow,
            {"mailbox": mailbox},
            {"value": value, "updated_at": now, "last_sync_at": now},
        )

    def last_sync(self, mailbox: str) -> datetime | None:
        with self.session() as s:
            row = s.get(CursorRow, mailbox)
            return _aware(row.last_sync_at) if row else None

    # -- key/value state (StateStore) ----------------------------------------------------

    def kv_get(self, mailbox: str, key: str) -> str | None:
        with self.session() as s:
            row = s.get(KeyValueRow, (mailbox, key))
            return row.value if row else None

    def kv_put(self, mailbox: str, key: str, value: str | None) -> None:
        if value is None:
            with self.session() as s:
                s.execute(
                    delete(KeyValueRow).where(
                        KeyValueRow.mailbox == mailbox, KeyValueRow.key == key
                    )
                )
            return
        self._upsert(
            KeyValueRow, {"mailbox": mailbox, "key": key}, {"value": value, "updated_at": utcnow()}
        )

    def _upsert(self, model: type[Base], keys: dict[str, Any], values: dict[str, Any]) -> None:
        """Insert or update one row atomically (two writers may race on the same key)."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt: Any = pg_insert(model).values(**keys, **values)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(model).values(**keys, **values)
        stmt = stmt.on_conflict_do_update(index_elements=list(keys), set_=values)
        with self.session() as s:
            s.execute(stmt)

    def kv_items(self, mailbox: str, prefix: str = "") -> list[tuple[str, str]]:
        with self.session() as s:
            rows = s.scalars(
                select(KeyValueRow).where(
                    KeyValueRow.mailbox == mailbox, KeyValueRow.key.startswith(prefix)
                )
            ).all()
            return [(r.key, r.value) for r in rows]

    async def get(self, mailbox: str, key: str) -> str | None:
        return await self.run(self.kv_get, mailbox, key)

    async def put(self, mailbox: str, key: str, value: str | None) -> None:
        await self.run(self.kv_put, mailbox, key, value)

    # -- leases ------------------------------------------------------------------------

    def acquire_lease(self, mailbox: str, owner: str, ttl: timedelta) -> bool:
        """Take or extend the mailbox lease; False when another live owner holds it.

        Works on SQLite and PostgreSQL alike: an insert races on the primary key, and a
        takeover is a conditional update that only matches an expired or own lease.
        """
        now = utcnow()
        expires = now + ttl
        try:
            with self.session() as s:
                result = s.execute(
                    update(LeaseRow)
                    .where(
                        LeaseRow.mailbox == mailbox,
                        (LeaseRow.owner == owner) | (LeaseRow.expires_at < now),
                    )
                    .values(owner=owner, expires_at=expires)
                )
                if getattr(result, "rowcount", 0) == 1:
                    return True
                if s.get(LeaseRow, mailbox) is not None:
                    return False
                s.add(LeaseRow(mailbox=mailbox, owner=owner, expires_at=expires))
            return True
        except IntegrityError:
            return False

    def release_lease(self, mailbox: str, owner: str) -> None:
        with self.session() as s:
            s.execute(delete(LeaseRow).where(LeaseRow.mailbox == mailbox, LeaseRow.owner == owner))

    def lease_owner(self, mailbox: str) -> str | None:
        with self.session() as s:
            row = s.get(LeaseRow, mailbox)
            if row is None or (_aware(row.expires_at) or utcnow()) < utcnow():
                return None
            return row.owner

    # -- examples and corrections (learning) ---------------------------------------------

    def add_example(
        self,
        mailbox: str,
        category: str,
        excerpt: str,
        *,
        source: str,
        provider_id: str = "",
        embedding: Sequence[float] | None = None,
        text_: str | None = None,
    ) -> int:
        with self.session() as s:
            row = ExampleRow(
                mailbox=mailbox,
                category=category,
                excerpt=excerpt,
                source=source,
                provider_id=provider_id,
                embedding=json.dumps([round(float(x), 6) for x in embedding])
                if embedding is not None
                else None,
                text=text_ if self.store_text else None,
            )
            s.add(row)
            s.flush()
            return row.id

    def examples(self, mailbox: str | None = None) -> list[ExampleRow]:
        with self.session() as s:
            q = select(ExampleRow).order_by(ExampleRow.id)
            if mailbox:
                q = q.where(ExampleRow.mailbox == mailbox)
            return list(s.scalars(q).all())

    def examples_stamp(self, mailbox: str | None = None) -> tuple[int, int]:
        """(count, highest id) of the examples of `mailbox`: changes when any is added."""
        with self.session() as s:
            q = select(func.count(), func.max(ExampleRow.id)).select_from(ExampleRow)
            if mailbox:
                q = q.where(ExampleRow.mailbox == mailbox)
            count, top = s.execute(q).one()
            return int(count or 0), int(top or 0)

    def record_correction(self, row_id: int, to_category: str) -> bool:
        """Record that staff moved a triaged message to another category; False if no change."""
        with self.session() as s:
            row = s.get_one(MessageRow, row_id)
            last = s.scalars(
                select(CorrectionRow.to_category)
                .where(CorrectionRow.message_id == row_id)
                .order_by(CorrectionRow.id.desc())
                .limit(1)
            ).first()
            # Unchanged, or the same move seen twice (two labels of one category): no news.
            if (last or row.category) == to_category:
                return False
            s.add(
                CorrectionRow(
                    message_id=row.id,
                    mailbox=row.mailbox,
                    from_category=row.category or "",
                    to_category=to_category,
                )
            )
            return True

    def correction_count(self, *, since: datetime | None = None, mailbox: str | None = None) -> int:
        with self.session() as s:
            q = select(func.count()).select_from(CorrectionRow)
            if since:
                q = q.where(CorrectionRow.created_at >= since)
            if mailbox:
                q = q.where(CorrectionRow.mailbox == mailbox)
            return int(s.execute(q).scalar() or 0)
