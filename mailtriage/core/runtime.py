"""The long-running service behind `mailtriage run`.

One process hosts the scheduler, the webhook receiver (Starlette under uvicorn) and the
health and metrics endpoints. Several processes may share one state database: each mailbox
is worked on only by the holder of its lease, and each process holds at most its fair
share of the mailboxes (`core.fleet`), so they divide the work between them.

What the scheduler runs, push or no push:

- `sync:<mailbox>`: a sync of a mailbox this process holds every `runtime.sync_interval_s`
  (plus up to 10 % jitter, so mailboxes and processes spread out);
- `retry:<mailbox>`: a one-shot sync when the earliest failed message becomes due, so a retry
  never waits for the next interval or for new mail;
- `lease:<mailbox>`: a one-shot attempt when another holder's lease runs out, so a process
  restarted after kill -9 takes over from its previous incarnation as soon as that lease
  lapses (at most `lease_ttl` after the kill);
- `fleet`: the heartbeat, four times per lease TTL (and at start): give up mailboxes above
  the fair share, take free ones up to it; `orphans`: a one-shot heartbeat when the first
  lease of a process that stopped counting runs out;
- `renew`: subscription and watch renewal every 30 minutes.

Every sync goes through the `SyncCoordinator`, so a push, the interval and a retry arriving
together cost one sync.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mailtriage.core import metrics
from mailtriage.core.config import Settings
from mailtriage.core.errors import (
    AccessDeniedError,
    AuthError,
    ListenError,
    MailboxBusyError,
    MailtriageError,
)
from mailtriage.core.fleet import Fleet
from mailtriage.core.ledger import Ledger, utcnow
from mailtriage.core.owners import process_owner
from mailtriage.core.pipeline import (
    DEFAULT_RETRY,
    OnCorrection,
    Pipeline,
    RetryPolicy,
    SyncReport,
)
from mailtriage.core.ports import Classifier, Mailbox, PushChannel
from mailtriage.core.sync import SyncCoordinator

log = structlog.get_logger("mailtriage.runtime")


class _Server(uvicorn.Server):
    """uvicorn without its own signal capture: the service stops itself in order.

    uvicorn re-raises a captured SIGTERM once it has stopped serving, which would kill the
    process before in-flight syncs finish and leases are released.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# A one-shot retry is never scheduled sooner than this after the sync that found it.
MIN_RETRY_GAP_S = 1.0
# Margin after a foreign lease's expiry before asking for it again (clock skew, rounding).
LEASE_MARGIN_S = 0.5


def default_owner() -> str:
    """A lease owner id unique to this process (see `core.owners`)."""
    return process_owner()


def lease_ttl_for(interval_s: float) -> timedelta:
    """Three sync intervals, at least 30 s: a held lease is renewed at every sync and every
    third of the TTL while a sync runs; a dead holder is replaced at most this long after."""
    return timedelta(seconds=max(30.0, 3 * interval_s))


