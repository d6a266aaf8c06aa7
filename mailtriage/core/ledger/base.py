"""The ledger's engine and transactions, shared by every concern's mixin."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from mailtriage.core.errors import ConfigError, DatabaseUnavailableError, LedgerError
from mailtriage.core.ledger.schema import Base, migrate
from mailtriage.core.preflight import state_url_problem

T = TypeVar("T")


def _make_engine(url: str) -> Engine:
    """The engine; a pool pre-ping (`SELECT 1` at every checkout) only for a server.

    A server's connection can die while pooled (a restart, an idle timeout), and the ping
    replaces it before a transaction fails on it. A SQLite connection is a file handle that
    cannot drop, so there the ping would only cost a statement per transaction.
    """
    engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


def first_line(exc: BaseException | None) -> str:
    """The first non-empty line of an error: drivers add SQL, hints and links below it."""
    text = str(exc or "").strip()
    return next((line.strip() for line in text.splitlines() if line.strip()), "no detail")


class LedgerBase:
    """The engine, one-transaction sessions, and the upsert every concern needs.

    Every method of the ledger is one short transaction. Callers on the event loop use
    `run()` to keep database latency (PostgreSQL over a network) off the loop.
    """

    def __init__(self, url: str, *, store_text: bool = False) -> None:
        """Connect and migrate. A malformed URL is a ConfigError; a database that cannot
        be reached is a one-line DatabaseUnavailableError (exit code 3)."""
        problem = state_url_problem(url)
        if problem:
            raise ConfigError(problem)
        try:
            self.engine = _make_engine(url)
            migrate(self.engine)
        except DBAPIError as exc:
            raise DatabaseUnavailableError(
                f"state database {self._redacted(url)}: cannot connect: {first_line(exc.orig)}"
            ) from exc
        except SQLAlchemyError as exc:
            raise LedgerError(f"state database {self._redacted(url)}: {first_line(exc)}") from exc
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
