"""Classification benchmarks of the embedded classifier on public data (read in place).

    python bench/classification.py support-tickets [--lang en|de] [--k-shot 8] [--limit N]
    python bench/classification.py spamassassin [--limit N]
    python bench/classification.py melusine

Each prints accuracy (and the majority-class baseline), macro-F1, e-mails/s (wall clock,
classification only, model already loaded; and per CPU-second, which a busy machine
distorts less), model load and prototype setup times, the peak RSS of the process, and
how much mail clears the cascade threshold with what accuracy. Configs live beside this
script; their category descriptions were written once from the dataset's label names,
not tuned row by row.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import re
import resource
import sys
import time
from collections import Counter
from pathlib import Path

from mailtriage.core.config import Settings, load_settings
from mailtriage.core.embedded import EmbeddedClassifier, message_text
from mailtriage.core.embedding import get_embedder
from mailtriage.core.evaluate import (
    Dataset,
    LabelledMessage,
    apply_label_map,
    classify_all,
    compute_metrics,
    examples_from,
    load_eml_folder,
    load_label_map,
    load_message_csv,
    sample,
    split_k_shot,
    threshold_stats,
)
from mailtriage.core.examples import MemoryExampleSource

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
TICKETS = DATA / "support-tickets" / "dataset-tickets-multi-lang-4-20k.PARTIAL.csv"
QUEUES = load_label_map(HERE / "support_tickets_labels.toml")


def support_tickets(lang: str) -> Dataset:
    """Tickets of one language; the queue is the label (the bodies' literal '\\n' unescaped)."""
    data = load_message_csv(TICKETS, label_column="queue")
    with TICKETS.open(encoding="utf-8") as fh:
        langs = [row["language"] for row in csv.DictReader(fh)]
    items = []
    for item, row_lang in zip(data.items, langs, strict=True):
        if row_lang == lang:
            item.message.text = item.message.text.replace("\\n", "\n")
            items.append(item)
    return Dataset(items=items, unreadable=data.unreadable)


def spamassassin() -> Dataset:
    """Raw messages through the parser; spam and hard-ham newsletters are advertising."""
    folder = DATA / "spamassassin"
    data = load_eml_folder(folder, labels=folder / "index.csv", label_column="group")
    groups = {"spam-1": "advertising", "hard-ham-1": "advertising", "easy-ham-1": "correspondence"}
    return Dataset(
        items=[LabelledMessage(i.message, groups[i.label]) for i in data.items],
        unreadable=data.unreadable,
    )


def melusine() -> Dataset:
    """French insurance mail; the header column is the subject ("Tr : Devis habitation")."""
    return load_message_csv(
        DATA / "melusine-fr" / "emails.v2019.csv",
        label_column="label",
        text_columns=["header", "body"],
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(
    name: str,
    settings: Settings,
    data: Dataset,
    *,
    k_shot: int,
    limit: int | None,
    seed: int,
    label_map: dict[str, str] | None = None,
) -> dict[str, float]:
    keys = [c.key for c in settings.categories]
    data = apply_label_map(data, label_map, keys)
    train, test = split_k_shot(data.items, k_shot, seed)
    test = sample(test, limit, seed)
    started = time.perf_counter()
    embedder = get_embedder(settings.embedded)
    embedder.encode(["warm-up"])
    load_s = time.perf_counter() - started
    examples = MemoryExampleSource(examples_from(train, message_text)) if train else None
    classifier = EmbeddedClassifier(settings, embedder, examples)
    started = time.perf_counter()
    classifier.prototypes(None)
    setup_s = time.perf_counter() - started
    cpu_started = time.process_time()
    result = asyncio.run(classify_all(classifier, [i.message for i in test], fallback="review"))
    cpu_s = time.process_time() - cpu_started
    per_cpu_s = len(test) / cpu_s if cpu_s > 0 else 0.0
    gold = [i.label for i in test]
    metrics = compute_metrics(gold, [d.category for d in result.decisions], keys)
    cascade = threshold_stats(gold, result.decisions, settings.embedded.cascade_threshold)
    majority = Counter(gold).most_common(1)[0][1] / len(gold) if gold else 0.0
    figures = {
        "n": len(test),
        "accuracy": metrics.accuracy,
        "macro_f1": metrics.macro_f1,
        "per_s": result.per_second,
        "per_cpu_s": per_cpu_s,
        "load_s": load_s,
        "setup_s": setup_s,
        "rss_mb": peak_rss_mb(),
        "majority": majority,
        "cov": cascade["coverage"],
        "acc_cov": cascade["accuracy"],
    }
    print(
        f"{name:<34} n={len(test):<5} acc={metrics.accuracy:.3f} (majority {majority:.3f}) "
        f"macroF1={metrics.macro_f1:.3f} "
        f"{result.per_second:6.1f} mails/s ({per_cpu_s:.1f} per CPU-second)  "
        f"load {load_s:.1f}s  setup {setup_s:.1f}s  "
        f"peakRSS {peak_rss_mb():.0f} MB  | conf>={cascade['threshold']}: "
        f"{cascade['coverage']:.0%} of mail at acc {cascade['accuracy']:.3f}",
        flush=True,
    )
    if data.unreadable:
        reasons = Counter(re.sub(r"\d+", "N", r) for _, r in data.unreadable)
        print(f"  unreadable: {len(data.unreadable)} {dict(reasons.most_common(3))}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", choices=["support-tickets", "spamassassin", "melusine"])
    parser.add_argument("--lang", choices=["en", "de"], action="append")
    parser.add_argument("--k-shot", type=int, action="append")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"public data not found at {DATA}", file=sys.stderr)
        return 2
    shots = args.k_shot or [0]
    if args.dataset == "support-tickets":
        settings = load_settings(HERE / "support_tickets.toml")
        for lang in args.lang or ["en", "de"]:
            data = support_tickets(lang)
            for k in shots:
                run(
                    f"support-tickets {lang} {k}-shot",
                    settings,
                    data,
                    k_shot=k,
                    limit=args.limit,
                    seed=args.seed,
                    label_map=QUEUES,
                )
    elif args.dataset == "spamassassin":
        settings = load_settings(HERE / "spamassassin.toml")
        data = spamassassin()
        for k in shots:
            run(
                f"spamassassin {k}-shot", settings, data, k_shot=k, limit=args.limit, seed=args.seed
            )
    else:
        settings = load_settings(HERE / "melusine.toml")
        data = melusine()
        for k in shots:
            run(f"melusine-fr {k}-shot", settings, data, k_shot=k, limit=args.limit, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
