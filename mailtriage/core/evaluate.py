"""Offline evaluation: labelled datasets, k-shot splits, metrics, and the report files.

Used by `mailtriage eval` and the benchmarks in `bench/`. Two dataset shapes are read:
a folder of raw .eml files with a labels CSV (`path,label`), and a CSV of messages with a
subject, a body and a label column (delimiter and columns are detected).
"""

from __future__ import annotations

import asyncio
import csv
import html
import json
import random
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mailtriage.core.calibration import ReliabilityBin
from mailtriage.core.decision import Decision
from mailtriage.core.errors import ClassifierError, ConfigError, MessageParseError
from mailtriage.core.examples import SOURCE_DATASET, Example, excerpt
from mailtriage.core.extract import parse_rfc822
from mailtriage.core.message import Message
from mailtriage.core.ports import Classifier
from mailtriage.core.text import clean_body
from mailtriage.core.thresholds import CoveragePoint

EVAL_MAILBOX = "eval@mailtriage.invalid"
LABEL_COLUMNS = ("label", "category", "queue", "class", "labels", "target")
SUBJECT_COLUMNS = ("subject", "header", "title", "objet")
BODY_COLUMNS = ("body", "text", "content", "message", "corps")
PATH_COLUMNS = ("path", "file", "filename")


@dataclass(slots=True)
class LabelledMessage:
    """One message of a dataset and its gold category key."""

    message: Message
    label: str


@dataclass(slots=True)
class Dataset:
    """Labelled messages, plus the files that could not be read (named, never dropped)."""

    items: list[LabelledMessage]
    unreadable: list[tuple[str, str]] = field(default_factory=list)


# -- loading --------------------------------------------------------------------------------


def load_dataset(
    path: str | Path,
    *,
    labels: str | Path | None = None,
    label_column: str | None = None,
    text_columns: Sequence[str] | None = None,
    mailbox: str = EVAL_MAILBOX,
) -> Dataset:
    """Read a folder of .eml files with a labels CSV, or a CSV of messages."""
    p = Path(path)
    if p.is_dir():
        return load_eml_folder(p, labels=labels, label_column=label_column, mailbox=mailbox)
    if p.is_file():
        return load_message_csv(
            p, label_column=label_column, text_columns=text_columns, mailbox=mailbox
        )
    raise ConfigError(f"{p}: no such file or folder")


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read CSV: {exc}") from None
    first_line = raw.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first_line.count)
    reader = csv.DictReader(raw.splitlines(keepends=True), delimiter=delimiter)
    rows = list(reader)
    header = list(reader.fieldnames or [])
    if not header:
        raise ConfigError(f"{path}: empty CSV")
    return header, rows


def _pick(header: Sequence[str], wanted: str | None, choices: Sequence[str], what: str) -> str:
    lower = {h.lower().strip(): h for h in header}
    if wanted:
        if wanted.lower() in lower:
            return lower[wanted.lower()]
        raise ConfigError(f"no column {wanted!r} for the {what}; columns: {', '.join(header)}")
    for choice in choices:
        if choice in lower:
            return lower[choice]
    raise ConfigError(
        f"cannot tell which column holds the {what} (tried {', '.join(choices)}); "
        f"columns: {', '.join(header)}"
    )


def load_message_csv(
    path: Path,
    *,
    label_column: str | None = None,
    text_columns: Sequence[str] | None = None,
    mailbox: str = EVAL_MAILBOX,
) -> Dataset:
    """A CSV of (subject, body, label) rows.

    `text_columns`: one column is the body; with several, the first is the subject and the
    others are joined into the body. Bodies are cleaned like a parsed message's (quoted
    history, forward headers, signatures). Rows with an empty label are listed as unreadable.
    """
    header, rows = _read_csv(path)
    label_col = _pick(header, label_column, LABEL_COLUMNS, "label")
    if text_columns:
        cols = [_pick(header, c, (), "text") for c in text_columns]
        subject_col, body_cols = (None, cols) if len(cols) == 1 else (cols[0], cols[1:])
    else:
        lower = {h.lower().strip() for h in header}
        subject_col = (
            _pick(header, None, SUBJECT_COLUMNS, "subject")
            if lower & set(SUBJECT_COLUMNS)
            else None
        )
        body_cols = [_pick(header, None, BODY_COLUMNS, "body")]
    data = Dataset(items=[])
    for i, row in enumerate(rows, start=2):
        label = (row.get(label_col) or "").strip()
        if not label:
            data.unreadable.append((f"{path.name}:{i}", "no label"))
            continue
        subject = (row.get(subject_col) or "").strip() if subject_col else ""
        body = "\n\n".join((row.get(c) or "").strip() for c in body_cols)
        body = clean_body(body, html=False, subject=subject)
        message = Message(
            mailbox=mailbox, provider_id=f"{path.name}:{i}", subject=subject, text=body
        )
        data.items.append(LabelledMessage(message, label))
    return data


