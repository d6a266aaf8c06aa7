"""Several `mailtriage run` processes on one PostgreSQL ledger: shares, scaling, kill -9.

    .venv/bin/python bench/fleet.py                          # 400 mailboxes: the proof
    .venv/bin/python bench/fleet.py --mailboxes 40 --messages 2 --interval 10   # a quick look
    .venv/bin/python bench/fleet.py --phase scaling --model-ms 0 --llm-concurrency 16  # CPU-bound

Needs initdb and pg_ctl (a throwaway cluster, as tests/postgres.py makes) and
`pip install -e '.[postgres]'`. The Graph emulator and the sandbox model run in this
process; every mailtriage process is a real `mailtriage run` child (schedule only, no push),
all with the same configuration and one PostgreSQL ledger.

1. Scaling: one process, then two, on the same mailboxes. Each time, `--messages` mails
   are delivered into every mailbox and timed until every one is triaged (msg/s over that
   span, the sync interval's pickup delay included). By default the model answers in
   300 ms with `llm.max_concurrency = 2`, so one process is bound by the model's latency,
   as in production, and a second process can add work without needing more CPU than two
   shared cores have; `--model-ms 0` shows the CPU-bound case.
2. The fleet: three processes, then a fourth that joins late (time until it holds its
   share); the processes' leases are sampled every half second (held / share, the share
   being ceil(mailboxes / live processes)); mail is delivered and one process is killed
   with SIGKILL part-way. Then: every message has its ledger row, done; no forward was sent
   twice or is missing (the department mailboxes' copies, by X-Mailtriage-Origin).

The machine is shared: the load average is printed first.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from mailtriage.core.ledger import Ledger  # noqa: E402
from mailtriage.data import EXAMPLE_CONFIG  # noqa: E402
from mailtriage.sandbox.graph import GraphEmulator  # noqa: E402
from mailtriage.sandbox.llm import SandboxLLM  # noqa: E402
from mailtriage.sandbox.process import (  # noqa: E402
    BENCH_MAILS,
    DEPARTMENTS,
    ServiceProcess,
    write_toml,
)
from mailtriage.sandbox.server import free_port  # noqa: E402


@dataclass
class Delivered:
    mailbox: str
    message_id: str


@dataclass
class Run:
    """The processes of one phase and what they share."""

    url: str
    configs: Path
    emu: GraphEmulator
    llm: SandboxLLM
    args: argparse.Namespace
    procs: list[ServiceProcess] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [f"contact{i:04d}@atelier-dupont.fr" for i in range(self.args.mailboxes)]

    def start(self) -> ServiceProcess:
        port = free_port()
        config = self.configs / f"p{len(self.procs)}-{port}.toml"
        write_toml(config, self.config(port))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTRIAGE_")}
        log = self.configs / f"p{len(self.procs)}.log"
        proc = ServiceProcess(config, port, env, log)
        self.procs.append(proc)
        return proc

    def config(self, port: int) -> dict[str, Any]:
        data = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
        data["classifier"] = "llm"
        data["llm"] = {
            "base_url": self.llm.base_url,
            "model": self.llm.model,
            "few_shot": 0,
            "max_concurrency": self.args.llm_concurrency,
        }
        data["state"] = {"url": self.url}
        data["runtime"] = {
            "sync_interval_s": self.args.interval,
            "host": "127.0.0.1",
            "port": port,
            "max_attempts": 5,
        }
        data["graph"] = {"base_url": self.emu.base_url, "anonymous": True}
        data.pop("gmail", None)
        data["mailbox"] = [
            {"provider": "graph", "address": a, "backfill_days": 0} for a in self.addresses
        ]
        return data

    def alive(self) -> list[ServiceProcess]:
        return [p for p in self.procs if p.proc.poll() is None]

    def stop_all(self) -> None:
        for proc in self.alive():
            proc.stop()
        self.procs.clear()


def held_by_pid(ledger: Ledger) -> dict[int, int]:
    """Unexpired leases per process id (owner ids are host:pid:token)."""
    return {int(owner.split(":")[1]): n for owner, n in ledger.lease_counts().items()}


def scalar(ledger: Ledger, sql: str) -> int:
    with ledger.engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar() or 0)


def wait_for(what: str, predicate: Callable[[], bool], timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.5)
    raise SystemExit(f"timed out after {timeout_s:.0f} s waiting for {what}")


def settled(run: Run, ledger: Ledger) -> bool:
    """Every mailbox held, each process within its share's limit, every cursor set."""
    held = held_by_pid(ledger)
    alive = {p.pid for p in run.alive()}
    share = math.ceil(run.args.mailboxes / max(1, len(alive)))
    return (
        sum(held.get(pid, 0) for pid in alive) == run.args.mailboxes
        and all(held.get(pid, 0) <= share + share // 10 for pid in alive)
        and scalar(ledger, "SELECT count(*) FROM cursors WHERE value IS NOT NULL")
        >= run.args.mailboxes
    )


def deliver(run: Run) -> int:
    n = 0
    for address in run.addresses:
        for i in range(run.args.messages):
            subject, body = BENCH_MAILS[(n + i) % len(BENCH_MAILS)]
            msg = run.emu.deliver(
                address, subject=f"{subject} #{n}", body=body, sender=f"c{n}@example.org"
            )
            run.delivered.append(Delivered(address, msg.internet_message_id))
            n += 1
    return n


def triaged(ledger: Ledger) -> int:
    return scalar(ledger, "SELECT count(*) FROM messages WHERE status IN ('done', 'skipped')")


def throughput(run: Run, ledger: Ledger, processes: int) -> float:
    """Start `processes` processes, deliver, time until all is triaged; msg/s."""
    for _ in range(processes):
        run.start().wait_listening()
    wait_for(f"{processes} process(es) to settle", lambda: settled(run, ledger), 300)
    before = triaged(ledger)
    n = deliver(run)
    started = time.monotonic()
    wait_for("the mail to be triaged", lambda: triaged(ledger) >= before + n, 1800)
    seconds = time.monotonic() - started
    cpu = sum(_cpu_s(p.pid) for p in run.alive())
    run.stop_all()
    print(
        f"  {processes} process(es): {n} messages in {seconds:.1f} s = {n / seconds:.1f} msg/s "
        f"(mailtriage CPU {cpu:.0f} s in all, since start)",
        flush=True,
    )
    return n / seconds


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """Samples held / share for every live process every half second, in a thread."""

    def __init__(self, run: Run, ledger: Ledger) -> None:
        self.run, self.ledger = run, ledger
        self.worst = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(0.5):
            alive = [p.pid for p in self.run.alive()]
            share = math.ceil(self.run.args.mailboxes / max(1, len(alive)))
            held = held_by_pid(self.ledger)
            self.worst = max([self.worst, *(held.get(pid, 0) / share for pid in alive)])

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        self.thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            self.thread.join()


def fleet(run: Run, ledger: Ledger) -> bool:
    """3 processes, a late 4th, delivery, kill -9 of one; the checks. True when clean."""
    first = run.start()
    first.wait_listening()
    wait_for("the first process to settle", lambda: settled(run, ledger), 300)
    for _ in range(2):
        run.start().wait_listening()
    took3 = wait_for("3 processes to settle", lambda: settled(run, ledger), 300)
    print(f"  3 processes settled {took3:.1f} s after the 2nd and 3rd started", flush=True)
    sampler = Sampler(run, ledger)
    with sampler.running():
        joiner = run.start()
        joiner.wait_listening()
        share4 = math.ceil(run.args.mailboxes / 4)
        took = wait_for(
            "the late joiner's share",
            lambda: held_by_pid(ledger).get(joiner.pid, 0) >= share4,
            300,
        )
        wait_for("4 processes to settle", lambda: settled(run, ledger), 300)
        shares = sorted(held_by_pid(ledger).values())
        print(f"  late joiner took its share ({share4}) in {took:.1f} s; held: {shares}")
        before = triaged(ledger)
        n = deliver(run)
        wait_for("a quarter of the mail", lambda: triaged(ledger) >= before + n // 4, 1800)
        victim = run.procs[1]
        victim.kill()
        killed = time.monotonic()
        print(f"  kill -9 of pid {victim.pid} at {triaged(ledger) - before}/{n} triaged")
        took_over = wait_for(
            "its mailboxes to be taken over",
            lambda: (
                victim.pid not in held_by_pid(ledger)
                and sum(held_by_pid(ledger).values()) == run.args.mailboxes
            ),
            600,
        )
        print(f"  its mailboxes were taken over {took_over:.1f} s after the kill")
        wait_for("the mail to be triaged", lambda: triaged(ledger) >= before + n, 1800)
        print(f"  all {n} triaged {time.monotonic() - killed:.1f} s after the kill")
    print(f"  most mailboxes held by one process / its share, sampled: {sampler.worst:.2f}")
    run.stop_all()
    return check(run, ledger) and sampler.worst <= 1.5


def check(run: Run, ledger: Ledger) -> bool:
    """Every delivered message triaged once; forwards: none twice, none missing."""
    with ledger.engine.connect() as conn:
        rows = {
            (m, i): (s, c)
            for m, i, s, c in conn.execute(
                text("SELECT mailbox, internet_message_id, status, category FROM messages")
            ).all()
        }
    copies: Counter[str] = Counter()
    for dept in DEPARTMENTS:
        for m in run.emu.folder_messages(dept, "Inbox"):
            headers = {h["name"].lower(): h["value"] for h in m.headers}
            if origin := headers.get("x-mailtriage-origin"):
                copies[origin.strip()] += 1
    forwarding = {"rh", "fournisseurs", "clients", "devis"}
    lost = twice = missing = 0
    for d in run.delivered:
        row = rows.get((d.mailbox, d.message_id))
        if row is None or row[0] not in ("done", "skipped"):
            lost += 1
            continue
        wanted = 1 if row[1] in forwarding else 0
        twice += max(0, copies[d.message_id] - 1)
        missing += max(0, wanted - copies[d.message_id])
    print(
        f"  {len(run.delivered)} delivered in this phase: {lost} not triaged, "
        f"{twice} forwarded twice, {missing} forwards missing"
    )
    return lost == twice == missing == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=400)
    parser.add_argument("--messages", type=int, default=3, help="per mailbox, per phase")
    parser.add_argument("--interval", type=float, default=30, help="runtime.sync_interval_s")
    parser.add_argument("--model-ms", type=int, default=300)
    parser.add_argument("--llm-concurrency", type=int, default=2)
    parser.add_argument("--phase", choices=["scaling", "fleet"], action="append")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs")
    print(
        f"{args.mailboxes} Graph mailboxes, {args.messages} messages each per phase, model "
        f"{args.model_ms} ms × {args.llm_concurrency} in flight per process, "
        f"sync every {args.interval:g} s",
        flush=True,
    )
    from tests.postgres import temporary_postgres

    with (
        temporary_postgres() as url,
        GraphEmulator() as emu,
        SandboxLLM() as llm,
        tempfile.TemporaryDirectory() as tmp,
    ):
        if url is None:
            raise SystemExit("PostgreSQL (initdb, pg_ctl) is not installed here")
        llm.faults.set_latency(args.model_ms / 1000)
        run = Run(url, Path(tmp), emu, llm, args)
        for address in [*run.addresses, *DEPARTMENTS]:
            emu.add_mailbox(address)
        ledger = Ledger(url)
        ok = True
        phases = args.phase or ["scaling", "fleet"]
        if "scaling" in phases:
            print("scaling:")
            one = throughput(run, ledger, 1)
            ok = check(run, ledger) and ok
            run.delivered.clear()
            two = throughput(run, ledger, 2)
            ok = check(run, ledger) and ok
            run.delivered.clear()
            print(f"  1 -> 2 processes: {two / one:.2f}x")
        if "fleet" in phases:
            print("fleet:")
            ok = fleet(run, ledger) and ok
        ledger.close()
    print("clean" if ok else "NOT CLEAN")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
