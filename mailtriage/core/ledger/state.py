"""Per-mailbox sync cursors and the connectors' key/value state (`StateStore`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select

from mailtriage.core.ledger.base import LedgerBase
from mailtriage.core.ledger.schema import CursorRow, KeyValueRow, aware, utcnow


class State(LedgerBase):
    """Cursors (where intake resumes) and small key/value state for connectors."""

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
            return aware(row.last_sync_at) if row else None

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