def load_eml_folder(
    folder: Path,
    *,
    labels: str | Path | None = None,
    label_column: str | None = None,
    mailbox: str = EVAL_MAILBOX,
    parse: Callable[[bytes, str, str], Message] | None = None,
) -> Dataset:
    """Raw messages listed in a labels CSV (`path,label`, paths relative to the folder).

    Without `labels`, the folder must hold exactly one CSV (e.g. `labels.csv`).
    Messages the parser rejects are listed in `unreadable` with the reason.
    """
    labels_path = Path(labels) if labels else _find_labels_csv(folder)
    header, rows = _read_csv(labels_path)
    path_col = _pick(header, None, PATH_COLUMNS, "message path")
    label_col = _pick(header, label_column, LABEL_COLUMNS, "label")
    parse = parse or parse_raw_message
    data = Dataset(items=[])
    for row in rows:
        rel = (row.get(path_col) or "").strip()
        label = (row.get(label_col) or "").strip()
        if not rel or not label:
            continue
        file = folder / rel
        try:
            message = parse(file.read_bytes(), mailbox, rel)
        except OSError as exc:
            data.unreadable.append((rel, f"cannot read: {exc.strerror}"))
            continue
        except MessageParseError as exc:
            data.unreadable.append((rel, exc.reason))
            continue
        data.items.append(LabelledMessage(message, label))
    return data


def _find_labels_csv(folder: Path) -> Path:
    if (folder / "labels.csv").is_file():
        return folder / "labels.csv"
    found = sorted(folder.glob("*.csv"))
    if len(found) != 1:
        raise ConfigError(
            f"{folder}: put the labels in labels.csv (path,label) or name the file with --labels"
        )
    return found[0]


def parse_raw_message(raw: bytes, mailbox: str, provider_id: str) -> Message:
    """Parse RFC 822 bytes exactly as the connectors do."""
    return parse_rfc822(raw, mailbox=mailbox, provider_id=provider_id)


# -- labels ---------------------------------------------------------------------------------


def load_label_map(path: str | Path) -> dict[str, str]:
    """Dataset label -> category key, from .toml / .json (a flat table) or a two-column CSV.

    Map a label to "" to leave its rows out of the evaluation.
    """
    p = Path(path)
    try:
        if p.suffix == ".toml":
            data: Any = tomllib.loads(p.read_text(encoding="utf-8"))
            data = data.get("labels", data)
        elif p.suffix == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
        else:
            _, rows = _read_csv(p)
            pairs = [list(r.values())[:2] for r in rows]
            data = {pair[0]: pair[1] for pair in pairs if len(pair) == 2}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{p}: cannot read label map: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"{p}: a label map is a flat table of label = category key")
    return {str(k): v for k, v in data.items()}


def apply_label_map(
    dataset: Dataset, label_map: dict[str, str] | None, keys: Sequence[str]
) -> Dataset:
    """Rename labels to category keys; every remaining label must be a configured key."""
    items = []
    for item in dataset.items:
        label = label_map.get(item.label, item.label) if label_map else item.label
        if label:
            items.append(LabelledMessage(item.message, label))
    unknown = Counter(i.label for i in items if i.label not in keys)
    if unknown:
        listed = ", ".join(f"{k} ({n})" for k, n in unknown.most_common())
        raise ConfigError(
            f"labels that are not category keys: {listed}; map them with --label-map "
            f"(categories: {', '.join(keys)})"
        )
    return Dataset(items=items, unreadable=dataset.unreadable)


