"""`mailtriage eval`: accuracy, macro-F1, per-category scores and a confusion matrix."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from mailtriage.cli import console, plain, user_errors
from mailtriage.cli.options import DEFAULT_CONFIG, ConfigOption, load
from mailtriage.cli.thresholds import print_recommendations, print_reliability, print_risk_coverage
from mailtriage.core.calibration import expected_calibration_error, reliability
from mailtriage.core.config import Settings
from mailtriage.core.decision import Decision
from mailtriage.core.embedded import EmbeddedClassifier
from mailtriage.core.errors import ConfigError
from mailtriage.core.evaluate import (
    EVAL_MAILBOX,
    EvalRun,
    Metrics,
    apply_label_map,
    calibration_html,
    classify_all,
    compute_metrics,
    examples_from,
    load_dataset,
    load_label_map,
    report_dict,
    risk_coverage_html,
    sample,
    split_k_shot,
    threshold_stats,
    write_report,
)
from mailtriage.core.examples import Example, MemoryExampleSource
from mailtriage.core.message import Message
from mailtriage.core.ports import Classifier
from mailtriage.core.thresholds import Scored, risk_coverage

KINDS = ("embedded", "llm", "cascade")


def build(settings: Settings, kind: str, train: list[Example]) -> Classifier:
    """The classifier under test; the k-shot examples feed the embedded model and the LLM."""
    if kind not in KINDS:
        raise typer.BadParameter(f"use one of {', '.join(KINDS)}", param_hint="--classifier")
    if kind in ("llm", "cascade") and not settings.llm.configured:
        raise ConfigError(f"classifier {kind!r} needs [llm].model to be set")
    from mailtriage.core.embedded import EmbeddedClassifier, few_shot_hook
    from mailtriage.core.embedding import get_embedder

    source = MemoryExampleSource(train) if train else None
    embedder = get_embedder(settings.embedded)
    embedded = EmbeddedClassifier(settings, embedder, source)
    embedded.prototypes(None)  # load the model and encode categories before timing starts
    if kind == "embedded":
        return embedded
    from mailtriage.core.llm import LLMClassifier

    hook = few_shot_hook(source, embedder, settings.llm.few_shot) if source else None
    llm: Classifier = LLMClassifier(settings, examples_for=hook)
    if kind == "llm":
        return llm
    from mailtriage.core.cascade import CascadeClassifier

    return CascadeClassifier(settings, embedded, llm)


def classify_embedded(
    clf: EmbeddedClassifier, messages: list[Message]
) -> tuple[EvalRun, list[Decision]]:
    """Embed once; decisions with the calibrated and with the raw confidence."""
    started = time.perf_counter()
    vectors = clf.embed(messages)
    decisions = clf.decide(messages, vectors)
    seconds = time.perf_counter() - started
    return EvalRun(decisions, seconds), clf.decide(messages, vectors, calibrated=False)


def print_metrics(metrics: Metrics) -> None:
    summary = Table(title=f"mailtriage eval: {metrics.n} messages")
    for col in ("category", "precision", "recall", "F1", "support", "predicted"):
        summary.add_column(col, justify="left" if col == "category" else "right")
    for s in metrics.per_category:
        summary.add_row(
            s.key,
            f"{s.precision:.3f}",
            f"{s.recall:.3f}",
            f"{s.f1:.3f}",
            str(s.support),
            str(s.predicted),
        )
    summary.add_section()
    summary.add_row("accuracy", "", "", f"{metrics.accuracy:.3f}", str(metrics.n), "")
    summary.add_row("macro-F1", "", "", f"{metrics.macro_f1:.3f}", "", "")
    console.print(summary)
    # Wide label sets get numbered columns so that the matrix fits a terminal.
    numbered = len(metrics.labels) > 6
    matrix = Table(title="confusion matrix (rows: true, columns: predicted)")
    matrix.add_column("true \\ predicted")
    for j, key in enumerate(metrics.labels, start=1):
        matrix.add_column(str(j) if numbered else key, justify="right")
    for i, (key, row) in enumerate(zip(metrics.labels, metrics.matrix, strict=True)):
        cells = [
            (f"[bold green]{n}[/]" if j == i else f"[red]{n}[/]") if n else "·"
            for j, n in enumerate(row)
        ]
        matrix.add_row(f"{i + 1} {key}" if numbered else key, *cells)
    console.print(matrix)


def eval_command(
    data: Annotated[
        Path, typer.Argument(help="A folder of .eml files with a labels CSV, or a CSV of messages.")
    ],
    config: ConfigOption = DEFAULT_CONFIG,
    classifier: Annotated[str, typer.Option(help="embedded, llm or cascade.")] = "embedded",
    k_shot: Annotated[
        int, typer.Option("--k-shot", min=0, help="Examples per category from a train split.")
    ] = 0,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Evaluate at most N test messages (random).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for eval.json and confusion.html.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and the sample.")] = 0,
    labels: Annotated[
        Path | None, typer.Option(help="Labels CSV (path,label) for an .eml folder.")
    ] = None,
    label_column: Annotated[str | None, typer.Option(help="Column holding the label.")] = None,
    text_columns: Annotated[
        str | None,
        typer.Option(help="Comma-separated text columns (first = subject when several)."),
    ] = None,
    label_map: Annotated[
        Path | None,
        typer.Option(help="File mapping dataset labels to category keys (.toml/.json/.csv)."),
    ] = None,
    target_precision: Annotated[
        float | None,
        typer.Option(
            "--target-precision",
            min=0.0,
            max=1.0,
            help="Recommend the min_confidence reaching this precision on routed mail.",
        ),
    ] = None,
) -> None:
    """Measure a classifier on labelled messages. Never touches a mailbox."""
    settings = load(config)
    if classifier not in KINDS:
        raise typer.BadParameter(f"use one of {', '.join(KINDS)}", param_hint="--classifier")
    columns = [c.strip() for c in text_columns.split(",") if c.strip()] if text_columns else None
    dataset = load_dataset(data, labels=labels, label_column=label_column, text_columns=columns)
    keys = [c.key for c in settings.categories]
    mapping = load_label_map(label_map) if label_map else None
    dataset = apply_label_map(dataset, mapping, keys)
    if not dataset.items:
        raise ConfigError(f"{data}: no labelled message to evaluate")
    train, test = split_k_shot(dataset.items, k_shot, seed)
    test = sample(test, limit, seed)
    from mailtriage.core.embedded import message_text

    clf = build(settings, classifier, examples_from(train, message_text))
    messages = [i.message for i in test]
    raw: list[Decision] | None = None
    if isinstance(clf, EmbeddedClassifier):
        run, raw = classify_embedded(clf, messages)
    else:
        run = asyncio.run(
            classify_all(
                clf,
                messages,
                fallback=settings.review_category,
                concurrency=settings.llm.max_concurrency,
            )
        )
    gold = [i.label for i in test]
    metrics = compute_metrics(gold, [d.category for d in run.decisions], keys)
    print_metrics(metrics)
    scored = [Scored(d.category, g, d.confidence) for d, g in zip(run.decisions, gold, strict=True)]
    correct = [s.correct for s in scored]
    bins = reliability([s.confidence for s in scored], correct)
    ece = expected_calibration_error([s.confidence for s in scored], correct)
    ece_raw = (
        expected_calibration_error([d.confidence for d in raw], correct)
        if raw is not None
        else None
    )
    model_line = (
        clf.model(EVAL_MAILBOX).describe() if isinstance(clf, EmbeddedClassifier) else classifier
    )
    print_risk_coverage(scored, settings.min_confidence)
    print_reliability(bins, ece_raw, ece, model_line)
    recs = (
        print_recommendations(scored, target_precision, settings.min_confidence)
        if target_precision is not None
        else []
    )
    extra: dict[str, Any] = {
        "data": str(data),
        "classifier": classifier,
        "k_shot": k_shot,
        "train": len(train),
        "seed": seed,
        "seconds": round(run.seconds, 3),
        "per_second": round(run.per_second, 2),
        "failures": run.failures,
        "unreadable": [{"file": f, "reason": r} for f, r in dataset.unreadable],
        "at_min_confidence": threshold_stats(gold, run.decisions, settings.min_confidence),
        "at_cascade_threshold": threshold_stats(
            gold, run.decisions, settings.embedded.cascade_threshold
        ),
        "calibration": {
            "model": model_line,
            "ece_before": round(ece_raw, 4) if ece_raw is not None else None,
            "ece": round(ece, 4),
            "reliability": [asdict(b) for b in bins],
        },
        "risk_coverage": [
            {
                "threshold": p.threshold,
                "coverage": round(p.coverage, 4),
                "routed": p.routed,
                "precision": round(p.precision, 4),
            }
            for p in risk_coverage(scored)
        ],
        "recommendations": [
            {
                "category": r.category,
                "target": r.target,
                "min_confidence": r.threshold,
                "coverage": round(r.point.coverage, 4) if r.point else None,
                "precision": round(r.point.precision, 4) if r.point else None,
            }
            for r in recs
        ],
    }
    stats = getattr(clf, "stats", None)
    if isinstance(stats, dict):
        extra["cascade"] = dict(stats)
    console.print(
        f"{len(test)} messages in {run.seconds:.1f} s ({run.per_second:.1f}/s); "
        f"{len(dataset.unreadable)} unreadable; {run.failures} classifier failures",
        highlight=False,
    )
    if out is not None:
        sections = risk_coverage_html(risk_coverage(scored)) + calibration_html(
            bins, ece_raw, ece, model_line
        )
        for path in write_report(out, report_dict(metrics, **extra), metrics, sections):
            console.print(plain(f"wrote {path}"))


def register(app: typer.Typer) -> None:
    app.command("eval")(user_errors(eval_command))
