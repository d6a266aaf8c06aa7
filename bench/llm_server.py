"""The LLM classifier against a real llama.cpp server: latency and prompt tokens evaluated
per message, first message vs the following ones, full vs compact prompt.

Starts `python -m llama_cpp.server` with Gemma 3 270M (the `llama` extra; 2 threads like
the tests, or --threads), then classifies French e-mails read in place from
../shared/data/melusine-fr with the real LLMClassifier, one at a time. For each request
the server's log says how many prompt tokens it took from its cache and how many it
evaluated (llama-cpp-python:
`Llama.generate: N prefix-match hit, remaining M prompt tokens to eval`); the e-mail
block's own token count comes from the server's tokenizer (`/extras/tokenize/count`).

Each mode starts with a message whose system prompt is not cached yet (the other mode's
is), so its first row is the cold cost and the rest show what the prefix cache saves.

Usage:  .venv/bin/python bench/llm_server.py [--messages 10] [--rung json_object_schema]
        [--logprobs] [--max-output-tokens 24] [--modes full,compact]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailtriage.core.config import Settings, load_settings  # noqa: E402
from mailtriage.core.ladder import LadderMemory  # noqa: E402
from mailtriage.core.llm import LLMClassifier  # noqa: E402
from mailtriage.core.message import Address, Message  # noqa: E402
from mailtriage.core.prompt import build_messages  # noqa: E402
from mailtriage.sandbox.llama_server import LlamaServer, unavailable_reason  # noqa: E402

EXAMPLE = ROOT / "manifest" / "mailtriage.example.toml"
BOX = "contact@atelier-dupont.fr"


def melusine(data: Path, limit: int) -> list[Message]:
    rows = json.loads((data / "melusine-fr" / "emails.json").read_text(encoding="utf-8"))
    return [
        Message(
            mailbox=BOX,
            provider_id=str(i),
            subject=row["header"],
            sender=Address(row["from"]),
            text=row["body"],
        )
        for i, row in enumerate(rows[:limit])
    ]


def cpu_ms(pid: int | None) -> float:
    """CPU time (user + system) the server process used so far; steadier than wall time on
    a machine shared with other work. Linux only (0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def count_tokens(server: LlamaServer, text: str) -> int:
    root = server.base_url.removesuffix("/v1")
    resp = httpx.post(root + "/extras/tokenize/count", json={"input": text}, timeout=60)
    resp.raise_for_status()
    return int(resp.json()["count"])


def settings_for(
    base: Settings, server: LlamaServer, mode: str, args: argparse.Namespace
) -> Settings:
    update = {
        "base_url": server.base_url,
        "model": server.model,
        "prompt": mode,
        "response_format": args.rung,
        "logprobs": args.logprobs,
        "max_output_tokens": args.max_output_tokens,
        "few_shot": 0,
        "timeout_s": 600,
        "max_retries": 0,
    }
    return base.model_copy(update={"llm": base.llm.model_copy(update=update)})


async def measure(
    server: LlamaServer, settings: Settings, messages: list[Message]
) -> list[dict[str, float]]:
    classifier = LLMClassifier(settings, memory=LadderMemory())
    categories = settings.categories_for(BOX)
    compact = settings.llm.prompt == "compact"
    rows = []
    try:
        for message in messages:
            email = build_messages(message, categories, "review", 4000, compact=compact)[-1]
            mark = server.log_size()
            cpu_before = cpu_ms(server.pid)
            started = time.perf_counter()
            decision = await classifier.classify(message)
            latency = (time.perf_counter() - started) * 1000
            cpu = cpu_ms(server.pid) - cpu_before
            lines = server.cache_lines(since=mark)
            # No cache line: nothing was reused, the whole prompt was evaluated.
            reused = lines[0].reused if lines else 0
            evaluated = lines[0].evaluated if lines else decision.prompt_tokens
            rows.append(
                {
                    "prompt": decision.prompt_tokens,
                    "reused": reused,
                    "evaluated": evaluated,
                    "email": count_tokens(server, email["content"]),
                    "requests": max(1, len(lines)),
                    "latency_ms": latency,
                    "cpu_ms": cpu,
                }
            )
    finally:
        await classifier.aclose()
    return rows


def print_table(mode: str, rows: list[dict[str, float]]) -> None:
    print(f"\nprompt = {mode!r}")
    print(
        f"  {'msg':>3} {'prompt':>7} {'reused':>7} {'evaluated':>9} {'e-mail':>7} "
        f"{'wall ms':>8} {'cpu ms':>8}"
    )
    for i, r in enumerate(rows):
        print(
            f"  {i + 1:>3} {r['prompt']:>7.0f} {r['reused']:>7.0f} {r['evaluated']:>9.0f} "
            f"{r['email']:>7.0f} {r['latency_ms']:>8.0f} {r['cpu_ms']:>8.0f}"
        )


def summary(mode: str, rows: list[dict[str, float]]) -> str:
    first, rest = rows[0], rows[1:]
    med = statistics.median
    return (
        f"| {mode} | {first['prompt']:.0f} | {first['evaluated']:.0f} | "
        f"{first['latency_ms']:.0f} / {first['cpu_ms']:.0f} | "
        f"{med(r['prompt'] for r in rest):.0f} | {med(r['evaluated'] for r in rest):.0f} | "
        f"{med(r['email'] for r in rest):.0f} | {med(r['latency_ms'] for r in rest):.0f} / "
        f"{med(r['cpu_ms'] for r in rest):.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--messages", type=int, default=10, help="messages per prompt mode")
    parser.add_argument("--rung", default="json_object_schema", help="llm.response_format")
    parser.add_argument("--logprobs", action="store_true", help="ask for logprobs")
    parser.add_argument("--max-output-tokens", type=int, default=24)
    parser.add_argument("--modes", default="full,compact", help="prompt modes, in this order")
    parser.add_argument("--threads", type=int, default=2, help="the server's --n_threads")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"cannot start a llama.cpp server: {reason}")
    if not args.data.is_dir():
        sys.exit(f"public data folder not found at {args.data}")
    messages = melusine(args.data, args.messages)
    base = load_settings(EXAMPLE)
    print(
        f"llama-cpp-python server, Gemma 3 270M Q4_K_M, {args.threads} threads; "
        f"{len(messages)} melusine-fr "
        f"e-mails per mode; rung {args.rung}, logprobs {'on' if args.logprobs else 'off'}, "
        f"max_output_tokens {args.max_output_tokens}"
    )
    results = {}
    with LlamaServer(n_threads=args.threads) as server:
        # One unrelated request first, so that no mode pays the server's own warm-up.
        chat = {"model": server.model, "messages": [{"role": "user", "content": "Bonjour"}]}
        httpx.post(
            server.base_url + "/chat/completions", json={**chat, "max_tokens": 4}, timeout=600
        )
        for mode in args.modes.split(","):
            rows = asyncio.run(measure(server, settings_for(base, server, mode, args), messages))
            results[mode] = rows
            print_table(mode, rows)
    print(
        "\n| prompt | 1st: prompt tokens | 1st: evaluated | 1st: wall / server CPU ms | "
        "next (median): prompt tokens | next: evaluated | next: e-mail tokens | "
        "next: wall / server CPU ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for mode, rows in results.items():
        print(summary(mode, rows))


if __name__ == "__main__":
    main()
