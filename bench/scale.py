"""One process, many mailboxes: throughput, CPU, failures, memory and start-up at scale.

    .venv/bin/python bench/scale.py                          # Graph and Gmail, 1/10/100/1000
    .venv/bin/python bench/scale.py --provider graph --mailboxes 200 --messages 10
    .venv/bin/python bench/scale.py --code /tmp/mt_before     # the same bench on older code

For each provider and mailbox count N, the emulator (Graph or Gmail) and the sandbox LLM run
in this process, and mailtriage runs in a child process of its own, so that its CPU time and
memory are its own. The child does what `mailtriage sync` does (Pipeline + SQLite ledger +
LLMClassifier + the connector built by `build_mailboxes`, one `sync_all` pass):

1. start-up: build the N mailboxes and run a first pass, which sets each cursor to "now"
   (timed, and the emulator counts its requests);
2. this process then delivers `--messages` mails into every mailbox (rotating over five
   subjects: four categories forward, advertising does not);
3. one pass triages them; the child reports wall time, CPU time (user + system, all
   threads), every outcome, the first errors, and its RSS (now and peak, VmHWM).

Columns: msg/s over the pass; CPU ms per message; failures (anything but done); RSS per
mailbox = (peak RSS − RSS once everything is imported) / N; start-up seconds, ms and
requests per mailbox. `--code DIR` runs the child from another checkout (PYTHONPATH): the
same bench measures the code before a change. The machine is shared: say its load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if not os.environ.get("MT_SCALE_CODE"):
    sys.path.insert(0, str(ROOT))

KEY_ENV = "MT_SCALE_GMAIL_KEY"
DEPARTMENTS = (
    "rh@atelier-dupont.fr",
    "compta@atelier-dupont.fr",
    "sav@atelier-dupont.fr",
    "commercial@atelier-dupont.fr",
)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the child: mailtriage itself ------------------------------------------------------------


def child(config: str) -> None:
    """Start-up pass, wait for the parent's delivery, triage pass; JSON lines on stdout."""
    import asyncio

    from sqlalchemy import event

    from mailtriage.connectors import build_mailboxes
    from mailtriage.core import logs
    from mailtriage.core.classifiers import build_classifier
    from mailtriage.core.config import load_settings
    from mailtriage.core.ledger import Ledger
    from mailtriage.core.pipeline import Pipeline
    from mailtriage.core.runtime import sync_all

    logs.configure(level="ERROR")
    settings = load_settings(Path(config))
    # What every process imports whatever its size (SDKs, the model client), so that the
    # RSS per mailbox counts what the mailboxes add.
    import openai  # noqa: F401

    if settings.mailboxes[0].provider == "graph":
        import mailtriage.connectors.graph
    else:
        import mailtriage.connectors.gmail  # noqa: F401
    base_rss = _status_kb("VmRSS")

    def say(**fields: Any) -> None:
        print(json.dumps(fields), flush=True)

    async def main() -> None:
        t0, c0 = time.perf_counter(), _cpu_s()
        ledger = Ledger(settings.state.url)
        commits = [0]
        event.listen(ledger.engine, "commit", lambda _conn: commits.__setitem__(0, commits[0] + 1))
        classifier = build_classifier(settings, ledger=ledger)
        boxes = build_mailboxes(settings, ledger)
        pipeline = Pipeline(settings, ledger, classifier, exclusive=True)
        first = await sync_all(pipeline, boxes)
        start_errors = [str(r) for r in first.values() if isinstance(r, Exception)]
        say(
            phase="started",
            seconds=time.perf_counter() - t0,
            cpu_s=_cpu_s() - c0,
            errors=len(start_errors),
            first_errors=start_errors[:3],
            base_rss_kb=base_rss,
            rss_kb=_status_kb("VmRSS"),
        )
        await asyncio.to_thread(sys.stdin.readline)  # the parent delivers the mail
        t1, c1, k1 = time.perf_counter(), _cpu_s(), commits[0]
        reports = await sync_all(pipeline, boxes)
        seconds, cpu = time.perf_counter() - t1, _cpu_s() - c1
        outcomes: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for address, rep in reports.items():
            if isinstance(rep, Exception):
                outcomes["mailbox failed"] += 1
                errors[f"{address}: {rep}"[:200]] += 1
                continue
            for result in rep.results:
                outcomes[result.status] += 1
                if result.detail and result.status not in ("done", "skipped"):
                    errors[result.detail.split("(mailbox")[0][:160]] += 1
        say(
            phase="done",
            seconds=seconds,
            cpu_s=cpu,
            transactions=commits[0] - k1,
            outcomes=dict(outcomes),
            errors=errors.most_common(5),
            rss_kb=_status_kb("VmRSS"),
            peak_kb=_status_kb("VmHWM"),
        )
        for box in boxes:
            await box.aclose()
        close = getattr(classifier, "aclose", None)
        if close is not None:
            await close()
        ledger.close()

    asyncio.run(main())


