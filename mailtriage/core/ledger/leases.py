"""Per-mailbox leases: which process works on which mailbox."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from mailtriage.core.ledger.base import LedgerBase
from mailtriage.core.ledger.schema import LeaseRow, aware, utcnow
from mailtriage.core.owners import is_dead


class Leases(LedgerBase):
    """A mailbox is worked on by the holder of its unexpired lease."""

    def acquire_lease(self, mailbox: str, owner: str, ttl: timedelta) -> bool:
        """Take or extend the mailbox lease; False when another live owner holds it.

        Works on SQLite and PostgreSQL alike: an insert races on the primary key, and a
        takeover is a conditional update that only matches an expired or own lease, or one
        whose holder is provably dead (`core.owners.is_dead`).
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
                held = s.get(LeaseRow, mailbox)
                if held is not None:
                    if not is_dead(held.owner):
                        return False
                    # Its holder was a local process that died (kill -9): take it now.
                    result = s.execute(
                        update(LeaseRow)
                        .where(LeaseRow.mailbox == mailbox, LeaseRow.owner == held.owner)
                        .values(owner=owner, expires_at=expires)
                    )
                    return getattr(result, "rowcount", 0) == 1
                s.add(LeaseRow(mailbox=mailbox, owner=owner, expires_at=expires))
            return True
        except IntegrityError:
            return False

    def release_lease(self, mailbox: str, owner: str) -> None:
        with self.session() as s:
            s.execute(delete(LeaseRow).where(LeaseRow.mailbox == mailbox, LeaseRow.owner == owner))

    def lease_expiry(self, mailbox: str) -> datetime | None:
        """When the live lease on `mailbox` runs out (None: no live lease).

        A process that found the lease taken asks again at that moment, so a holder that
        died (kill -9) is replaced as soon as its lease lapses, not an interval later.
        """
        with self.session() as s:
            row = s.get(LeaseRow, mailbox)
            expires = aware(row.expires_at) if row is not None else None
            return expires if expires is not None and expires >= utcnow() else None

    def lease_owner(self, mailbox: str) -> str | None:
        with self.session() as s:
            row = s.get(LeaseRow, mailbox)
            if row is None or (aware(row.expires_at) or utcnow()) < utcnow():
                return None
            return row.owner