def split_k_shot(
    items: Sequence[LabelledMessage], k: int, seed: int = 0
) -> tuple[list[LabelledMessage], list[LabelledMessage]]:
    """Take `k` training messages per label; the rest is the test split (disjoint).

    A label with fewer than 2k messages gives half of them (rounded down), so that every
    label keeps test messages. Order inside each split follows the input.
    """
    if k <= 0:
        return [], list(items)
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_label.setdefault(item.label, []).append(i)
    train_ids: set[int] = set()
    for label in sorted(by_label):
        ids = by_label[label]
        take = min(k, len(ids) // 2)
        train_ids.update(rng.sample(ids, take))
    train = [item for i, item in enumerate(items) if i in train_ids]
    test = [item for i, item in enumerate(items) if i not in train_ids]
    return train, test


def examples_from(
    items: Sequence[LabelledMessage], text: Callable[[Message], str]
) -> list[Example]:
    """Turn a training split into labelled examples."""
    return [Example(i.label, excerpt(text(i.message)), source=SOURCE_DATASET) for i in items]


# -- metrics --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CategoryScore:
    key: str
    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


@dataclass(slots=True)
class Metrics:
    """Accuracy, macro-F1 (over labels seen in gold or predictions) and the confusion matrix.

    `matrix[i][j]` counts messages of gold label `labels[i]` predicted as `labels[j]`.
    """

    labels: list[str]
    matrix: list[list[int]]
    accuracy: float
    macro_f1: float
    per_category: list[CategoryScore]
    n: int


def compute_metrics(
    gold: Sequence[str], predicted: Sequence[str], order: Sequence[str] = ()
) -> Metrics:
    """Standard multi-class metrics; `order` fixes the label order (others follow, sorted)."""
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted differ in length")
    seen = set(gold) | set(predicted)
    labels = [k for k in order if k in seen] + sorted(seen - set(order))
    index = {k: i for i, k in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, predicted, strict=True):
        matrix[index[g]][index[p]] += 1
    scores = []
    for i, key in enumerate(labels):
        tp = matrix[i][i]
        support = sum(matrix[i])
        n_pred = sum(row[i] for row in matrix)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append(CategoryScore(key, precision, recall, f1, support, n_pred))
    n = len(gold)
    correct = sum(matrix[i][i] for i in range(len(labels)))
    return Metrics(
        labels=labels,
        matrix=matrix,
        accuracy=correct / n if n else 0.0,
        macro_f1=sum(s.f1 for s in scores) / len(scores) if scores else 0.0,
        per_category=scores,
        n=n,
    )


def threshold_stats(
    gold: Sequence[str], decisions: Sequence[Decision], threshold: float
) -> dict[str, float]:
    """Share of messages at or above `threshold`, and the accuracy on that share."""
    kept = [(g, d) for g, d in zip(gold, decisions, strict=True) if d.confidence >= threshold]
    right = sum(1 for g, d in kept if g == d.category)
    return {
        "threshold": threshold,
        "coverage": len(kept) / len(gold) if gold else 0.0,
        "accuracy": right / len(kept) if kept else 0.0,
    }


# -- running --------------------------------------------------------------------------------


@dataclass(slots=True)
class EvalRun:
    """Decisions for a test split, with the wall time they took."""

    decisions: list[Decision]
    seconds: float
    failures: int = 0

    @property
    def per_second(self) -> float:
        return len(self.decisions) / self.seconds if self.seconds > 0 else 0.0


async def classify_all(
    classifier: Classifier,
    messages: Sequence[Message],
    *,
    fallback: str,
    concurrency: int = 4,
) -> EvalRun:
    """Classify every message; batch when the classifier can, else `concurrency` at a time.

    A ClassifierError counts as a failure and as a prediction of `fallback` (review).
    """
    started = time.perf_counter()
    batch = getattr(classifier, "classify_many", None)
    if batch is not None:
        decisions: list[Decision] = list(await batch(messages))
        return EvalRun(decisions, time.perf_counter() - started)
    gate = asyncio.Semaphore(concurrency)
    failures = 0

    async def one(message: Message) -> Decision:
        nonlocal failures
        async with gate:
            try:
                return await classifier.classify(message)
            except ClassifierError as exc:
                failures += 1
                return Decision(fallback, 0.0, f"classifier failed: {exc}", classifier.name)

    decisions = list(await asyncio.gather(*(one(m) for m in messages)))
    return EvalRun(decisions, time.perf_counter() - started, failures)


# -- report files ---------------------------------------------------------------------------


def report_dict(metrics: Metrics, **extra: Any) -> dict[str, Any]:
    """The JSON report: metrics, matrix and whatever the caller adds (run parameters)."""
    out = {
        "n": metrics.n,
        "accuracy": round(metrics.accuracy, 4),
        "macro_f1": round(metrics.macro_f1, 4),
        "labels": metrics.labels,
        "confusion_matrix": metrics.matrix,
        "per_category": [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(s).items()}
            for s in metrics.per_category
        ],
    }
    out.update(extra)
    return out


def confusion_html(metrics: Metrics, title: str = "mailtriage eval") -> str:
    """A self-contained HTML confusion matrix, cells shaded by their share of the row."""
    esc = html.escape
    head = "".join(f"<th>{esc(k)}</th>" for k in metrics.labels)
    rows = []
    for key, row in zip(metrics.labels, metrics.matrix, strict=True):
        total = sum(row) or 1
        cells = []
        for j, count in enumerate(row):
            share = count / total
            hue = 140 if metrics.labels[j] == key else 0
            style = f"background:hsla({hue},70%,45%,{share:.2f})"
            cells.append(f'<td style="{style}" title="{share:.0%}">{count}</td>')
        rows.append(f"<tr><th>{esc(key)}</th>{''.join(cells)}<td>{sum(row)}</td></tr>")
    summary = f"n = {metrics.n} · accuracy {metrics.accuracy:.3f} · macro-F1 {metrics.macro_f1:.3f}"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>"
        "body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}"
        "caption{caption-side:bottom;padding-top:6px;color:#555}</style></head><body>"
        f"<h1>{esc(title)}</h1><p>{esc(summary)}</p>"
        "<table><caption>rows: true category · columns: predicted · shade: share of the row"
        f"</caption><tr><th>true \\ predicted</th>{head}<th>support</th></tr>"
        f"{''.join(rows)}</table></body></html>\n"
    )


