"""`learn`: turn the staff's own folders or labels into examples the classifiers use."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mailtriage.cli import console, plain, user_errors
from mailtriage.cli.options import DEFAULT_CONFIG, ConfigOption, load
from mailtriage.cli.thresholds import print_recommendations, print_risk_coverage
from mailtriage.core.config import Settings
from mailtriage.core.errors import ConfigError
from mailtriage.core.ledger import Ledger
from mailtriage.core.ports import HistorySource

if TYPE_CHECKING:  # the model and numpy load only when `learn` runs
    from mailtriage.core.learn import LearnReport


def learn(
    mailbox: Annotated[str, typer.Option(help="The configured mailbox to learn from.")],
    config: ConfigOption = DEFAULT_CONFIG,
    per_folder: Annotated[
        int, typer.Option("--per-folder", min=1, max=5000, help="Messages read per folder.")
    ] = 50,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Map and count only; store nothing.")
    ] = False,
    target_precision: Annotated[
        float,
        typer.Option(
            "--target-precision",
            min=0.0,
            max=1.0,
            help="Recommend the min_confidence reaching this precision on the history.",
        ),
    ] = 0.95,
) -> None:
    """Read the folders/labels staff already sort into and store them as examples.

    Never changes the mailbox.
    """
    settings = load(config)
    mb_settings = settings.mailbox(mailbox)
    if mb_settings is None:
        raise ConfigError(f"--mailbox {mailbox}: not a configured [[mailbox]] address")
    only = settings.model_copy(update={"mailboxes": [mb_settings]})
    ledger = Ledger(settings.state.url, store_text=settings.store_text)
    report = asyncio.run(_learn(only, ledger, per_folder=per_folder, dry_run=dry_run))
    console.print(report_table(report, dry_run=dry_run))
    if report.unmapped:
        console.print(
            plain(
                "not mapped to a category (add them to the mailbox's folder_map to use them): "
                + ", ".join(report.unmapped)
            )
        )
    verb = "would add" if dry_run else "added"
    console.print(
        f"{verb} {report.added} examples in {report.seconds:.1f} s; the mailbox was not changed",
        highlight=False,
    )
    if not dry_run:
        advise_threshold(only, ledger, mb_settings.address, target_precision)


def advise_threshold(settings: Settings, ledger: Ledger, address: str, target: float) -> None:
    """What the mailbox's history says about `min_confidence`: the embedded classifier's
    cross-validated predictions of the learned examples, against `target` precision."""
    from mailtriage.core.embedded import MIN_CALIBRATION, EmbeddedClassifier
    from mailtriage.core.learn import Learner

    learner = Learner(settings, ledger)
    model = EmbeddedClassifier(settings, learner.embedder, learner.source).model(address)
    if not model.held_out:
        console.print(
            f"fewer than {MIN_CALIBRATION} examples in two categories or more: no threshold "
            "recommendation yet (min_confidence stays as configured)",
            highlight=False,
        )
        return
    console.print(f"embedded classifier on this history: {model.describe()}", highlight=False)
    print_risk_coverage(model.held_out, settings.min_confidence)
    print_recommendations(model.held_out, target, settings.min_confidence)


async def _learn(
    settings: Settings, ledger: Ledger, *, per_folder: int, dry_run: bool
) -> LearnReport:
    from mailtriage.connectors import build_mailboxes
    from mailtriage.core.learn import Learner, learn_mailbox

    (box,) = build_mailboxes(settings, ledger)
    try:
        if not isinstance(box, HistorySource):
            raise ConfigError(f"{box.address}: this provider cannot list its folders")
        learner = Learner(settings, ledger)  # the model loads only if something is added
        return await learn_mailbox(settings, box, learner, per_folder=per_folder, dry_run=dry_run)
    finally:
        await box.aclose()


def report_table(report: LearnReport, *, dry_run: bool = False) -> Table:
    table = Table(title=plain(f"mailtriage learn: {report.mailbox}"))
    for col in (
        "folder / label",
        "category",
        "read",
        "already known",
        "would add" if dry_run else "added",
    ):
        table.add_column(col, justify="left" if col in ("folder / label", "category") else "right")
    for f in report.mapped:
        table.add_row(
            plain(f.location), plain(f.category or ""), str(f.read), str(f.known), str(f.added)
        )
    return table


def register(app: typer.Typer) -> None:
    app.command("learn")(user_errors(learn))
