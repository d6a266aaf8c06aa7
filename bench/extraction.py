"""Text extraction throughput over the shared SpamAssassin corpus.

    .venv/bin/python bench/extraction.py [--data ../shared/data] [--rounds 3]

Reads every message of `spamassassin/index.csv` into memory first (disk time is not
measured), then runs `parse_rfc822` over all of them `--rounds` times and prints messages/s,
MB/s, per-message median / p95 / max, and the process peak RSS. The best round is reported,
the usual practice for throughput on a shared machine.
"""

from __future__ import annotations

import argparse
import csv
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailtriage.core.errors import MessageParseError  # noqa: E402
from mailtriage.core.extract import parse_rfc822  # noqa: E402


def load(data: Path) -> list[tuple[str, bytes]]:
    corpus = data / "spamassassin"
    with (corpus / "index.csv").open(encoding="utf-8", newline="") as handle:
        paths = [row["path"] for row in csv.DictReader(handle)]
    return [(path, (corpus / path).read_bytes()) for path in paths]


def one_round(messages: list[tuple[str, bytes]]) -> tuple[float, list[float], int, int]:
    """Total seconds, per-message seconds, messages with text, refused messages."""
    timings: list[float] = []
    with_text = refused = 0
    started = time.perf_counter()
    for name, raw in messages:
        before = time.perf_counter()
        try:
            message = parse_rfc822(raw, mailbox="bench", provider_id=name)
            with_text += bool(message.text)
        except MessageParseError:
            refused += 1
        timings.append(time.perf_counter() - before)
    return time.perf_counter() - started, timings, with_text, refused


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not (args.data / "spamassassin" / "index.csv").is_file():
        sys.exit(f"SpamAssassin corpus not found under {args.data}")

    messages = load(args.data)
    total_mb = sum(len(raw) for _, raw in messages) / 1e6
    rss_loaded = peak_rss_mb()
    rounds = [one_round(messages) for _ in range(max(args.rounds, 1))]
    elapsed, timings, with_text, refused = min(rounds, key=lambda r: r[0])
    ordered = sorted(timings)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]

    print(f"python {platform.python_version()} on {platform.machine()}, {args.rounds} rounds")
    print(f"corpus        {len(messages)} messages, {total_mb:.1f} MB")
    print(f"with text     {with_text} ({with_text / len(messages):.1%}), refused {refused}")
    print(f"best round    {elapsed:.2f} s")
    print(f"throughput    {len(messages) / elapsed:,.0f} messages/s, {total_mb / elapsed:.1f} MB/s")
    print(
        f"per message   median {statistics.median(timings) * 1e3:.2f} ms, "
        f"p95 {p95 * 1e3:.2f} ms, max {ordered[-1] * 1e3:.1f} ms"
    )
    print(f"rounds        {', '.join(f'{r[0]:.2f} s' for r in rounds)}")
    print(f"peak RSS      {peak_rss_mb():.0f} MB (after loading the corpus: {rss_loaded:.0f} MB)")


if __name__ == "__main__":
    main()