def risk_coverage_html(points: Sequence[CoveragePoint]) -> str:
    """The risk-coverage table as HTML: per threshold, share routed and precision."""
    rows = "".join(
        f"<tr><td>{p.threshold:.2f}</td><td>{p.coverage:.0%}</td><td>{p.routed}</td>"
        f"<td>{p.precision:.3f}</td></tr>"
        for p in points
    )
    return (
        "<h2>Risk-coverage</h2><table><tr><th>min_confidence</th><th>routed</th>"
        f"<th>messages routed</th><th>precision on routed</th></tr>{rows}</table>"
    )


def reliability_svg(bins: Sequence[ReliabilityBin], size: int = 320) -> str:
    """A reliability diagram: per confidence bin, a bar of its accuracy and a dot at its
    mean confidence, against the diagonal a calibrated model follows. Empty bins draw
    nothing."""
    pad = 30
    inner = size - 2 * pad
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{size}' height='{size}' "
        "role='img' aria-label='reliability diagram'>",
        f"<rect x='{pad}' y='{pad}' width='{inner}' height='{inner}' fill='none' stroke='#999'/>",
        f"<line x1='{pad}' y1='{pad + inner}' x2='{pad + inner}' y2='{pad}' "
        "stroke='#999' stroke-dasharray='4'/>",
    ]
    for b in bins:
        if not b.count:
            continue
        x = pad + b.low * inner
        width = (b.high - b.low) * inner
        height = b.accuracy * inner
        parts.append(
            f"<rect class='bin' x='{x:.1f}' y='{pad + inner - height:.1f}' width='{width:.1f}' "
            f"height='{height:.1f}' fill='hsla(210,70%,50%,0.7)' stroke='#fff'>"
            f"<title>{b.low:.1f}-{b.high:.1f}: {b.count} messages, confidence "
            f"{b.confidence:.2f}, accuracy {b.accuracy:.2f}</title></rect>"
            # the bin's (mean confidence, accuracy): visible even where accuracy is 0
            f"<circle cx='{pad + b.confidence * inner:.1f}' cy='{pad + inner - height:.1f}' "
            "r='3' fill='#c33'/>"
        )
    for tick in (0.0, 0.5, 1.0):
        x = pad + tick * inner
        y = pad + inner - tick * inner
        parts.append(
            f"<text x='{x:.0f}' y='{pad + inner + 13}' font-size='10' "
            f"text-anchor='middle'>{tick:g}</text>"
            f"<text x='{pad - 4}' y='{y + 3:.0f}' font-size='10' text-anchor='end'>{tick:g}</text>"
        )
    parts.append(
        f"<text x='{pad + inner / 2:.0f}' y='{size - 4}' font-size='11' "
        "text-anchor='middle'>confidence →</text>"
        f"<text x='4' y='{pad - 10}' font-size='11'>accuracy ↑ (dashed: calibrated)</text></svg>"
    )
    return "".join(parts)


def calibration_html(
    bins: Sequence[ReliabilityBin], ece_raw: float | None, ece: float, model: str
) -> str:
    """The reliability section: diagram, ECE before and after calibration."""
    esc = html.escape
    before = (
        f"ECE before calibration {ece_raw:.3f}, after {ece:.3f}"
        if ece_raw is not None
        else (f"ECE {ece:.3f}")
    )
    return f"<h2>Reliability</h2><p>{esc(before)} · {esc(model)}</p>{reliability_svg(bins)}"


def write_report(
    out_dir: str | Path, report: dict[str, Any], metrics: Metrics, extra_html: str = ""
) -> list[Path]:
    """Write `eval.json` and `confusion.html` (plus `extra_html` sections) into `out_dir`;
    return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "eval.json"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", "utf-8")
    html_path = out / "confusion.html"
    page = confusion_html(metrics).replace("</body>", extra_html + "</body>")
    html_path.write_text(page, "utf-8")
    return [json_path, html_path]


def sample(
    items: Sequence[LabelledMessage], limit: int | None, seed: int = 0
) -> list[LabelledMessage]:
    """At most `limit` items drawn at random (reproducible with `seed`), in input order."""
    if limit is None or limit >= len(items):
        return list(items)
    keep = set(random.Random(seed).sample(range(len(items)), limit))
    return [item for i, item in enumerate(items) if i in keep]
