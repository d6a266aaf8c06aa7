"""End-to-end triage throughput against the Graph emulator, and Graph requests per message.

For each LLM latency (0 ms, 300 ms) and mailbox count (1, 10): deliver messages into
the shared mailboxes of a `GraphEmulator`, run one `sync_all` pass of the real Pipeline
(Ledger on SQLite, LLMClassifier on `SandboxLLM`, GraphMailbox through msgraph-sdk), and
print messages triaged per second and Graph requests per triaged message, split into the
message's own writes (against the minimum the API allows for its plan), the once-per-
mailbox ensures (master categories, folders) and the reads of intake.

    .venv/bin/python bench/graph_e2e.py [--messages 60] [--llm-concurrency 4] [--db-dir DIR]
    .venv/bin/python bench/graph_e2e.py --requests-only    # the second table alone

Every message is labelled, moved and (except advertising) forwarded to a department
mailbox of the emulator, then marked processed: the full production path. A second table
runs the connector alone (delta + one plan + marker, 4 messages at a time per mailbox, no
ledger and no model) once with a forward in every plan and once without, and prints the
writes per message against the API's minimum: with a forward 3 (the forward, one PATCH for
categories + isRead + the processed marker, the move), without 2.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mailtriage.connectors.graph import GraphMailbox, build_client
from mailtriage.core import logs
from mailtriage.core.actions import ActionPlan, Forward, Label, MarkRead, Move
from mailtriage.core.decision import Decision
from mailtriage.core.ledger import Ledger
from mailtriage.core.llm import LLMClassifier
from mailtriage.core.message import Message
from mailtriage.core.pipeline import Outcome, Pipeline
from mailtriage.core.ports import MemoryStateStore
from mailtriage.core.runtime import sync_all
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.graph.config import sandbox_settings
from mailtriage.sandbox.graph.state import LoggedRequest
from mailtriage.sandbox.llm import DEFAULT_MODEL, SandboxLLM
from mailtriage.sandbox.process import BENCH_MAILS

DEPARTMENTS = [
    "rh@atelier-dupont.fr",
    "compta@atelier-dupont.fr",
    "sav@atelier-dupont.fr",
    "commercial@atelier-dupont.fr",
]


def kind_of(r: LoggedRequest) -> str:
    """'write' (a message's own forward, PATCH, move...), 'ensure' (master categories and
    folders, once per mailbox) or 'read' (intake: delta, attachments, evidence lookups)."""
    path = r.path.lower()
    if "mastercategories" in path or ("mailfolders" in path and "/delta" not in path):
        return "ensure"
    if r.method in ("POST", "PATCH", "DELETE") and "/messages/" in path:
        return "write"
    return "read"


@dataclass
class Figures:
    latency_ms: int
    mailboxes: int
    messages: int
    done: int
    seconds: float
    requests: Counter[str]  # by kind_of
    minimum_writes: int  # what the API allows for the plans applied
    forwarded: int
    throttled: int
    max_in_flight: int

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    @property
    def total(self) -> int:
        return sum(self.requests.values())


def minimum_writes(actions: Sequence[object]) -> int:
    """Requests the API needs for one plan: a forward (1), one PATCH for labels, read flag
    and the processed marker (always 1: the marker), a move (1)."""
    return (
        1
        + sum(1 for a in actions if isinstance(a, Forward))
        + sum(1 for a in actions if isinstance(a, Move))
    )


def figures(
    emu: GraphEmulator,
    log: list[LoggedRequest],
    shared: list[str],
    *,
    latency_ms: int,
    messages: int,
    done: int,
    seconds: float,
    minimum: int,
) -> Figures:
    return Figures(
        latency_ms,
        len(shared),
        messages,
        done,
        seconds,
        Counter(kind_of(r) for r in log),
        minimum,
        sum(1 for r in log if r.method == "POST" and r.path.lower().endswith("/forward")),
        sum(1 for r in log if r.status == 429),
        max(emu.max_inflight(a) for a in shared),
    )


async def run_case(
    latency_ms: int,
    n_mailboxes: int,
    per_mailbox: int,
    llm_concurrency: int,
    db_dir: str | None = None,
    graph_latency_ms: int = 0,
) -> Figures:
    shared = [f"contact{i}@atelier-dupont.fr" for i in range(n_mailboxes)]
    with (
        GraphEmulator() as emu,
        SandboxLLM() as llm,
        tempfile.TemporaryDirectory(dir=db_dir) as tmp,
    ):
        for address in shared + DEPARTMENTS:
            emu.add_mailbox(address)
        llm.faults.set_latency(latency_ms / 1000)
        emu.set_latency(graph_latency_ms / 1000)
        settings = sandbox_settings(
            emu.base_url,
            shared,
            llm={
                "base_url": llm.base_url,
                "model": DEFAULT_MODEL,
                "few_shot": 0,
                "max_concurrency": llm_concurrency,
            },
            classifier="llm",
        )
        ledger = Ledger(f"sqlite:///{Path(tmp) / 'state.db'}")
        classifier = LLMClassifier(settings)
        client = build_client(settings.graph)  # one client (token, pool) for every mailbox
        boxes = [
            GraphMailbox.from_settings(settings, m, ledger, client=client)
            for m in settings.mailboxes
        ]
        pipeline = Pipeline(settings, ledger, classifier)
        await sync_all(pipeline, boxes)  # start-up: cursor "from now"
        for address in shared:
            for i in range(per_mailbox):
                subject, body = BENCH_MAILS[i % len(BENCH_MAILS)]
                emu.deliver(
                    address, subject=f"{subject} #{i}", body=body, sender=f"c{i}@example.org"
                )
        before = len(emu.requests)
        t0 = time.perf_counter()
        reports = await sync_all(pipeline, boxes)
        seconds = time.perf_counter() - t0
        log = emu.requests[before:]
        statuses = Counter(
            r.status
            for rep in reports.values()
            if not isinstance(rep, Exception)
            for r in rep.results
        )
        done = sum(
            rep.count(Outcome.DONE) for rep in reports.values() if not isinstance(rep, Exception)
        )
        assert done == per_mailbox * n_mailboxes, (statuses, reports)
        rows = ledger.recent(limit=done + 10)
        minimum = sum(minimum_writes([a for _, a, _ in row.actions]) for row in rows)
        await client.aclose()
        await classifier.aclose()
        ledger.close()
        return figures(
            emu,
            log,
            shared,
            latency_ms=latency_ms,
            messages=per_mailbox * n_mailboxes,
            done=done,
            seconds=seconds,
            minimum=minimum,
        )


# The planner's order (core.planner.plan): forward first, then the PATCHed actions, the move.
WITH_FORWARD = ActionPlan(
    "rh",
    (Forward((DEPARTMENTS[0],), "note"), Label("RH", "preset7"), MarkRead(), Move("Triage/RH")),
    marker="v1;rh;0.90",
)
WITHOUT_FORWARD = ActionPlan(
    "publicite",
    (Label("Publicité", "preset12"), MarkRead(), Move("Triage/Pub")),
    marker="v1;publicite;0.90",
)


async def connector_only(
    n_mailboxes: int, per_mailbox: int, plan: ActionPlan, graph_latency_ms: int = 0
) -> Figures:
    """Delta + one plan + marker on every message, no ledger, no model."""
    shared = [f"contact{i}@atelier-dupont.fr" for i in range(n_mailboxes)]
    with GraphEmulator() as emu:
        for address in shared + DEPARTMENTS:
            emu.add_mailbox(address)
        settings = sandbox_settings(emu.base_url, shared)
        client = build_client(settings.graph)
        boxes = [
            GraphMailbox.from_settings(settings, m, MemoryStateStore(), client=client)
            for m in settings.mailboxes
        ]
        cursors = {b.address: (await b.changes(None)).cursor for b in boxes}
        for address in shared:
            for i in range(per_mailbox):
                subject, body = BENCH_MAILS[i % len(BENCH_MAILS)]
                emu.deliver(address, subject=f"{subject} #{i}", body=body, sender=f"c{i}@ex.org")
        emu.set_latency(graph_latency_ms / 1000)
        before = len(emu.requests)
        t0 = time.perf_counter()

        async def one(box: GraphMailbox, message: Message, gate: asyncio.Semaphore) -> bool:
            async with gate:
                results = await box.apply(message, plan)
                await box.mark_processed(message, Decision(plan.category, 0.9, "bench", "bench"))
                return all(r.ok for r in results)

        async def mailbox(box: GraphMailbox) -> int:
            gate = asyncio.Semaphore(4)
            cursor, done = cursors[box.address], 0
            while True:
                page = await box.changes(cursor)
                oks = await asyncio.gather(*(one(box, m, gate) for m in page.messages))
                done += sum(oks)
                cursor = page.cursor
                if not page.more:
                    return done

        done = sum(await asyncio.gather(*(mailbox(b) for b in boxes)))
        seconds = time.perf_counter() - t0
        log = emu.requests[before:]
        await client.aclose()
        return figures(
            emu,
            log,
            shared,
            latency_ms=0,
            messages=per_mailbox * n_mailboxes,
            done=done,
            seconds=seconds,
            minimum=minimum_writes(plan.actions) * done,
        )


HEADER = (
    f"{'LLM latency':>11} {'mailboxes':>9} {'messages':>8} {'seconds':>8} {'msg/s':>7} "
    f"{'req/msg':>7} {'writes/msg':>10} {'minimum':>7} {'ensures/mbx':>11} {'reads/msg':>9} "
    f"{'429s':>5} {'in flight/mbx':>13}"
)


def _row(f: Figures, latency: str) -> str:
    return (
        f"{latency:>11} {f.mailboxes:>9} {f.done:>8} {f.seconds:>8.2f} {f.rate:>7.1f} "
        f"{f.total / f.done:>7.2f} {f.requests['write'] / f.done:>10.2f} "
        f"{f.minimum_writes / f.done:>7.2f} {f.requests['ensure'] / f.mailboxes:>11.1f} "
        f"{f.requests['read'] / f.done:>9.2f} {f.throttled:>5} {f.max_in_flight:>13}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60, help="messages per run (total)")
    parser.add_argument("--llm-concurrency", type=int, default=4, help="[llm] max_concurrency")
    parser.add_argument("--db-dir", default=None, help="where the SQLite ledger goes")
    parser.add_argument(
        "--graph-latency-ms", type=int, default=0, help="added to every emulator response"
    )
    parser.add_argument(
        "--requests-only", action="store_true", help="only the connector table (no pipeline)"
    )
    args = parser.parse_args()
    logs.configure(level="WARNING")
    print(f"Graph emulator latency: {args.graph_latency_ms} ms per request")
    print(
        "writes/msg: the message's own requests (forward, PATCH, move); minimum: what the API "
        "allows for the same plans; ensures/mbx: master categories + folders, per mailbox"
    )
    if not args.requests_only:
        print("end to end (Pipeline + SQLite ledger + LLMClassifier on SandboxLLM + Graph)")
        print(HEADER)
        for latency in (0, 300):
            for n in (1, 10):
                per = max(1, args.messages // n)
                f = asyncio.run(
                    run_case(
                        latency, n, per, args.llm_concurrency, args.db_dir, args.graph_latency_ms
                    )
                )
                print(_row(f, f"{latency}ms"), flush=True)
    for name, plan in (("with forward", WITH_FORWARD), ("without forward", WITHOUT_FORWARD)):
        print(f"connector only, {name}: {plan.describe()} + marker, 4 at a time per mailbox")
        print(HEADER)
        for n in (1, 10):
            per = max(1, args.messages // n)
            f = asyncio.run(connector_only(n, per, plan, args.graph_latency_ms))
            print(_row(f, "-"), flush=True)


if __name__ == "__main__":
    main()