# -- the parent: emulators, delivery, figures ------------------------------------------------


@dataclass
class Figures:
    provider: str
    mailboxes: int
    messages: int
    seconds: float
    cpu_s: float
    done: int
    failures: int
    errors: list[Any]
    peak_mb: float
    base_mb: float
    start_s: float
    start_requests: int
    requests: int
    throttled: int
    transactions: int

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_msg(self) -> float:
        return 1000 * self.cpu_s / max(1, self.messages)

    @property
    def rss_per_mailbox_mb(self) -> float:
        return (self.peak_mb - self.base_mb) / self.mailboxes


def config_data(
    provider: str, addresses: list[str], emu_url: str, llm: Any, state: Path, llm_concurrency: int
) -> dict[str, Any]:
    from mailtriage.data import EXAMPLE_CONFIG

    data = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["classifier"] = "llm"
    data["llm"] = {
        "base_url": llm.base_url,
        "model": llm.model,
        "few_shot": 0,
        "max_concurrency": llm_concurrency,
    }
    data["state"] = {"url": f"sqlite:///{state}"}
    data["runtime"] = {"sync_interval_s": 60, "max_attempts": 5}
    if provider == "graph":
        data["graph"] = {"base_url": emu_url, "anonymous": True}
        data.pop("gmail", None)
    else:
        data["gmail"] = {"service_account_env": KEY_ENV, "api_endpoint": emu_url}
        data.pop("graph", None)
    data["mailbox"] = [{"provider": provider, "address": a, "backfill_days": 0} for a in addresses]
    return data


