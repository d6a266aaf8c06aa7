"""Labelled examples and staff corrections: what the classifiers learn from."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select

from mailtriage.core.ledger.base import LedgerBase
from mailtriage.core.ledger.schema import CorrectionRow, ExampleRow, MessageRow


class Learning(LedgerBase):
    """Examples (history, corrections) and the corrections count for `stats`."""

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
