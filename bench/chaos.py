"""kill -9 chaos against `mailtriage run`: exactly once under crashes and lost answers.

Starts the Graph and Gmail emulators and a sandbox model with latency, delivers mail to
both providers (half each), runs `mailtriage run` as a subprocess and kills it with SIGKILL
again and again: at random moments, right after each kind of provider write (emulator
hook, before the answer leaves), and between two arbitrary bytes of an HTTP exchange (a
TCP proxy). Some writes also lose their answer without a kill (dropped, cut, 503, 504).
The service is restarted after each kill; at the end every message is checked in the
emulators and a table is printed. The target is 0 in every column but kills and messages.

    .venv/bin/python bench/chaos.py [--messages 200] [--kills 100] [--seed 1]
                                    [--postgres] [--processes 2] [--no-graph-push]

`--postgres` runs the ledger on a throwaway PostgreSQL cluster (tests/postgres.py);
`--processes 2` runs two `mailtriage run` on that one database, each kill hitting one.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailtriage.sandbox.chaos import ChaosConfig, run_chaos


@contextlib.contextmanager
def state_url(postgres: bool, workdir: Path) -> Iterator[str | None]:
    if not postgres:
        yield None
        return
    from tests.postgres import temporary_postgres

    with temporary_postgres() as url:
        if url is None:
            raise SystemExit("PostgreSQL is not installed here (initdb, pg_ctl)")
        yield url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--llm-latency", type=float, default=0.05)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--processes", type=int, default=1, help="`run` processes on one DB")
    parser.add_argument(
        "--no-graph-push", action="store_true", help="no Graph subscription (schedule only)"
    )
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mt-chaos-"))
    started = time.monotonic()

    def log(line: str) -> None:
        if not args.quiet:
            print(f"[{time.monotonic() - started:6.1f}s] {line}", file=sys.stderr, flush=True)

    with state_url(args.postgres, workdir) as url:
        report = run_chaos(
            ChaosConfig(
                workdir=workdir,
                messages=args.messages,
                kills=args.kills,
                seed=args.seed,
                llm_latency_s=args.llm_latency,
                state_url=url,
                processes=args.processes,
                graph_push=not args.no_graph_push,
                log=log,
            )
        )
    db = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"chaos: {args.messages} messages, {args.kills} kills, seed {args.seed}, ledger {db}, "
        f"{args.processes} process(es), Graph push {'off' if args.no_graph_push else 'on'}"
    )
    print(report.table())
    for line in report.details[:40]:
        print("  " + line)
    print(f"(service log: {workdir / 'service.log'})")
    return 0 if report.clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
