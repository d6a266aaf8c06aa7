"""The triage pipeline: intake → rules → classifier → plan → ledger → native actions.

Push notifications and scheduled syncs both end in `Pipeline.sync_mailbox`, so there is one
path and one set of guarantees:

- a message is claimed in the ledger (unique row) before anything else, so it is processed
  once even with two workers;
- each action's state is recorded as it happens, and forwards and moves are recorded as
  intents before they are attempted, so a retry applies only what is missing and looks
  for the evidence of an interrupted forward or move before repeating it;
- the cursor is saved only after the page's messages are recorded: a crash replays a page,
  never skips one, and the replay finds the rows already there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from mailtriage.core import metrics, planner, rules
from mailtriage.core.actions import ActionPlan, Forward
from mailtriage.core.config import Settings
from mailtriage.core.decision import ConfidenceSource, Decision, Skip
from mailtriage.core.errors import (
    ClassifierError,
    ConnectorError,
    MailtriageError,
    MessageParseError,
    NotFoundError,
)
from mailtriage.core.intents import Intent, needs_intent
from mailtriage.core.journal import LedgerJournal
from mailtriage.core.ledger import ActionState, Ledger, Record, Status, utcnow
from mailtriage.core.locations import category_of_location
from mailtriage.core.message import TOO_LARGE, Message
from mailtriage.core.ports import ActionResult, Change, Classifier, Failure, Mailbox

log = structlog.get_logger("mailtriage.pipeline")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff between attempts at a failed message: base · 2^(attempt-1), capped."""

    base_delay_s: float = 60.0
    max_delay_s: float = 3600.0

    def next_attempt(self, attempts: int, now: datetime | None = None) -> datetime:
        delay = min(self.max_delay_s, self.base_delay_s * 2 ** max(0, attempts - 1))
        return (now or utcnow()) + timedelta(seconds=delay)


DEFAULT_RETRY = RetryPolicy()
# The most classifications in flight when the model server decides (`llm.max_concurrency`'s
# own upper bound).
MAX_CLASSIFICATIONS = 64


def classification_bound(settings: Settings) -> int:
    """Classifications the pipeline lets run at once: `llm.max_concurrency`, or, when that is
    left at its default for a local server, as many as the server may report slots for:
    the LLM classifier bounds its requests itself, and a second, lower bound here would
    cap a server with more parallel slots at the default."""
    llm = settings.llm
    if llm.is_local and llm.concurrency_is_default:
        return MAX_CLASSIFICATIONS
    return llm.max_concurrency


# Called after a correction is recorded: (mailbox, the staff move, the new category key).
# `mailtriage.core.learn.Learner.on_correction` adds the message as an example; the
# pipeline itself stays free of the embedding model.
OnCorrection = Callable[[Mailbox, Change, str], Awaitable[None]]


class Outcome:
    """What happened to one message in this run (the values of `Outcome.status`)."""

    DONE = "done"
    DRY_RUN = "dry_run"
    SKIPPED = "skipped"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    GAVE_UP = "gave_up"


@dataclass(frozen=True, slots=True)
class Result:
    """One message's outcome, for tables, metrics and tests."""

    mailbox: str
    provider_id: str
    subject: str
    status: str
    category: str | None = None
    confidence: float | None = None
    classifier: str = ""
    actions: str = ""
    detail: str = ""  # skip reason or error


@dataclass(slots=True)
class SyncReport:
    mailbox: str
    results: list[Result] = field(default_factory=list)
    corrections: int = 0
    pages: int = 0

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def seen(self) -> int:
        return len(self.results)

    @property
    def processed(self) -> int:
        """Messages handled for the first time in this run (not duplicates)."""
        return sum(1 for r in self.results if r.status != Outcome.DUPLICATE)