def gmail_raw(to: str, i: int, subject: str, body: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"client{i}@example.org"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(time_now())
    msg["Message-ID"] = f"<scale-{i}-{time.time_ns()}@example.org>"
    msg.set_content(body)
    return bytes(msg)


def time_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _answer(proc: subprocess.Popen[str], log: Path) -> dict[str, Any]:
    """The child's next JSON line; its error output if it died instead."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"the child died:\n{log.read_text()[-3000:]}")
    answer: dict[str, Any] = json.loads(line)
    return answer


def _profile(pid: int, out: str | None, provider: str, n: int) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the child during the triage pass (collapsed stacks), if asked."""
    if not out:
        return None
    path = Path(out) / f"{provider}-{n}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    proc = subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "-f", "raw", "-r", "200", "--gil", "-o", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attached before the pass starts
    return proc


def run_case(
    provider: str,
    n: int,
    per_mailbox: int,
    code: str | None,
    llm_concurrency: int,
    profile: str | None = None,
) -> Figures:
    from mailtriage.sandbox.gmail import GmailEmulator
    from mailtriage.sandbox.graph import GraphEmulator
    from mailtriage.sandbox.llm import SandboxLLM
    from mailtriage.sandbox.process import BENCH_MAILS, write_toml

    domain = "atelier-dupont.fr" if provider == "graph" else "atelier-dupont.com"
    addresses = [f"contact{i}@{domain}" for i in range(n)]
    emu: Any = GraphEmulator() if provider == "graph" else GmailEmulator(users=addresses)
    with emu, SandboxLLM() as llm, tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if provider == "graph":
            for address in [*addresses, *DEPARTMENTS]:
                emu.add_mailbox(address)
            url = emu.base_url
        else:
            env[KEY_ENV] = emu.service_account_json()
            url = emu.url
        config = Path(tmp) / "scale.toml"
        data = config_data(provider, addresses, url, llm, Path(tmp) / "state.db", llm_concurrency)
        write_toml(config, data)
        if code:
            env["PYTHONPATH"] = str(Path(code).resolve())
            env["MT_SCALE_CODE"] = "1"
        child_log = (Path(tmp) / "child.log").open("w")  # its error lines, one per mailbox
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=child_log,
            env=env,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None

        def requests() -> int:
            return len(emu.requests) if provider == "graph" else len(emu.state.request_log)

        def throttled() -> int:
            if provider == "graph":
                return sum(1 for r in emu.requests if r.status == 429)
            return int(emu.state.rate_limited)

        r0 = requests()
        started = _answer(proc, Path(tmp) / "child.log")
        r1 = requests()
        for address in addresses:
            for i in range(per_mailbox):
                subject, body = BENCH_MAILS[i % len(BENCH_MAILS)]
                if provider == "graph":
                    emu.deliver(
                        address, subject=f"{subject} #{i}", body=body, sender=f"c{i}@example.org"
                    )
                else:
                    emu.deliver(address, gmail_raw(address, i, f"{subject} #{i}", body))
        t0 = throttled()
        spy = _profile(proc.pid, profile, provider, n)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        done = _answer(proc, Path(tmp) / "child.log")
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        r2 = requests()
        proc.stdin.close()
        proc.wait(timeout=300)
        outcomes = done["outcomes"]
        messages = n * per_mailbox
        return Figures(
            provider=provider,
            mailboxes=n,
            messages=messages,
            seconds=done["seconds"],
            cpu_s=done["cpu_s"],
            done=int(outcomes.get("done", 0)),
            failures=messages - int(outcomes.get("done", 0)),
            errors=done["errors"] + [(e, 1) for e in started["first_errors"]],
            peak_mb=done["peak_kb"] / 1024,
            base_mb=started["base_rss_kb"] / 1024,
            start_s=started["seconds"],
            start_requests=r1 - r0,
            requests=r2 - r1,
            throttled=throttled() - t0,
            transactions=int(done.get("transactions", 0)),
        )


HEADER = (
    f"{'provider':>8} {'mailboxes':>9} {'msgs':>6} {'seconds':>8} {'msg/s':>7} "
    f"{'CPU ms/msg':>10} {'failures':>8} {'req/msg':>7} {'tx/msg':>6} {'429':>5} {'peak MB':>8} "
    f"{'MB/mbx':>7} {'start s':>7} {'start ms/mbx':>12} {'start req/mbx':>13}"
)


def row(f: Figures) -> str:
    return (
        f"{f.provider:>8} {f.mailboxes:>9} {f.messages:>6} {f.seconds:>8.1f} {f.rate:>7.1f} "
        f"{f.cpu_ms_per_msg:>10.1f} {f.failures:>8} {f.requests / max(1, f.messages):>7.2f} "
        f"{f.transactions / max(1, f.messages):>6.2f} {f.throttled:>5} {f.peak_mb:>8.0f} "
        f"{f.rss_per_mailbox_mb:>7.2f} {f.start_s:>7.1f} "
        f"{1000 * f.start_s / f.mailboxes:>12.1f} {f.start_requests / f.mailboxes:>13.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--provider", action="append", choices=["graph", "gmail"])
    parser.add_argument("--mailboxes", type=int, action="append")
    parser.add_argument("--messages", type=int, default=10, help="messages per mailbox")
    parser.add_argument("--llm-concurrency", type=int, default=4, help="llm.max_concurrency")
    parser.add_argument("--code", help="run mailtriage from this checkout (before/after)")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    parser.add_argument("--profile", help="py-spy collapsed stacks of each triage pass here")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs")
    if not args.json:
        print(HEADER, flush=True)
    for provider in args.provider or ["graph", "gmail"]:
        for n in args.mailboxes or [1, 10, 100, 1000]:
            f = run_case(provider, n, args.messages, args.code, args.llm_concurrency, args.profile)
            if args.json:
                print(json.dumps({**f.__dict__, "rate": f.rate}), flush=True)
            else:
                print(row(f), flush=True)
                for error, count in f.errors[:3]:
                    print(f"{'':>10}{count} × {error}")


if __name__ == "__main__":
    main()
