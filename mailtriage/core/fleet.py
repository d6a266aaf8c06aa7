"""Sharing mailboxes between the `mailtriage run` processes of one state database.

Leases keep two processes off one mailbox; this module decides how many each takes. Every
process registers in the ledger's process registry (a heartbeat). Its share is
ceil(mailboxes / live processes); it takes free mailboxes up to its share, and gives up
mailboxes down to its share only once it holds more than its limit, the share plus a
tenth. The gap between the two keeps processes that see the registry a moment apart
from passing mailboxes back and forth.

- A process that joins is counted at once: the others, now above their limit, give up
  mailboxes down to their new share at their next heartbeat (never a mailbox mid-sync),
  and the newcomer takes the mailboxes so freed: its share.
- A process that stops leaves the registry and releases its leases: the others take them
  at their next heartbeat.
- A process that dies (kill -9, a lost host) stops counting TTL/2 after its last
  heartbeat (TTL: the lease TTL), before its leases run out; each survivor then schedules
  a look at the moment the first of those leases expires and takes its share of them:
  within one TTL of the death. On the same host a dead process is recognised at once
  (`core.owners.is_dead`) and its leases are free at the next heartbeat.

Every process is assumed to run the same list of mailboxes. Which mailboxes a process
prefers is a rendezvous hash of (process, mailbox): processes taking free mailboxes at the
same moment try different ones first, and each gives up the ones it likes least.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from mailtriage.core.ledger import Ledger

# Heartbeats per lease TTL, and how long (in lease TTLs) a registry row counts after one.
HEARTBEATS_PER_TTL = 4
REGISTRY_TTL_SHARE = 0.5


def fair_share(mailboxes: int, processes: int) -> int:
    """One process's share of `mailboxes` among `processes` processes."""
    return math.ceil(mailboxes / max(1, processes))


def limit_for(share: int) -> int:
    """The most a process takes: its share plus a tenth (rounded down)."""
    return share + share // 10


class Fleet:
    """This process's place among the processes sharing the state database."""

    def __init__(
        self, ledger: Ledger, owner: str, mailboxes: Sequence[str], lease_ttl: timedelta
    ) -> None:
        self.ledger = ledger
        self.owner = owner
        self.mailboxes = list(mailboxes)
        self.period_s = lease_ttl.total_seconds() / HEARTBEATS_PER_TTL
        self.registry_ttl = lease_ttl * REGISTRY_TTL_SHARE
        self.live: list[str] = [owner]
        # Alone until the first heartbeat says otherwise.
        self.share = len(self.mailboxes)
        self.limit = limit_for(self.share)

    def _rank(self, mailbox: str) -> bytes:
        """Lower first: how much this process prefers `mailbox` (rendezvous hashing)."""
        return hashlib.blake2b(f"{self.owner}\n{mailbox}".encode(), digest_size=8).digest()

    async def beat(self) -> None:
        """Heartbeat; learn the live processes and this process's share."""
        self.live = await self.ledger.run(self.ledger.heartbeat, self.owner, self.registry_ttl)
        self.share = fair_share(len(self.mailboxes), len(self.live))
        self.limit = limit_for(self.share)

    def excess(self, held: Sequence[str], busy: Callable[[str], bool]) -> list[str]:
        """Above the limit: which held mailboxes to give up to get down to the share (idle
        ones only, the least preferred first)."""
        if len(held) <= self.limit:
            return []
        idle = [m for m in held if not busy(m)]
        return sorted(idle, key=self._rank, reverse=True)[: len(held) - self.share]

    async def free(self, room: int) -> list[str]:
        """Up to `room` mailboxes nobody alive holds, the most preferred first."""
        if room <= 0:
            return []
        free = await self.ledger.run(self.ledger.free_mailboxes, self.mailboxes)
        return sorted(free, key=self._rank)[:room]

    async def orphans_free_at(self) -> datetime | None:
        """When the first lease of a process no longer alive runs out."""
        return await self.ledger.run(self.ledger.orphans_free_at, self.mailboxes, self.live)

    async def leave(self) -> None:
        await self.ledger.run(self.ledger.leave, self.owner)

    def describe(self, held: int) -> dict[str, int]:
        return {"processes": len(self.live), "share": self.share, "held": held}


__all__ = ["HEARTBEATS_PER_TTL", "REGISTRY_TTL_SHARE", "Fleet", "fair_share", "limit_for"]