class Pipeline:
    """Runs messages of one or more mailboxes through rules, classifier and actions."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        classifier: Classifier,
        *,
        owner: str = "",
        retry: RetryPolicy = DEFAULT_RETRY,
        on_result: Callable[[Result], None] | None = None,
        on_correction: OnCorrection | None = None,
        exclusive: bool = False,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.classifier = classifier
        self.owner = owner
        self.retry = retry
        self.on_result = on_result
        self.on_correction = on_correction
        self._limit = asyncio.Semaphore(classification_bound(settings))
        self._syncs = asyncio.Semaphore(settings.runtime.max_concurrent_syncs)
        # With the mailbox lease held (exclusive), a pending row at sync time cannot be in
        # flight anywhere else: it was interrupted and is resumed at once.
        self.stale_after_s = 0.0 if exclusive else 600.0

    # -- intake ------------------------------------------------------------------------

    async def sync_mailbox(self, mailbox: Mailbox) -> SyncReport:
        """Catch up one mailbox from its stored cursor, then retry what is due.

        At most `runtime.max_concurrent_syncs` mailboxes at once: their pages' messages are
        processed concurrently already, and with every mailbox of a large process in
        flight at once, nothing finishes sooner while the live objects (pages, messages,
        requests) grow with the mailbox count, and so does the garbage collector's work per
        message.
        """
        async with self._syncs:
            return await self._sync_mailbox(mailbox)

    async def _sync_mailbox(self, mailbox: Mailbox) -> SyncReport:
        report = SyncReport(mailbox=mailbox.address)
        cursor = await self.ledger.run(self.ledger.get_cursor, mailbox.address)
        while True:
            page = await mailbox.changes(cursor)
            report.pages += 1
            for failure in page.failures:
                report.results.append(await self._record_unreadable(mailbox.address, failure))
            results = await asyncio.gather(*(self.process(mailbox, m) for m in page.messages))
            report.results.extend(results)
            for change in page.moves:
                report.corrections += await self._record_move(mailbox, change)
            cursor = page.cursor or cursor
            await self.ledger.run(self.ledger.set_cursor, mailbox.address, cursor)
            if not page.more:
                break
        report.results.extend(await self.retry_due(mailbox))
        now = time.time()
        metrics.LAST_SYNC.labels(mailbox.address).set(now)
        metrics.SYNC_LAG.labels(mailbox.address).set(0)
        return report

    async def process(self, mailbox: Mailbox, message: Message) -> Result:
        """Handle one new message exactly once."""
        db = self.ledger
        row = await db.run(db.claim, message, self.owner)
        if row is None:
            return self._emit(message, Outcome.DUPLICATE, detail="already in the ledger")
        skip = rules.skip_reason(message, self.settings)
        if skip is None and message.processed_marker:
            skip = Skip("already processed (marker on the message)")
        if skip is not None:
            await db.run(db.skip, row.id, skip.reason)
            metrics.MODEL_CALLS_SAVED.labels("skip").inc()
            log.info(
                "skipped",
                mailbox=message.mailbox,
                message_id=message.provider_id,
                reason=skip.reason,
            )
            return self._emit(message, Outcome.SKIPPED, detail=skip.reason)
        try:
            decision = await self._decide(message)
        except ClassifierError as exc:
            return await self._fail(message, row, f"classifier: {exc}")
        return await self._plan_and_apply(mailbox, message, row, decision)

    async def _decide(self, message: Message) -> Decision:
        decision = await self._classify(message)
        if message.too_large:  # recorded with the decision, shown by `history`
            decision = dataclasses.replace(decision, reason=f"{TOO_LARGE}; {decision.reason}")
        return decision

    async def _classify(self, message: Message) -> Decision:
        decision = rules.route_by_sender(message, self.settings)
        if decision is not None:
            metrics.MODEL_CALLS_SAVED.labels("rule").inc()
            return decision
        started = time.perf_counter()
        # Only classification is bounded here: provider calls have their own per-mailbox
        # limits, and holding a slot across them would serialise the mailboxes.
        async with self._limit:
            decision = await self.classifier.classify(message)
        metrics.CLASSIFIER_LATENCY.labels(decision.classifier).observe(
            time.perf_counter() - started
        )
        if decision.prompt_tokens or decision.completion_tokens:
            metrics.MODEL_TOKENS.labels("prompt").inc(decision.prompt_tokens)
            metrics.MODEL_TOKENS.labels("completion").inc(decision.completion_tokens)
        if decision.classifier.startswith("cascade:") and decision.classifier != "cascade:llm":
            metrics.MODEL_CALLS_SAVED.labels("cascade").inc()
        return decision

    async def _plan_and_apply(
        self, mailbox: Mailbox, message: Message, row: Record, decision: Decision
    ) -> Result:
        plan = planner.plan(decision, message, self.settings)
        review = plan.category != decision.category
        row, intents = await self.ledger.run(
            lambda: self.ledger.decide(
                row.id, decision, plan, routed_to_review=review, owner=self.owner
            )
        )
        log.info(
            "classified",
            mailbox=message.mailbox,
            message_id=message.provider_id,
            category=plan.category,
            confidence=round(decision.confidence, 3),
            classifier=decision.classifier,
        )
        if plan.dry_run:
            return self._emit(
                message, Outcome.DRY_RUN, row=row, decision=decision, actions=plan.describe()
            )
        if intents is None:
            return self._emit(message, Outcome.DUPLICATE, detail="taken by another worker")
        return await self._apply(mailbox, message, row, decision, intents)

    async def _apply(
        self,
        mailbox: Mailbox,
        message: Message,
        row: Record,
        decision: Decision,
        begun: list[Intent] | None = None,
    ) -> Result:
        """Apply the row's not-yet-applied actions, then leave the processed marker.

        Intent before effect: forwards and moves are marked started in the ledger before
        the connector attempts them (`begun`: already, with the decision), and each result
        is journaled as soon as it is known. The connector may leave the marker with one of
        the plan's own writes (one request fewer); the ledger row, not the marker, says what
        is still to do, so a message marked before a crash is still resumed from its row
        (`retry_due`).
        """
        pending = [
            (seq, action)
            for seq, (state, action, _) in enumerate(row.actions)
            if state != ActionState.APPLIED
        ]
        seqs = [seq for seq, _ in pending]
        plan = ActionPlan(
            category=row.category or "",
            actions=tuple(a for _, a in pending),
            marker=planner.marker(decision),
        )
        intents: list[Intent] = begun or []
        if begun is None and any(needs_intent(a) for a in plan.actions):
            started = await self.ledger.run(self.ledger.begin_actions, row.id, seqs, self.owner)
            if started is None:
                return self._emit(message, Outcome.DUPLICATE, detail="taken by another worker")
            intents = started
        journal = LedgerJournal(self.ledger, row.id, seqs, intents)
        try:
            results: Sequence[ActionResult] = (
                await mailbox.apply(message, plan, journal) if pending else []
            )
        except ConnectorError as exc:
            await journal.flush()
            return await self._fail(message, row, f"{type(exc).__name__}: {exc}")
        error = ""
        for index, res in enumerate(results[: len(pending)]):
            await journal.record(index, res)  # no-op for what the connector journaled
            if res.new_provider_id:
                message = dataclasses.replace(message, provider_id=res.new_provider_id)
            if not res.ok:
                error = f"{res.action.kind}: {res.error}"
                break
        if not error and len(results) < len(pending):
            error = "connector applied fewer actions than planned"
        if error:
            await journal.flush()
            return await self._fail(message, row, error)
        try:
            await mailbox.mark_processed(message, decision)
        except ConnectorError as exc:
            await journal.flush()
            return await self._fail(message, row, f"processed marker: {exc}")
        row = await self.ledger.run(self.ledger.finish, row.id, journal.held)
        return self._emit(
            message, Outcome.DONE, row=row, decision=decision, actions=row.describe_actions()
        )

    async def _fail(self, message: Message, row: Record, error: str) -> Result:
        attempts = row.attempts + 1
        give_up = attempts >= self.settings.runtime.max_attempts
        retry_at = None if give_up else self.retry.next_attempt(attempts)
        await self.ledger.run(
            lambda: self.ledger.fail(row.id, error, retry_at=retry_at, give_up=give_up)
        )
        log.warning(
            "message failed",
            mailbox=message.mailbox,
            message_id=message.provider_id,
            attempt=attempts,
            gave_up=give_up,
            error=error[:300],
        )
        status = Outcome.GAVE_UP if give_up else Outcome.FAILED
        return self._emit(message, status, detail=error, category=row.category)

    async def _record_unreadable(self, address: str, failure: Failure) -> Result:
        row = await self.ledger.run(
            lambda: self.ledger.record_failure_seen(
                address,
                failure.provider_id,
                failure.reason,
                internet_message_id=failure.internet_message_id,
                subject=failure.subject,
                retry_at=self.retry.next_attempt(1),
            )
        )
        status = Outcome.FAILED if row is not None else Outcome.DUPLICATE
        log.warning(
            "unreadable message",
            mailbox=address,
            message_id=failure.provider_id,
            reason=failure.reason,
        )
        result = Result(
            address, failure.provider_id, failure.subject, status, detail=failure.reason
        )
        metrics.MESSAGES.labels(address, "", status).inc()
        if self.on_result:
            self.on_result(result)
        return result

    async def _record_move(self, mailbox: Mailbox, change: Change) -> int:
        """A staff move of a triaged message into another category's place: a correction.

        Our own label/move lands in the triaged category's place and is no correction.
        """
        address = mailbox.address
        key = self.category_of_location(address, change.location)
        if key is None:
            return 0
        row = await self.ledger.run(
            self.ledger.find, address, change.provider_id, change.internet_message_id
        )
        if row is None or row.status not in (Status.DONE, Status.DRY_RUN):
            return 0
        if not await self.ledger.run(self.ledger.record_correction, row.id, key):
            return 0
        metrics.CORRECTIONS.labels(address).inc()
        log.info(
            "correction",
            mailbox=address,
            message_id=change.provider_id,
            from_category=row.category,
            to_category=key,
        )
        if self.on_correction is not None:
            try:
                await self.on_correction(mailbox, change, key)
            except MailtriageError as exc:  # the correction stays recorded
                log.warning(
                    "correction not learned",
                    mailbox=address,
                    message_id=change.provider_id,
                    error=str(exc)[:300],
                )
        return 1

    def category_of_location(self, address: str, location: str) -> str | None:
        """Which category a folder path or label stands for (see `core.locations`)."""
        return category_of_location(self.settings, address, location)

    # -- retries -------------------------------------------------------------------------

    async def retry_due(self, mailbox: Mailbox) -> list[Result]:
        """Retry failed (or interrupted) messages of `mailbox` whose backoff has passed."""
        out = []
        due = await self.ledger.run(
            lambda: self.ledger.due_for_retry(mailbox.address, stale_after_s=self.stale_after_s)
        )
        for rec in due:
            if await self.ledger.run(self.ledger.claim_retry, rec, self.owner):
                out.append(await self._retry(mailbox, rec))
        return out

    async def _retry(self, mailbox: Mailbox, rec: Record) -> Result:
        try:
            message = await mailbox.fetch(rec.current_provider_id)
        except NotFoundError:
            await self._settle_forwards(mailbox, rec)
            error = "message no longer in the mailbox"
            if rec.last_error:
                error += f" (last error: {rec.last_error[:300]})"
            await self.ledger.run(
                lambda: self.ledger.fail(rec.id, error, retry_at=None, give_up=True)
            )
            return Result(
                rec.mailbox,
                rec.provider_id,
                rec.subject,
                Outcome.GAVE_UP,
                detail="message no longer in the mailbox",
            )
        except (MessageParseError, ConnectorError) as exc:
            placeholder = Message(
                mailbox=rec.mailbox, provider_id=rec.current_provider_id, subject=rec.subject
            )
            result = await self._fail(placeholder, rec, f"fetch: {exc}")
            if result.status == Outcome.GAVE_UP:
                await self._give_up(mailbox, placeholder)
            return result
        if rec.category is None:
            try:
                decision = await self._decide(message)
            except ClassifierError as exc:
                result = await self._fail(message, rec, f"classifier: {exc}")
                if result.status == Outcome.GAVE_UP:
                    await self._give_up(mailbox, message)
                return result
            return await self._plan_and_apply(mailbox, message, rec, decision)
        decision = Decision(
            category=rec.category,
            confidence=rec.confidence or 0.0,
            reason=rec.reason,
            classifier=rec.classifier,
            model=rec.model,
            confidence_source=ConfidenceSource.NONE,
        )
        result = await self._apply(mailbox, message, rec, decision)
        if result.status == Outcome.GAVE_UP:
            await self._give_up(mailbox, message)
        return result

    async def _settle_forwards(self, mailbox: Mailbox, rec: Record) -> None:
        """The original is gone: finish or clean up forwards an earlier attempt began.

        The connector finds the forward's sent copy (recorded as applied) or its draft
        (sent: it is complete and the decision was taken), so nothing is left in Drafts.
        Without either there is nothing to forward any more.
        """
        begun = [
            (seq, action)
            for seq, ((state, action, _), intent) in enumerate(
                zip(rec.actions, rec.intents, strict=False)
            )
            if isinstance(action, Forward) and state != ActionState.APPLIED and intent.tries
        ]
        if not begun:
            return
        seqs = [seq for seq, _ in begun]
        intents = await self.ledger.run(self.ledger.begin_actions, rec.id, seqs, self.owner)
        if intents is None:
            return
        placeholder = Message(
            mailbox=rec.mailbox, provider_id=rec.current_provider_id, subject=rec.subject
        )
        plan = ActionPlan(category=rec.category or "", actions=tuple(a for _, a in begun))
        journal = LedgerJournal(self.ledger, rec.id, seqs, intents)
        try:
            for index, res in enumerate(await mailbox.apply(placeholder, plan, journal)):
                await journal.record(index, res)
        except ConnectorError as exc:
            log.warning(
                "interrupted forward not settled",
                mailbox=rec.mailbox,
                message_id=rec.provider_id,
                error=str(exc)[:300],
            )

    async def _give_up(self, mailbox: Mailbox, message: Message) -> None:
        """Attempts exhausted: leave it in the inbox with the review label, if possible."""
        plan = planner.review_plan(message, self.settings)
        if plan.dry_run or not plan.actions:
            return
        try:
            await mailbox.apply(message, plan)
        except MailtriageError as exc:
            log.warning(
                "review label failed",
                mailbox=message.mailbox,
                message_id=message.provider_id,
                error=str(exc)[:300],
            )

    # -- reporting -----------------------------------------------------------------------

    def _emit(
        self,
        message: Message,
        status: str,
        *,
        row: Record | None = None,
        decision: Decision | None = None,
        actions: str = "",
        detail: str = "",
        category: str | None = None,
    ) -> Result:
        result = Result(
            mailbox=message.mailbox,
            provider_id=message.provider_id,
            subject=message.subject,
            status=status,
            category=row.category if row else category,
            confidence=decision.confidence if decision else None,
            classifier=decision.classifier if decision else "",
            actions=actions,
            detail=detail,
        )
        if status != Outcome.DUPLICATE:
            metrics.MESSAGES.labels(message.mailbox, result.category or "", status).inc()
        if self.on_result:
            self.on_result(result)
        return result