@asynccontextmanager
async def holding_lease(
    ledger: Ledger, address: str, owner: str, ttl: timedelta
) -> AsyncIterator[None]:
    """Renew `owner`'s lease on `address` every third of `ttl` while the block runs.

    A long sync (a backfill, a slow model) must not let the lease lapse under it, or another
    process would start on the same mailbox.
    """

    async def keep() -> None:
        while True:
            await asyncio.sleep(ttl.total_seconds() / 3)
            try:
                await ledger.run(ledger.acquire_lease, address, owner, ttl)
            except MailtriageError as exc:
                log.warning("lease renewal failed", mailbox=address, error=str(exc))

    task = asyncio.create_task(keep())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def listen_socket(host: str, port: int) -> socket.socket:
    """The webhook's listening socket, bound before anything starts.

    A port in use is a one-line `ListenError` (exit code 4), not a traceback from inside
    the web server's task.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ListenError(
            f"runtime.port: cannot listen on {host}:{port}: {exc.strerror or exc}"
            + (" (another process uses it)" if exc.errno == errno.EADDRINUSE else "")
        ) from None
    sock.setblocking(False)
    return sock


@dataclass(slots=True)
class MailboxHealth:
    last_ok: float | None = None
    last_error: str = ""
    held: bool = False


class Service:
    """Scheduler + webhooks + health around one Pipeline and its mailboxes."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        classifier: Classifier,
        mailboxes: Sequence[Mailbox],
        pushes: Sequence[PushChannel] = (),
        *,
        owner: str | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        shutdown_grace_s: float = 20.0,
        on_correction: OnCorrection | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.owner = owner or default_owner()
        self.mailboxes = {m.address: m for m in mailboxes}
        self.pushes = list(pushes)
        self.classifier = classifier
        self.pipeline = Pipeline(
            settings,
            ledger,
            classifier,
            owner=self.owner,
            retry=retry,
            exclusive=True,
            on_correction=on_correction,
        )
        self.coordinator = SyncCoordinator(self.sync)
        self.health = {a: MailboxHealth() for a in self.mailboxes}
        self.interval_s = settings.runtime.sync_interval_s
        self.lease_ttl = lease_ttl_for(self.interval_s)
        self.fleet = Fleet(ledger, self.owner, list(self.mailboxes), self.lease_ttl)
        self._taking: set[str] = set()  # lease attempts under way (counted in the share)
        self.shutdown_grace_s = shutdown_grace_s
        self.reports: list[SyncReport] = []
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._sched: AsyncIOScheduler | None = None

    # -- work --------------------------------------------------------------------------

    async def sync(self, address: str) -> SyncReport | None:
        """Sync one mailbox if this process holds (or can take) its lease.

        Afterwards the mailbox's next due retry is put on the schedule; when another live
        process holds the lease, the moment that lease runs out is.
        """
        health = self.health[address]
        if not health.held:
            if self.held_count + len(self._taking) >= self.fleet.share:
                return None  # a full share: the mailbox is another process's to take
            self._taking.add(address)
        try:
            got = await self.ledger.run(
                self.ledger.acquire_lease, address, self.owner, self.lease_ttl
            )
        finally:
            self._taking.discard(address)
        if not got:
            if health.held:
                log.info("lease lost", mailbox=address)
            health.held = False
            await self._ask_again_at_expiry(address)
            return None
        if not health.held:
            log.info("lease taken", mailbox=address, owner=self.owner)
        health.held = True
        try:
            async with holding_lease(self.ledger, address, self.owner, self.lease_ttl):
                report = await self.pipeline.sync_mailbox(self.mailboxes[address])
        except (AccessDeniedError, AuthError) as exc:
            health.last_error = str(exc)
            log.error("mailbox skipped", mailbox=address, error=str(exc))
            return None
        except MailtriageError as exc:
            health.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("sync failed", mailbox=address, error=health.last_error)
            return None
        await self._schedule_retry(address)
        health.last_ok = time.time()
        health.last_error = ""
        self.reports.append(report)
        if report.processed:
            log.info("synced", mailbox=address, processed=report.processed, pages=report.pages)
        return report

    @property
    def held_count(self) -> int:
        return sum(1 for h in self.health.values() if h.held)

    async def rebalance(self) -> None:
        """Heartbeat; above the limit, give up mailboxes down to the fair share; below the
        share, take free ones up to it."""
        try:
            await self.fleet.beat()
            held = [a for a, h in self.health.items() if h.held]
            for address in self.fleet.excess(held, self.coordinator.busy):
                await self.ledger.run(self.ledger.release_lease, address, self.owner)
                self.health[address].held = False
                log.info("lease given up", mailbox=address, share=self.fleet.share)
            room = self.fleet.share - self.held_count - len(self._taking)
            for address in await self.fleet.free(room):
                self.coordinator.trigger_nowait(address)
            orphans_at = await self.fleet.orphans_free_at()
        except MailtriageError as exc:
            log.warning("fleet heartbeat failed", error=str(exc))
            return
        if orphans_at is not None:
            self._at("orphans", orphans_at + timedelta(seconds=LEASE_MARGIN_S), self.rebalance)

    async def _interval(self, address: str) -> None:
        """The interval sync of a mailbox this process holds (`rebalance` takes new ones)."""
        if self.health[address].held:
            self.coordinator.trigger_nowait(address)

    async def _schedule_retry(self, address: str) -> None:
        """A one-shot sync when the mailbox's earliest failed message becomes due.

        Only after a sync that succeeded: after a failed one, the interval paces the next
        attempt, so a provider outage is not hammered at the retry schedule's pace.
        """
        try:
            due = await self.ledger.run(self.ledger.next_retry_at, address)
        except MailtriageError as exc:
            log.warning("retry schedule unavailable", mailbox=address, error=str(exc))
            return
        if due is not None:
            earliest = utcnow() + timedelta(seconds=MIN_RETRY_GAP_S)
            self._once(f"retry:{address}", max(due, earliest), address)

    async def _ask_again_at_expiry(self, address: str) -> None:
        """A one-shot lease attempt right after the current holder's lease runs out."""
        try:
            expires = await self.ledger.run(self.ledger.lease_expiry, address)
        except MailtriageError as exc:
            log.warning("lease expiry unavailable", mailbox=address, error=str(exc))
            return
        when = (expires or utcnow()) + timedelta(seconds=LEASE_MARGIN_S)
        self._once(f"lease:{address}", when, address)

    def _once(self, job_id: str, when: datetime, address: str) -> None:
        """Trigger a sync of `address` at `when` (replacing an earlier job of that id)."""
        self._at(job_id, when, self.coordinator.trigger, address)

    def _at(self, job_id: str, when: datetime, func: Any, *args: Any) -> None:
        """Run `func(*args)` once at `when` (replacing an earlier job of that id)."""
        if self._sched is None or not self._sched.running:
            return
        self._sched.add_job(
            func,
            DateTrigger(run_date=when),
            args=list(args),
            id=job_id,
            replace_existing=True,
            misfire_grace_time=None,
        )

    async def renew(self) -> None:
        for push in self.pushes:
            try:
                await push.renew_due()
            except MailtriageError as exc:
                log.warning("renewal failed", provider=push.provider, error=str(exc))

    # -- web app -----------------------------------------------------------------------

    def app(self) -> Starlette:
        routes: list[Any] = [
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/readyz", self._readyz, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
        ]
        for push in self.pushes:
            routes.extend(push.routes(self.coordinator.trigger))
        return Starlette(routes=routes)

    async def _healthz(self, _request: Request) -> Response:
        return PlainTextResponse("ok\n")

    @property
    def ready_within_s(self) -> float:
        """How recent every mailbox's last sync must be for /readyz to say ready.

        Longer than a lease: after kill -9 and a restart, the new process takes over when
        the old lease lapses, and readiness should not flap in between.
        """
        return max(3 * self.interval_s, self.lease_ttl.total_seconds() + 3 * self.interval_s)

    async def readiness(self) -> dict[str, Any]:
        """Ready = database reachable and every mailbox synced within `ready_within_s`."""
        db_ok = await self.ledger.run(self.ledger.ping)
        limit = self.ready_within_s
        boxes: dict[str, Any] = {}
        for address in self.mailboxes:
            last = await self.ledger.run(self.ledger.last_sync, address) if db_ok else None
            age = (utcnow() - last).total_seconds() if last else None
            boxes[address] = {
                "last_sync_age_s": round(age, 1) if age is not None else None,
                "recent": age is not None and age <= limit,
                "held_here": self.health[address].held,
                "error": self.health[address].last_error or None,
            }
        ready = db_ok and all(b["recent"] for b in boxes.values())
        fleet = self.fleet.describe(self.held_count)
        return {"ready": ready, "database": db_ok, "fleet": fleet, "mailboxes": boxes}

    async def _readyz(self, _request: Request) -> Response:
        body = await self.readiness()
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    async def _metrics(self, _request: Request) -> Response:
        now = utcnow()
        for address in self.mailboxes:
            last = await self.ledger.run(self.ledger.last_sync, address)
            if last is not None:
                metrics.SYNC_LAG.labels(address).set((now - last).total_seconds())
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    # -- lifecycle -----------------------------------------------------------------------

    def scheduler(self) -> AsyncIOScheduler:
        """The periodic jobs; their first run is one interval after start (start-up syncs
        every mailbox at once). Late runs still run, coalesced into one."""
        sched = AsyncIOScheduler()
        jitter = max(1, int(self.interval_s * 0.1))
        for address in self.mailboxes:
            sched.add_job(
                self._interval,
                IntervalTrigger(seconds=self.interval_s, jitter=jitter),
                args=[address],
                id=f"sync:{address}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        sched.add_job(
            self.rebalance,
            IntervalTrigger(seconds=self.fleet.period_s),
            id="fleet",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        if self.pushes:
            sched.add_job(
                self.renew,
                IntervalTrigger(minutes=30),
                id="renew",
                coalesce=True,
                misfire_grace_time=None,
            )
        return sched

    async def start(self) -> None:
        """Start the schedule and intake: push installation, the first heartbeat and a first
        sync of every mailbox of this process's share. `serve` calls it once the webhook is
        up; tests may call it alone."""
        self.fleet = Fleet(self.ledger, self.owner, list(self.mailboxes), self.lease_ttl)
        self._sched = self.scheduler()
        self._sched.start()
        await self._start_intake()

    async def serve(self, *, host: str | None = None, port: int | None = None) -> None:
        """Run until SIGTERM/SIGINT; then stop intake, finish in-flight work, persist state."""
        host = host or self.settings.runtime.host
        sock = listen_socket(host, self.settings.runtime.port if port is None else port)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app(),
            host=host,
            port=self.port,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self._server = server = _Server(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            # Push installation needs the webhook up: Graph validates the URL at creation.
            while not server.started and not serving.done():
                await asyncio.sleep(0.02)
            if not serving.done():
                await self.start()
            await serving
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            sock.close()
            await self.shutdown()

    async def _start_intake(self) -> None:
        for push in self.pushes:
            try:
                await push.install()
            except MailtriageError as exc:
                log.error("push install failed", provider=push.provider, error=str(exc))
        await self.rebalance()
        log.info(
            "started",
            owner=self.owner,
            mailboxes=len(self.mailboxes),
            processes=len(self.fleet.live),
            share=self.fleet.share,
        )

    def request_stop(self) -> None:
        """Stop intake; `serve` then finishes in-flight work and returns."""
        log.info("stop requested", owner=self.owner)
        if self._server is not None:
            self._server.should_exit = True

    async def shutdown(self) -> None:
        log.info("stopping", owner=self.owner)
        if self._sched is not None and self._sched.running:
            self._sched.shutdown(wait=False)
        await self.coordinator.aclose(self.shutdown_grace_s)
        for address in self.mailboxes:
            await self.ledger.run(self.ledger.release_lease, address, self.owner)
        try:
            await self.fleet.leave()
        except MailtriageError as exc:  # its row expires by itself
            log.warning("fleet leave failed", error=str(exc))
        for mailbox in self.mailboxes.values():
            try:
                await mailbox.aclose()
            except Exception as exc:  # closing must not hide the shutdown
                log.warning("close failed", mailbox=mailbox.address, error=str(exc))
        closer = getattr(self.classifier, "aclose", None)
        if closer is not None:
            await closer()
        log.info("stopped", owner=self.owner)


async def sync_all(
    pipeline: Pipeline,
    mailboxes: Sequence[Mailbox],
    *,
    lease_ttl: timedelta = timedelta(minutes=2),
) -> dict[str, SyncReport | MailtriageError]:
    """One pass over every mailbox; a mailbox that fails is reported, the others go on.

    Each mailbox is synced under its lease, as `mailtriage run` does, so a one-shot sync
    never works on a mailbox at the same time as a running service.
    """
    out: dict[str, SyncReport | MailtriageError] = {}
    ledger = pipeline.ledger
    owner = pipeline.owner or default_owner()

    async def one(mb: Mailbox) -> None:
        if not await ledger.run(ledger.acquire_lease, mb.address, owner, lease_ttl):
            holder = await ledger.run(ledger.lease_owner, mb.address)
            out[mb.address] = MailboxBusyError(
                f"{mb.address}: another mailtriage process ({holder}) is working on this "
                "mailbox; it will catch up by itself, or try again once it has stopped"
            )
            return
        try:
            async with holding_lease(ledger, mb.address, owner, lease_ttl):
                out[mb.address] = await pipeline.sync_mailbox(mb)
        except MailtriageError as exc:
            log.error("mailbox failed", mailbox=mb.address, error=str(exc))
            out[mb.address] = exc
        finally:
            await ledger.run(ledger.release_lease, mb.address, owner)

    await asyncio.gather(*(one(mb) for mb in mailboxes))
    return out
