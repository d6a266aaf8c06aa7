"""Learning from history and corrections, end to end: emulators ⇄ real SDKs ⇄ connectors ⇄
`learn` / Pipeline ⇄ ledger ⇄ embedded classifier (the real model, shared per session)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailtriage.cli import learn as learn_cli
from mailtriage.cli import records
from mailtriage.connectors.gmail import GmailMailbox, build_gmail_mailboxes
from mailtriage.connectors.graph import GraphMailbox
from mailtriage.core import learn as core_learn
from mailtriage.core.classifiers import build_classifier
from mailtriage.core.config import Settings
from mailtriage.core.embedded import EmbeddedClassifier
from mailtriage.core.examples import SOURCE_CORRECTION, SOURCE_HISTORY
from mailtriage.core.learn import EXCERPT_BODY_CHARS, Learner, learn_mailbox, map_folders
from mailtriage.core.ledger import Ledger
from mailtriage.core.message import Message
from mailtriage.core.pipeline import Pipeline, RetryPolicy
from mailtriage.core.ports import HistorySource, Mailbox
from mailtriage.core.runtime import sync_all
from mailtriage.sandbox.gmail import GmailEmulator
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.graph.config import sandbox_settings
from tests.embedders import real_embedder
from tests.gmail_fixtures import rfc822
from tests.graph_fixtures import no_backoff
from tests.helpers import example_settings

__all__ = ["no_backoff"]

pytestmark = pytest.mark.usefixtures("no_backoff")

BOX = "contact@atelier-dupont.fr"
GBOX = "info@atelier-dupont.com"
NO_WAIT = RetryPolicy(base_delay_s=0, max_delay_s=0)

APPLICATIONS = [
    (
        "Candidature spontanée - soudeur",
        "Madame, Monsieur, je vous adresse ma candidature "
        "pour un poste de soudeur. Mon CV est en pièce jointe.",
    ),
    (
        "Job application - warehouse",
        "Dear hiring manager, please find my resume attached for the warehouse operator position.",
    ),
    (
        "Candidature stage comptabilité",
        "Bonjour, étudiante en BTS, je recherche un stage de "
        "deux mois. Vous trouverez mon CV et ma lettre de motivation.",
    ),
]
INVOICES = [
    (
        "Facture F-2024-118",
        "Veuillez trouver ci-joint notre facture F-2024-118 pour la "
        "livraison de tôles, payable à 30 jours.",
    ),
    (
        "Invoice INV-8812 overdue",
        "Our invoice INV-8812 for the steel delivery is now 15 days "
        "overdue. Please arrange payment.",
    ),
]
# A request for quotation that staff route to HR (the office chairs are for new hires):
# the classifier says devis; after the correction, the next one like it goes to rh.
CHAIRS = (
    "Demande de devis n° {n}",
    "Bonjour, pourriez-vous nous faire un devis pour {q} chaises de bureau ergonomiques "
    "livrées à notre site de Lyon avant la fin du mois ? Merci, Paul Girard",
)


def chairs(n: int, q: int) -> tuple[str, str]:
    return CHAIRS[0].format(n=n), CHAIRS[1].format(q=q)


@pytest.fixture(scope="session")
def embedder() -> Any:
    return real_embedder()


@pytest.fixture
def emu() -> Iterator[GraphEmulator]:
    with GraphEmulator() as e:
        e.add_mailbox(BOX)
        yield e


@pytest.fixture
def gm(monkeypatch: pytest.MonkeyPatch) -> Iterator[GmailEmulator]:
    with GmailEmulator(users=[GBOX]) as emulator:
        monkeypatch.setenv("MT_TEST_GMAIL_KEY", emulator.service_account_json())
        yield emulator


def graph_settings(emu: GraphEmulator, db: Path, **mailbox: Any) -> Settings:
    return sandbox_settings(
        emu.base_url,
        [BOX],
        mailbox=mailbox,
        classifier="embedded",
        state={"url": f"sqlite:///{db}"},
    )


def gmail_settings(gm: GmailEmulator, db: Path, **mailbox: Any) -> Settings:
    gmail = {
        "service_account_env": "MT_TEST_GMAIL_KEY",
        "service_account_file": None,
        "api_endpoint": gm.url,
        "token_uri": gm.token_uri,
        "certs_url": gm.certs_url,
        "retry_base_delay_s": 0,
    }
    return example_settings(
        gmail=gmail,
        mailbox=[{"provider": "gmail", "address": GBOX, "backfill_days": 0, **mailbox}],
        classifier="embedded",
        state={"url": f"sqlite:///{db}"},
    )


def graph_box(settings: Settings, ledger: Ledger) -> GraphMailbox:
    return GraphMailbox.from_settings(settings, settings.mailboxes[0], ledger)


def gmail_box(settings: Settings, ledger: Ledger) -> GmailMailbox:
    (box,) = build_gmail_mailboxes(settings, ledger)
    return box


def gmail_label(gm: GmailEmulator, name: str) -> str:
    return str(gm.state.label_create(GBOX, {"name": name})["id"])


def gmail_deliver(gm: GmailEmulator, subject: str, body: str, *labels: str) -> str:
    return gm.state.deliver(GBOX, rfc822(subject, body, to=GBOX), labels=labels or ("INBOX",))


# -- mapping ------------------------------------------------------------------------------


def test_folder_names_map_to_categories_without_guessing(tmp_path: Path) -> None:
    settings = example_settings(
        mailbox=[
            {"provider": "gmail", "address": GBOX, "folder_map": {"Compta/2024": "fournisseurs"}}
        ]
    )
    mapping = map_folders(
        settings,
        GBOX,
        [
            "RH",
            "Triage/RH",
            "rh",
            "triage/publicite",
            "Publicité",
            "Fournisseurs",
            "Factures",
            "Compta/2024",
            "À vérifier",
            "Divers/Clients",
            "Triage",
        ],
    )
    assert mapping == {
        "RH": "rh",
        "Triage/RH": "rh",
        "rh": "rh",
        "triage/publicite": "publicite",  # accents and case folded
        "Publicité": "publicite",
        "Fournisseurs": "fournisseurs",
        "Factures": None,  # not a name, key or label of a category: no guess
        "Compta/2024": "fournisseurs",  # folder_map
        "À vérifier": None,  # the review category teaches nothing
        "Divers/Clients": "clients",  # last segment
        "Triage": None,
    }


# -- learn: Graph ---------------------------------------------------------------------------


async def test_learn_from_graph_folders(emu: GraphEmulator, tmp_path: Path, embedder: Any) -> None:
    now = datetime.now(UTC)
    stored: dict[str, list[str]] = {"rh": [], "fournisseurs": []}
    for i, (subject, body) in enumerate(APPLICATIONS):
        msg = emu.deliver(
            BOX,
            subject=subject,
            body=body,
            sender="a@example.org",
            folder="Inbox/Triage/RH",
            received=now - timedelta(days=10 - i),
        )
        stored["rh"].append(msg.immutable_id)
    for subject, body in INVOICES:
        msg = emu.deliver(
            BOX, subject=subject, body=body, sender="b@example.org", folder="Inbox/Fournisseurs"
        )
        stored["fournisseurs"].append(msg.immutable_id)
    emu.deliver(
        BOX, subject="Facture 77", body="Facture jointe.", sender="c@example.org", folder="Factures"
    )  # top level, a name no category has
    emu.deliver(BOX, subject="Bonjour", body="Hors sujet.", sender="d@example.org")  # Inbox
    settings = graph_settings(emu, tmp_path / "state.db")
    ledger = Ledger(settings.state.url)
    box = graph_box(settings, ledger)
    learner = Learner(settings, ledger, embedder)
    before = emu.snapshot()
    try:
        assert isinstance(box, HistorySource)
        assert {"Triage", "Triage/RH", "Fournisseurs", "Factures"} <= set(await box.folders())
        report = await learn_mailbox(settings, box, learner, per_folder=2)
        again = await learn_mailbox(settings, box, learner, per_folder=2)
    finally:
        await box.aclose()
    assert emu.snapshot() == before  # the mailbox was only read
    rows = {f.location: (f.category, f.read, f.added) for f in report.mapped}
    assert rows == {"Triage/RH": ("rh", 2, 2), "Fournisseurs": ("fournisseurs", 2, 2)}
    assert "Factures" in report.unmapped and "Triage" in report.unmapped
    examples = ledger.examples(BOX)
    assert sorted((e.category, e.provider_id) for e in examples) == sorted(
        [("rh", i) for i in stored["rh"][1:]]  # the two most recent
        + [("fournisseurs", i) for i in stored["fournisseurs"]]
    )
    for e in examples:
        assert e.source == SOURCE_HISTORY
        assert e.text is None  # store_text is off
        assert len(json.loads(e.embedding or "[]")) == 512
    job = next(e for e in examples if e.provider_id == stored["rh"][1])
    assert job.excerpt.startswith("Job application - warehouse Dear hiring manager")
    assert len(job.excerpt) <= len("Job application - warehouse") + 1 + EXCERPT_BODY_CHARS
    # A second run adds nothing: messages already learned are recognised by id.
    assert again.added == 0 and sum(f.known for f in again.folders) == 4
    assert len(ledger.examples(BOX)) == 4


async def test_folder_map_maps_a_folder_by_configuration(
    emu: GraphEmulator, tmp_path: Path, embedder: Any
) -> None:
    for subject, body in INVOICES:
        emu.deliver(
            BOX, subject=subject, body=body, sender="b@example.org", folder="Archives/Factures"
        )
    settings = graph_settings(
        emu, tmp_path / "state.db", folder_map={"Archives/Factures": "fournisseurs"}
    )
    ledger = Ledger(settings.state.url)
    box = graph_box(settings, ledger)
    try:
        report = await learn_mailbox(settings, box, Learner(settings, ledger, embedder))
    finally:
        await box.aclose()
    assert [(f.location, f.category, f.added) for f in report.mapped] == [
        ("Archives/Factures", "fournisseurs", 2)
    ]


# -- learn: Gmail, through the command --------------------------------------------------------


def test_learn_command_on_gmail_labels(
    gm: GmailEmulator,
    tmp_path: Path,
    embedder: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rh, devis, other = (
        gmail_label(gm, "RH"),
        gmail_label(gm, "Triage/Devis"),
        gmail_label(gm, "Factures"),
    )
    ids = [gmail_deliver(gm, s, b, rh) for s, b in APPLICATIONS]
    ids.append(gmail_deliver(gm, *chairs(1, 10), devis, "INBOX"))
    gmail_deliver(gm, *INVOICES[0], other)
    gmail_deliver(gm, "Bonjour", "Rien à voir.")  # Inbox only
    settings = gmail_settings(gm, tmp_path / "state.db")
    monkeypatch.setattr(learn_cli, "load", lambda path: settings)
    monkeypatch.setattr(core_learn, "get_embedder", lambda s: embedder)

    learn_cli.learn(mailbox=GBOX, config=Path("unused.toml"), per_folder=50, dry_run=True)
    dry = capsys.readouterr().out
    assert "would add 4 examples" in dry
    assert Ledger(settings.state.url).examples(GBOX) == []

    learn_cli.learn(mailbox=GBOX, config=Path("unused.toml"), per_folder=50, dry_run=False)
    out = capsys.readouterr().out
    assert "added 4 examples" in out and "the mailbox was not changed" in out
    assert "Factures" in out.split("not mapped")[1]
    examples = Ledger(settings.state.url).examples(GBOX)
    assert sorted((e.provider_id, e.category) for e in examples) == sorted(
        [(i, "rh") for i in ids[:3]] + [(ids[3], "devis")]
    )
    assert gm.state.label_names(GBOX, ids[3]) == {"Triage/Devis", "INBOX"}  # untouched


# -- corrections -------------------------------------------------------------------------------


async def _sync(
    settings: Settings, ledger: Ledger, classifier: Any, learner: Learner, boxes: list[Mailbox]
) -> dict[str, Any]:
    pipeline = Pipeline(
        settings, ledger, classifier, retry=NO_WAIT, on_correction=learner.on_correction
    )
    return dict(await sync_all(pipeline, boxes))


def _stats(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> str:
    monkeypatch.setattr(records, "load", lambda path: settings)
    records.stats(config=Path("unused.toml"), since="1d", mailbox=None)
    return str(capsys.readouterr().out)


def _message(mailbox: str, subject: str, body: str) -> Message:
    return Message(mailbox=mailbox, provider_id="probe", subject=subject, text=body)


async def test_graph_staff_move_is_a_correction_that_changes_the_next_decision(
    emu: GraphEmulator,
    tmp_path: Path,
    embedder: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = graph_settings(emu, tmp_path / "state.db")
    for c in settings.categories:  # the folders exist (created at installation)
        if c.actions.move_to:
            emu.ensure_folder(BOX, f"Inbox/{c.actions.move_to}")
    ledger = Ledger(settings.state.url)
    learner = Learner(settings, ledger, embedder)
    classifier = build_classifier(settings, "embedded", ledger=ledger, learner=learner)
    assert isinstance(classifier, EmbeddedClassifier) and classifier.examples is learner.source
    box = graph_box(settings, ledger)
    try:
        await _sync(settings, ledger, classifier, learner, [box])  # cursors from now
        first = emu.deliver(
            BOX,
            subject=chairs(1042, 40)[0],
            body=chairs(1042, 40)[1],
            sender="paul.girard@example.org",
        )
        report = (await _sync(settings, ledger, classifier, learner, [box]))[BOX]
        row = ledger.find(BOX, first.immutable_id)
        assert row is not None and row.category == "devis", report.results
        assert emu.where(BOX, first.immutable_id) == "Inbox/Triage/Devis"
        probe = _message(BOX, *chairs(1043, 45))
        assert (await classifier.classify(probe)).category == "devis"

        emu.move(BOX, first.immutable_id, "Inbox/Triage/RH")  # staff: "this is for HR"
        report = (await _sync(settings, ledger, classifier, learner, [box]))[BOX]
        assert report.corrections == 1
        assert ledger.correction_count() == 1
        (learned,) = ledger.examples(BOX)
        assert (learned.category, learned.source, learned.provider_id) == (
            "rh",
            SOURCE_CORRECTION,
            first.immutable_id,
        )
        assert (await classifier.classify(probe)).category == "rh"

        second = emu.deliver(
            BOX,
            subject=chairs(1043, 45)[0],
            body=chairs(1043, 45)[1],
            sender="paul.girard@example.org",
        )
        await _sync(settings, ledger, classifier, learner, [box])
        row = ledger.find(BOX, second.immutable_id)
        assert row is not None and row.category == "rh"
        assert emu.where(BOX, second.immutable_id) == "Inbox/Triage/RH"
        # Our own move into Triage/RH is seen at the next sync and is no correction.
        report = (await _sync(settings, ledger, classifier, learner, [box]))[BOX]
        assert report.corrections == 0 and ledger.correction_count() == 1
    finally:
        await box.aclose()
    assert "corrections 1 (50.0%)" in _stats(settings, monkeypatch, capsys)


async def test_gmail_label_change_is_a_correction_that_changes_the_next_decision(
    gm: GmailEmulator,
    tmp_path: Path,
    embedder: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = gmail_settings(gm, tmp_path / "state.db")
    ledger = Ledger(settings.state.url)
    learner = Learner(settings, ledger, embedder)
    classifier = build_classifier(settings, "embedded", ledger=ledger, learner=learner)

    async def sync() -> Any:
        box = gmail_box(settings, ledger)
        try:
            return (await _sync(settings, ledger, classifier, learner, [box]))[GBOX]
        finally:
            await box.aclose()

    await sync()  # cursor from now
    first = gmail_deliver(gm, *chairs(1042, 40))
    await sync()
    row = ledger.find(GBOX, first)
    assert row is not None and row.category == "devis"
    assert {"Devis", "Triage/Devis"} <= gm.state.label_names(GBOX, first)
    probe = _message(GBOX, *chairs(1043, 45))
    assert (await classifier.classify(probe)).category == "devis"

    # Staff relabel it in Gmail: RH and Triage/RH added, the Devis labels removed.
    ids = {lab["name"]: lab["id"] for lab in gm.state.labels_list(GBOX)["labels"]}
    rh = ids.get("RH") or gmail_label(gm, "RH")
    triage_rh = ids.get("Triage/RH") or gmail_label(gm, "Triage/RH")
    gm.state.modify(GBOX, first, [rh, triage_rh], [ids["Devis"], ids["Triage/Devis"]])
    report = await sync()
    # Our own labels (Devis, Triage/Devis) came back through history too: no correction;
    # the staff's two RH labels are one correction.
    assert report.corrections == 1 and ledger.correction_count() == 1
    (learned,) = ledger.examples(GBOX)
    assert (learned.category, learned.source, learned.provider_id) == (
        "rh",
        SOURCE_CORRECTION,
        first,
    )
    assert (await classifier.classify(probe)).category == "rh"

    second = gmail_deliver(gm, *chairs(1043, 45))
    await sync()
    row = ledger.find(GBOX, second)
    assert row is not None and row.category == "rh"
    assert "RH" in gm.state.label_names(GBOX, second)
    report = await sync()  # our RH labels on the second message: no correction
    assert report.corrections == 0 and ledger.correction_count() == 1
    assert "corrections 1 (50.0%)" in _stats(settings, monkeypatch, capsys)


# -- wiring: the LLM's few-shot examples come from the ledger ------------------------------


async def test_llm_few_shot_examples_are_the_nearest_learned_ones(
    tmp_path: Path, embedder: Any
) -> None:
    from mailtriage.core.classifiers import build_learner
    from mailtriage.sandbox.llm import DEFAULT_MODEL, SandboxLLM

    with SandboxLLM() as llm:
        settings = example_settings(
            llm={
                "base_url": llm.base_url,
                "model": DEFAULT_MODEL,
                "few_shot": 1,
                "api_key_env": None,
            },
            classifier="llm",
            state={"url": f"sqlite:///{tmp_path / 'state.db'}"},
        )
        ledger = Ledger(settings.state.url)
        learner = build_learner(settings, ledger)
        assert learner is not None
        learner = Learner(settings, ledger, embedder)  # the session's model
        learner.add([_message(BOX, *s) for s in APPLICATIONS], "rh", SOURCE_HISTORY)
        learner.add([_message(BOX, *s) for s in INVOICES], "fournisseurs", SOURCE_HISTORY)
        classifier = build_classifier(settings, ledger=ledger, learner=learner)
        try:
            await classifier.classify(_message(BOX, "Facture F-2024-131", "Notre facture jointe."))
        finally:
            await classifier.aclose()  # type: ignore[attr-defined]
        messages = llm.bodies()[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "Facture F-2024-118" in messages[1]["content"]  # the nearest: an invoice
    assert '"category": "fournisseurs"' in messages[2]["content"]
    # An LLM without few-shot reads no examples: no model, no learner.
    no_shots = settings.model_copy(update={"llm": settings.llm.model_copy(update={"few_shot": 0})})
    assert build_learner(no_shots, ledger) is None


def test_examples_added_by_another_process_are_noticed(tmp_path: Path, embedder: Any) -> None:
    settings = example_settings(state={"url": f"sqlite:///{tmp_path / 'state.db'}"})
    service = Learner(settings, Ledger(settings.state.url), embedder)
    assert service.source.examples_for(BOX) == []
    other = Learner(settings, Ledger(settings.state.url), embedder)  # `mailtriage learn`
    other.add([_message(BOX, *INVOICES[0])], "fournisseurs", SOURCE_HISTORY)
    assert service.source.examples_for(BOX) == []  # cached within the refresh period
    service.source.refresh_s = 0
    assert [e.category for e in service.source.examples_for(BOX)] == ["fournisseurs"]


async def test_graph_moves_read_before_a_crash_are_read_again(
    emu: GraphEmulator, tmp_path: Path, embedder: Any
) -> None:
    settings = graph_settings(emu, tmp_path / "state.db")
    for c in settings.categories:
        if c.actions.move_to:
            emu.ensure_folder(BOX, f"Inbox/{c.actions.move_to}")
    ledger = Ledger(settings.state.url)
    learner = Learner(settings, ledger, embedder)
    classifier = build_classifier(settings, "embedded", ledger=ledger, learner=learner)
    box = graph_box(settings, ledger)
    await _sync(settings, ledger, classifier, learner, [box])
    first = emu.deliver(BOX, subject=chairs(7, 4)[0], body=chairs(7, 4)[1], sender="p@example.org")
    await _sync(settings, ledger, classifier, learner, [box])
    emu.move(BOX, first.immutable_id, "Inbox/Triage/Clients")
    page = await box.changes(ledger.get_cursor(BOX))  # read, then the process dies
    assert [(c.provider_id, c.location) for c in page.moves] == [
        (first.immutable_id, "Triage/Clients")
    ]
    await box.aclose()
    box = graph_box(settings, ledger)  # restarted
    try:
        report = (await _sync(settings, ledger, classifier, learner, [box]))[BOX]
    finally:
        await box.aclose()
    assert report.corrections == 1 and ledger.correction_count() == 1
