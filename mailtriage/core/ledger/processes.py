"""The process registry: which `mailtriage run` processes are alive, and whose leases are
free, so that processes sharing one database divide the mailboxes fairly (`core.fleet`).

Each process refreshes its row (a heartbeat) well within `ttl`; a row whose `expires_at`
has passed, or whose owner is provably dead (`core.owners.is_dead`), no longer counts.
Rows are only advisory: what keeps two processes off one mailbox is still its lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from mailtriage.core.ledger.base import LedgerBase
from mailtriage.core.ledger.schema import LeaseRow, ProcessRow, aware, utcnow
from mailtriage.core.owners import is_dead

# Rows this long past their expiry are deleted by the next heartbeat of any process.
FORGET_AFTER = timedelta(hours=1)


class Processes(LedgerBase):
    """Heartbeats, the live processes, and the leases nobody alive holds."""

    def heartbeat(self, owner: str, ttl: timedelta) -> list[str]:
        """Refresh `owner`'s row (alive for `ttl` more); the live owners, `owner` included,
        in a stable order (when each started)."""
        now = utcnow()
        self._upsert(
            ProcessRow,
            {"owner": owner},
            {"heartbeat_at": now, "expires_at": now + ttl},
        )
        with self.session() as s:
            s.execute(delete(ProcessRow).where(ProcessRow.expires_at < now - FORGET_AFTER))
            rows = s.execute(
                select(ProcessRow.owner)
                .where(ProcessRow.expires_at >= now)
                .order_by(ProcessRow.started_at, ProcessRow.owner)
            ).all()
        return [o for (o,) in rows if o == owner or not is_dead(o)]

    def leave(self, owner: str) -> None:
        """`owner` stops: the others count one process fewer at once."""
        with self.session() as s:
            s.execute(delete(ProcessRow).where(ProcessRow.owner == owner))

    def free_mailboxes(self, mailboxes: Sequence[str]) -> list[str]:
        """Those of `mailboxes` that a process may take now: no lease, an expired one, or
        one whose holder is provably dead."""
        now = utcnow()
        with self.session() as s:
            leases = {
                m: (o, aware(e))
                for m, o, e in s.execute(
                    select(LeaseRow.mailbox, LeaseRow.owner, LeaseRow.expires_at)
                ).all()
            }
        out = []
        for mailbox in mailboxes:
            lease = leases.get(mailbox)
            if lease is None or (lease[1] or now) < now or is_dead(lease[0]):
                out.append(mailbox)
        return out

    def orphans_free_at(self, mailboxes: Sequence[str], live: Sequence[str]) -> datetime | None:
        """When the first lease held by a process that is no longer alive runs out (None:
        no such lease): the moment a survivor can take that mailbox."""
        now = utcnow()
        with self.session() as s:
            rows = s.execute(
                select(LeaseRow.mailbox, LeaseRow.owner, LeaseRow.expires_at).where(
                    LeaseRow.expires_at >= now
                )
            ).all()
        alive, wanted = set(live), set(mailboxes)
        times = [aware(e) for m, o, e in rows if m in wanted and o not in alive]
        return min((t for t in times if t is not None), default=None)

    def lease_counts(self) -> dict[str, int]:
        """Unexpired leases per owner (for `doctor`, the fleet bench and tests)."""
        now = utcnow()
        with self.session() as s:
            rows = s.execute(select(LeaseRow.owner).where(LeaseRow.expires_at >= now)).all()
        out: dict[str, int] = {}
        for (owner,) in rows:
            out[owner] = out.get(owner, 0) + 1
        return out
