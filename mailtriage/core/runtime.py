"""The long-running service behind `mailtriage run`.

One process hosts the scheduler (periodic sync per mailbox, subscription/watch renewal), the
webhook receiver (Starlette under uvicorn) and the health and metrics endpoints. Several
processes may share one state database: each mailbox is worked on only by the holder of its
lease, so they divide the mailboxes between them instead of both working on each one.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mailtriage.core import metrics
from mailtriage.core.config import Settings
from mailtriage.core.errors import AccessDeniedError, AuthError, MailboxBusyError, MailtriageError
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


def default_owner() -> str:
    """A lease owner id unique to this process (see `core.owners`)."""
    return process_owner()


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
        self.lease_ttl = timedelta(seconds=max(60.0, 3 * self.interval_s))
        self.shutdown_grace_s = shutdown_grace_s
        self.reports: list[SyncReport] = []
        self._server: uvicorn.Server | None = None

    # -- work --------------------------------------------------------------------------

    async def sync(self, address: str) -> SyncReport | None:
        """Sync one mailbox if this process holds (or can take) its lease."""
        health = self.health[address]
        got = await self.ledger.run(self.ledger.acquire_lease, address, self.owner, self.lease_ttl)
        if not got:
            if health.held:
                log.info("lease lost", mailbox=address)
            health.held = False
            return None
        health.held = True
        try:
            report = await self.pipeline.sync_mailbox(self.mailboxes[address])
        except (AccessDeniedError, AuthError) as exc:
            health.last_error = str(exc)
            log.error("mailbox skipped", mailbox=address, error=str(exc))
            return None
        except MailtriageError as exc:
            health.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("sync failed", mailbox=address, error=health.last_error)
            return None
        health.last_ok = time.time()
        health.last_error = ""
        self.reports.append(report)
        if report.processed:
            log.info("synced", mailbox=address, processed=report.processed, pages=report.pages)
        return report

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

    async def readiness(self) -> dict[str, Any]:
        """Ready = database reachable and every mailbox synced within 3 intervals."""
        db_ok = await self.ledger.run(self.ledger.ping)
        limit = max(3 * self.interval_s, 60.0)
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
        return {"ready": ready, "database": db_ok, "mailboxes": boxes}

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
        sched = AsyncIOScheduler()
        jitter = max(1, int(self.interval_s * 0.1))
        for address in self.mailboxes:
            sched.add_job(
                self.coordinator.trigger,
                IntervalTrigger(seconds=self.interval_s, jitter=jitter),
                args=[address],
                id=f"sync:{address}",
                max_instances=1,
                coalesce=True,
            )
        if self.pushes:
            sched.add_job(self.renew, IntervalTrigger(minutes=30), id="renew", coalesce=True)
        return sched

    async def serve(self, *, host: str | None = None, port: int | None = None) -> None:
        """Run until SIGTERM/SIGINT; then stop intake, finish in-flight work, persist state."""
        config = uvicorn.Config(
            self.app(),
            host=host or self.settings.runtime.host,
            port=self.settings.runtime.port if port is None else port,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self._server = server = _Server(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        sched = self.scheduler()
        serving = asyncio.create_task(server.serve())
        try:
            # Push installation needs the webhook up: Graph validates the URL at creation.
            while not server.started and not serving.done():
                await asyncio.sleep(0.02)
            if not serving.done():
                sched.start()
                await self._start_intake()
            await serving
        finally:
            await self.shutdown(sched if sched.running else None)

    async def _start_intake(self) -> None:
        for push in self.pushes:
            try:
                await push.install()
            except MailtriageError as exc:
                log.error("push install failed", provider=push.provider, error=str(exc))
        for address in self.mailboxes:
            self.coordinator.trigger_nowait(address)
        log.info("started", owner=self.owner, mailboxes=len(self.mailboxes))

    def request_stop(self) -> None:
        """Stop intake; `serve` then finishes in-flight work and returns."""
        log.info("stop requested", owner=self.owner)
        if self._server is not None:
            self._server.should_exit = True

    async def shutdown(self, sched: AsyncIOScheduler | None = None) -> None:
        log.info("stopping", owner=self.owner)
        if sched is not None:
            sched.shutdown(wait=False)
        await self.coordinator.aclose(self.shutdown_grace_s)
        for address in self.mailboxes:
            await self.ledger.run(self.ledger.release_lease, address, self.owner)
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

    async def keep_lease(address: str) -> None:
        while True:
            await asyncio.sleep(lease_ttl.total_seconds() / 3)
            await ledger.run(ledger.acquire_lease, address, owner, lease_ttl)

    async def one(mb: Mailbox) -> None:
        if not await ledger.run(ledger.acquire_lease, mb.address, owner, lease_ttl):
            holder = await ledger.run(ledger.lease_owner, mb.address)
            out[mb.address] = MailboxBusyError(
                f"{mb.address}: another mailtriage process ({holder}) is working on this "
                "mailbox; it will catch up by itself, or try again once it has stopped"
            )
            return
        renewer = asyncio.create_task(keep_lease(mb.address))
        try:
            out[mb.address] = await pipeline.sync_mailbox(mb)
        except MailtriageError as exc:
            log.error("mailbox failed", mailbox=mb.address, error=str(exc))
            out[mb.address] = exc
        finally:
            renewer.cancel()
            await ledger.run(ledger.release_lease, mb.address, owner)

    await asyncio.gather(*(one(mb) for mb in mailboxes))
    return out
