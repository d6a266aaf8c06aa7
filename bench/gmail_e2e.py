"""Benchmark: messages/s triaged end to end on Gmail (emulator) with the sandbox LLM, and
Gmail calls and quota units per message against the minimum the API allows.

Path measured: history.list → batched messages.get (raw) → RFC 822 parse → rules → LLM
classification over HTTP → plan → labels / move / forward / processed label, all through
the real google-api-python-client against the loopback Gmail emulator, which enforces a
per-user budget of 250 units over a 1 s window (Google documents 15,000 units per user
per minute, moving window: the emulator is the stricter of the two). The demo corpus
(43 fr/en mails) is delivered to each mailbox; timing starts when the mail is in the
inboxes and stops when every message is recorded in the ledger.

The second table counts every call of one pass by method, per triaged message, once with
the example configuration's forwards and once without any: the minimum per message is one
`messages.get` (5 units), one `messages.modify` for labels, move, read flag and processed
label together (5), and one `messages.send` per forward (100).

    .venv/bin/python bench/gmail_e2e.py                 # 0 and 300 ms, 1 and 10 mailboxes
    .venv/bin/python bench/gmail_e2e.py --latency-ms 300 --mailboxes 10 --copies 1
    .venv/bin/python bench/gmail_e2e.py --requests-only # the calls-per-message table alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailtriage.connectors.gmail import build_gmail_mailboxes  # noqa: E402
from mailtriage.connectors.gmail.quota import COSTS  # noqa: E402
from mailtriage.core import logs  # noqa: E402
from mailtriage.core.actions import Forward  # noqa: E402
from mailtriage.core.config import Settings, parse_settings  # noqa: E402
from mailtriage.core.ledger import Ledger  # noqa: E402
from mailtriage.core.pipeline import Pipeline, RetryPolicy  # noqa: E402
from mailtriage.core.runtime import sync_all  # noqa: E402
from mailtriage.sandbox.demo_corpus import DEMO_MAILS, build_rfc822  # noqa: E402
from mailtriage.sandbox.gmail import GmailEmulator  # noqa: E402

KEY_ENV = "MAILTRIAGE_BENCH_GMAIL_KEY"


@dataclass
class Figures:
    mailboxes: int
    latency_ms: int
    messages: int
    seconds: float
    api_calls: int
    http_requests: int
    units: int
    max_units_per_s: int
    throttled: int
    quota_wait_s: float
    outcomes: dict[str, int]
    by_api: Counter[str] = field(default_factory=Counter)  # successful calls by method
    done: int = 0
    forwarded: int = 0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def settings_for(
    gm: GmailEmulator,
    addresses: list[str],
    llm_url: str,
    model: str,
    concurrency: int,
    forwards: bool = True,
) -> Settings:
    data = tomllib.loads((ROOT / "manifest" / "mailtriage.example.toml").read_text("utf-8"))
    if not forwards:
        for category in data["category"]:
            category.get("actions", {}).pop("forward_to", None)
    data["llm"] = {
        **data["llm"],
        "base_url": llm_url,
        "model": model,
        "api_key_env": None,
        "max_concurrency": concurrency,
    }
    data["classifier"] = "llm"
    data["gmail"] = {
        "service_account_env": KEY_ENV,
        "api_endpoint": gm.url,
        "token_uri": gm.token_uri,
    }
    data["mailbox"] = [{"provider": "gmail", "address": a} for a in addresses]
    return parse_settings(data, "bench")


def build_classifier(settings: Settings) -> Any:
    from mailtriage.core.classifiers import build_classifier as build

    return build(settings, "llm")


async def run_case(
    n_mailboxes: int,
    latency_ms: int,
    copies: int,
    concurrency: int,
    state_dir: str | None = None,
    forwards: bool = True,
) -> Figures:
    from mailtriage.sandbox.llm import SandboxLLM

    addresses = [f"contact{i}@atelier-dupont.com" for i in range(n_mailboxes)]
    emulator, sandbox = GmailEmulator(users=addresses), SandboxLLM()
    with emulator as gm, sandbox as llm, tempfile.TemporaryDirectory(dir=state_dir) as tmp:
        llm.faults.set_latency(latency_ms / 1000)
        os.environ[KEY_ENV] = gm.service_account_json()
        settings = settings_for(gm, addresses, llm.base_url, llm.model, concurrency, forwards)
        ledger = Ledger(f"sqlite:///{tmp}/bench.sqlite")
        classifier = build_classifier(settings)
        pipeline = Pipeline(settings, ledger, classifier, retry=RetryPolicy(0, 0))
        boxes = build_gmail_mailboxes(settings, ledger)
        await sync_all(pipeline, boxes)  # first run: cursors start from now
        now = datetime.now(UTC)
        delivered = 0
        for address in addresses:
            for copy in range(copies):
                for i, mail in enumerate(DEMO_MAILS):
                    raw = build_rfc822(
                        mail,
                        to=address,
                        date=now - timedelta(minutes=i),
                        message_id_domain=f"c{copy}.{address.split('@')[0]}.demo.example",
                    )
                    gm.deliver(address, raw)
                    delivered += 1
        calls0, units0 = len(gm.state.request_log), sum(gm.state.quota.total.values())
        http0 = sum(b.client.stats.http_requests for b in boxes)
        started = time.perf_counter()
        outcomes: dict[str, int] = {}
        seen = 0
        while seen < delivered:
            reports = await sync_all(pipeline, boxes)
            for report in reports.values():
                if isinstance(report, Exception):
                    raise report
                for result in report.results:
                    outcomes[result.status] = outcomes.get(result.status, 0) + 1
                seen += report.seen
            if time.perf_counter() - started > 900:
                raise TimeoutError(f"only {seen}/{delivered} processed")
        seconds = time.perf_counter() - started
        log = gm.state.request_log[calls0:]
        rows = ledger.recent(limit=delivered + 10)
        for box in boxes:
            await box.aclose()
        close = getattr(classifier, "aclose", None)
        if close is not None:
            await close()
        return Figures(
            mailboxes=n_mailboxes,
            latency_ms=latency_ms,
            messages=delivered,
            seconds=seconds,
            api_calls=len(gm.state.request_log) - calls0,
            http_requests=sum(b.client.stats.http_requests for b in boxes) - http0,
            units=sum(gm.state.quota.total.values()) - units0,
            max_units_per_s=max(gm.max_units_per_s(a) for a in addresses),
            throttled=gm.state.rate_limited,
            quota_wait_s=max(b.client.limiter.waited_s for b in boxes),
            outcomes=outcomes,
            by_api=Counter(api for _, api, _, status in log if status < 300),
            done=sum(1 for r in rows if r.status == "done"),
            forwarded=sum(
                1
                for r in rows
                if r.status == "done" and any(isinstance(a, Forward) for _, a, _ in r.actions)
            ),
        )


# What a triaged message needs at least: its raw content, one modify, a send per forward.
MINIMUM = {"messages.get": 1, "messages.modify": 1}


def requests_table(f: Figures, name: str) -> None:
    """Calls and units per triaged message by method, against the minimum."""
    print(
        f"{name}: {f.done} triaged ({f.forwarded} forwarded) of {f.messages}; "
        "per triaged message (sends: per forwarded message)"
    )
    print(f"{'method':>22} {'calls':>6} {'calls/msg':>9} {'units/msg':>9} {'minimum':>7}")
    for api, calls in sorted(f.by_api.items(), key=lambda kv: -kv[1] * COSTS.get(kv[0], 5)):
        per = f.forwarded if api == "messages.send" else f.done
        minimum = "1" if api == "messages.send" else str(MINIMUM.get(api, "-"))
        print(
            f"{api:>22} {calls:>6} {calls / max(per, 1):>9.2f} "
            f"{calls * COSTS.get(api, 5) / max(f.done, 1):>9.1f} {minimum:>7}"
        )
    total_calls = sum(f.by_api.values())
    units = sum(n * COSTS.get(api, 5) for api, n in f.by_api.items())
    min_calls = 2 * f.done + f.forwarded
    min_units = 10 * f.done + 100 * f.forwarded
    print(
        f"{'total':>22} {total_calls:>6} {total_calls / max(f.done, 1):>9.2f} "
        f"{units / max(f.done, 1):>9.1f}   minimum {min_calls / max(f.done, 1):.2f} calls, "
        f"{min_units / max(f.done, 1):.1f} units per message",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=int, action="append")
    parser.add_argument("--mailboxes", type=int, action="append")
    parser.add_argument("--copies", type=int, default=1, help="corpus copies per mailbox")
    parser.add_argument(
        "--llm-concurrency",
        type=int,
        action="append",
        help="llm.max_concurrency (default: 4, the example config's)",
    )
    parser.add_argument("--state-dir", help="where the SQLite ledger goes (default: $TMPDIR)")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    parser.add_argument(
        "--requests-only", action="store_true", help="only the calls-per-message table"
    )
    args = parser.parse_args()
    logs.configure(level="WARNING")
    if args.requests_only:
        for forwards, name in ((True, "with forwards"), (False, "without forwards")):
            figures = asyncio.run(run_case(1, 0, args.copies, 4, args.state_dir, forwards))
            requests_table(figures, name)
        return
    print(
        f"corpus: {len(DEMO_MAILS)} demo mails x {args.copies} per mailbox; emulator quota "
        "250 units/s per mailbox (enforced)"
    )
    header = (
        f"{'mailboxes':>9} {'LLM ms':>6} {'LLM conc':>8} {'msgs':>5} {'seconds':>8} {'msg/s':>7} "
        f"{'calls/msg':>9} {'HTTP/msg':>8} {'units/msg':>9} {'max u/s':>7} {'429/403':>7} "
        f"{'q-wait s':>8}  outcomes"
    )
    print(header)
    for latency in args.latency_ms or [0, 300]:
        for n in args.mailboxes or [1, 10]:
            for conc in args.llm_concurrency or [4]:
                figures = asyncio.run(run_case(n, latency, args.copies, conc, args.state_dir))
                report(figures, conc, args.json)


def report(f: Figures, concurrency: int, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**f.__dict__, "rate": f.rate, "llm_concurrency": concurrency}))
        return
    print(
        f"{f.mailboxes:>9} {f.latency_ms:>6} {concurrency:>8} {f.messages:>5} {f.seconds:>8.2f} "
        f"{f.rate:>7.2f} {f.api_calls / f.messages:>9.2f} "
        f"{f.http_requests / f.messages:>8.2f} {f.units / f.messages:>9.1f} "
        f"{f.max_units_per_s:>7} {f.throttled:>7} {f.quota_wait_s:>8.1f}  {f.outcomes}",
        flush=True,
    )


if __name__ == "__main__":
    main()
