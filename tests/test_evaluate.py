"""`mailtriage eval` and its building blocks, checked against hand-computed figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailtriage.core import embedding
from mailtriage.core.errors import ConfigError
from mailtriage.core.evaluate import (
    Dataset,
    LabelledMessage,
    apply_label_map,
    compute_metrics,
    confusion_html,
    load_dataset,
    load_label_map,
    sample,
    split_k_shot,
)
from mailtriage.core.message import Message
from mailtriage.core.thresholds import TABLE_THRESHOLDS
from tests.embedders import KeywordEmbedder

CONFIG = """
review_category = "review"
[[category]]
key = "invoice"
name = "Invoice"
description = "invoice"
[[category]]
key = "job"
name = "Job"
description = "job"
[[category]]
key = "order"
name = "Order"
description = "order"
[[category]]
key = "review"
name = "Review"
description = "anything else"
"""

# subject, body, gold label; the keyword embedder predicts the most frequent keyword.
ROWS = [
    ("Invoice 12", "please pay the invoice", "invoice"),  # -> invoice
    ("Invoice", "invoice attached", "invoice"),  # -> invoice
    ("Late", "my order", "invoice"),  # -> order
    ("Job", "job application", "job"),  # -> job
    ("Application", "job and order and order", "job"),  # -> order
    ("Job", "job", "job"),  # -> job
    ("Order", "order missing", "order"),  # -> order
    ("Status", "job job order", "order"),  # -> job
    ("Order invoice", "invoice invoice for your order", "order"),  # -> invoice
    ("order", "order order", "order"),  # -> order
]
# Hand-computed: rows = true (invoice, job, order), columns = predicted.
EXPECTED_MATRIX = [[2, 0, 1], [0, 2, 1], [1, 1, 2]]
# accuracy 6/10; F1 invoice 2/3, job 2/3 (p 2/3, r 2/3), order 1/2 (p 2/4, r 2/4)
EXPECTED_ACCURACY = 0.6
EXPECTED_MACRO_F1 = (2 / 3 + 2 / 3 + 1 / 2) / 3  # 0.6111


def write_csv(path: Path, rows: list[tuple[str, str, str]], delimiter: str = ",") -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(["subject", "body", "label"])
        w.writerows(rows)
    return path


def test_metrics_match_the_hand_computed_matrix() -> None:
    predicted = ["invoice", "invoice", "order", "job", "order", "job", "order", "job",
                 "invoice", "order"]  # fmt: skip
    m = compute_metrics([r[2] for r in ROWS], predicted, ["invoice", "job", "order", "review"])
    assert m.labels == ["invoice", "job", "order"]
    assert m.matrix == EXPECTED_MATRIX
    assert m.accuracy == pytest.approx(EXPECTED_ACCURACY)
    assert m.macro_f1 == pytest.approx(EXPECTED_MACRO_F1)
    order = m.per_category[2]
    assert (order.precision, order.recall, order.support, order.predicted) == (0.5, 0.5, 4, 4)


def test_a_label_only_predicted_counts_in_macro_f1() -> None:
    m = compute_metrics(["a", "a"], ["a", "b"], ["a", "b"])
    assert m.matrix == [[1, 1], [0, 0]]
    b = m.per_category[1]
    assert (b.precision, b.recall, b.f1, b.support) == (0.0, 0.0, 0.0, 0)
    assert m.macro_f1 == pytest.approx((2 / 3 + 0) / 2)


def test_eval_command_prints_and_writes_correct_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailtriage.cli import app

    fake = KeywordEmbedder(["invoice", "job", "order"])
    monkeypatch.setattr(embedding, "get_embedder", lambda settings: fake)
    config = tmp_path / "mailtriage.toml"
    config.write_text(CONFIG, encoding="utf-8")
    data = write_csv(tmp_path / "sample.csv", ROWS)
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["eval", str(data), "--config", str(config), "--out", str(out),
              "--target-precision", "0.6"],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "0.600" in result.output
    assert "macro-F1" in result.output and "0.611" in result.output
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert report["labels"] == ["invoice", "job", "order"]
    assert report["confusion_matrix"] == EXPECTED_MATRIX
    assert report["accuracy"] == EXPECTED_ACCURACY
    assert report["macro_f1"] == round(EXPECTED_MACRO_F1, 4)
    assert report["n"] == 10 and report["classifier"] == "embedded"
    # At threshold 0 everything is routed: precision on routed = accuracy (6/10).
    assert report["risk_coverage"][0] == {
        "threshold": 0.0, "coverage": 1.0, "routed": 10, "precision": EXPECTED_ACCURACY,
    }  # fmt: skip
    assert [r["threshold"] for r in report["risk_coverage"]] == list(TABLE_THRESHOLDS)
    reliability = report["calibration"]["reliability"]
    assert sum(b["count"] for b in reliability) == 10
    assert report["calibration"]["ece_before"] is not None
    # Target 0.6 is reached with everything routed (precision 0.6): the lowest threshold
    # wins, which is the lowest confidence seen (the first non-empty reliability bin's).
    first = report["recommendations"][0]
    assert (first["category"], first["coverage"], first["precision"]) == (None, 1.0, 0.6)
    lowest_bin = next(b for b in reliability if b["count"])
    assert lowest_bin["low"] <= first["min_confidence"] <= lowest_bin["high"]
    assert "risk-coverage" in result.output and "reliability diagram" in result.output
    assert f"min_confidence = {first['min_confidence']:.2f}: precision 0.600" in result.output
    page = (out / "confusion.html").read_text(encoding="utf-8")
    # confusion matrix: header + 3 rows; risk-coverage: header + one row per threshold
    assert page.startswith("<!doctype html>")
    assert page.count("<tr>") == 4 + 1 + len(TABLE_THRESHOLDS)
    assert page.count("class='bin'") == sum(1 for b in reliability if b["count"])


def test_eval_command_rejects_unknown_labels(tmp_path: Path) -> None:
    from mailtriage.cli import app

    config = tmp_path / "mailtriage.toml"
    config.write_text(CONFIG, encoding="utf-8")
    data = write_csv(tmp_path / "sample.csv", [("a", "b", "spam")])
    result = CliRunner().invoke(app, ["eval", str(data), "--config", str(config)])
    assert result.exit_code == 2
    assert "spam (1)" in result.output


def test_csv_columns_and_delimiter_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "mails.csv"
    path.write_text("Objet;Corps;Queue\nFacture;Notre facture;compta\n;;\n", encoding="utf-8")
    data = load_dataset(path, label_column="queue")
    assert len(data.items) == 1
    item = data.items[0]
    assert (item.message.subject, item.message.text, item.label) == (
        "Facture", "Notre facture", "compta",
    )  # fmt: skip
    assert data.unreadable == [("mails.csv:3", "no label")]
    with pytest.raises(ConfigError, match="no column 'nope'"):
        load_dataset(path, label_column="nope")


def test_text_columns_option(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("header,body,extra,label\nH,B,E,x\n", encoding="utf-8")
    one = load_dataset(path, text_columns=["body"]).items[0].message
    assert (one.subject, one.text) == ("", "B")
    many = load_dataset(path, text_columns=["header", "body", "extra"]).items[0].message
    assert (many.subject, many.text) == ("H", "B\n\nE")


def test_eml_folder_with_labels_csv(tmp_path: Path) -> None:
    (tmp_path / "a.eml").write_bytes(
        b"From: Anna <anna@example.org>\r\nSubject: Facture 12\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nVeuillez trouver notre facture.\r\n"
    )
    (tmp_path / "b.eml").write_bytes(
        b"Subject: Promo\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><body><p>-20% &amp; plus</p></body></html>\r\n"
    )
    (tmp_path / "labels.csv").write_text(
        "path,label\na.eml,invoice\nb.eml,ads\nmissing.eml,ads\n", encoding="utf-8"
    )
    data = load_dataset(tmp_path)
    assert [(i.message.subject, i.label) for i in data.items] == [
        ("Facture 12", "invoice"), ("Promo", "ads"),
    ]  # fmt: skip
    assert "Veuillez trouver notre facture." in data.items[0].message.text
    assert "-20% & plus" in data.items[1].message.text
    assert [f for f, _ in data.unreadable] == ["missing.eml"]


def test_label_map_files(tmp_path: Path) -> None:
    toml = tmp_path / "map.toml"
    toml.write_text('"Billing and Payments" = "invoice"\n"Spam" = ""\n', encoding="utf-8")
    jsn = tmp_path / "map.json"
    jsn.write_text('{"Billing and Payments": "invoice", "Spam": ""}', encoding="utf-8")
    csvf = tmp_path / "map.csv"
    csvf.write_text("label,key\nBilling and Payments,invoice\nSpam,\n", encoding="utf-8")
    maps = [load_label_map(p) for p in (toml, jsn, csvf)]
    assert maps[0] == maps[1] == maps[2] == {"Billing and Payments": "invoice", "Spam": ""}
    data = Dataset(
        items=[
            LabelledMessage(Message("m", "1"), "Billing and Payments"),
            LabelledMessage(Message("m", "2"), "Spam"),
        ]
    )
    mapped = apply_label_map(data, maps[0], ["invoice", "review"])
    assert [i.label for i in mapped.items] == ["invoice"]


def test_k_shot_split_never_leaks_into_the_test_split() -> None:
    items = [LabelledMessage(Message("m", f"{lab}{i}"), lab) for lab in "ab" for i in range(10)]
    items += [LabelledMessage(Message("m", f"c{i}"), "c") for i in range(3)]
    train, test = split_k_shot(items, 4, seed=1)
    train_ids = {i.message.provider_id for i in train}
    test_ids = {i.message.provider_id for i in test}
    assert not train_ids & test_ids and len(train_ids | test_ids) == len(items)
    counts = {lab: sum(1 for i in train if i.label == lab) for lab in "abc"}
    assert counts == {"a": 4, "b": 4, "c": 1}  # c keeps test messages
    again, _ = split_k_shot(items, 4, seed=1)
    assert [i.message.provider_id for i in again] == [i.message.provider_id for i in train]
    assert split_k_shot(items, 0) == ([], items)
    limited = sample(test, 5, seed=3)
    assert len(limited) == 5 and all(i in test for i in limited)


def test_confusion_html_escapes_labels() -> None:
    m = compute_metrics(["<b>"], ["<b>"])
    page = confusion_html(m)
    assert "&lt;b&gt;" in page and "<b>" not in page.split("<body>")[1]


def test_eval_cascade_against_the_sandbox_llm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--classifier cascade` wires the LLM side (real openai client, sandbox server)."""
    from mailtriage.cli import app
    from mailtriage.sandbox.llm import DEFAULT_MODEL, SandboxLLM

    monkeypatch.setattr(embedding, "get_embedder", lambda settings: KeywordEmbedder(["job"]))
    data = write_csv(tmp_path / "sample.csv", [("Job", "job application", "job"),
                                                ("Hello", "call me back", "invoice")])  # fmt: skip
    with SandboxLLM() as server:
        config = tmp_path / "mailtriage.toml"
        config.write_text(
            CONFIG.replace(
                'review_category = "review"',
                'review_category = "review"\n'
                f'[llm]\nbase_url = "{server.base_url}"\nmodel = "{DEFAULT_MODEL}"\n'
                "max_retries = 0\n[embedded]\ncascade_threshold = 0.55\n",
            ),
            encoding="utf-8",
        )
        out = tmp_path / "report"
        result = CliRunner().invoke(
            app,
            ["eval", str(data), "-c", str(config), "--classifier", "cascade", "--out", str(out)],
        )
        asked = server.request_count
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert report["cascade"] == {"embedded": 1, "llm": 1, "llm_errors": 0}
    assert asked == 1
