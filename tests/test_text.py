"""Body cleaning: quoted history, forwards, signatures, HTML, whitespace, truncation.

Most cases come from the public reply-parser fixtures (crisp email-reply-parser, talon) and
the MAIF Melusine French sample, read in place from ../shared/data.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mailtriage.core.text import clean_body, html_to_text, is_forward_subject, truncate

LOREM_KEPT = "Fusce bibendum, quam hendrerit sagittis tempor"
LOREM_QUOTED = "Etiam non sagittis orci"


def _crisp(shared_data: Path, name: str) -> str:
    path = shared_data / "mime-fixtures/crisp-email-reply-parser/test/fixtures" / name
    if not path.is_file():
        pytest.skip(f"fixture {name} not found")
    return path.read_text(encoding="utf-8")


# (fixture, text that must remain, text that must be gone)
CRISP_CASES = [
    # French and English attributions, also wrapped over two or three lines.
    ("email_fr_multiline.txt", [LOREM_KEPT], [LOREM_QUOTED, "a écrit"]),
    ("email_french_2.txt", [LOREM_KEPT], ["a écrit", "> A"]),
    ("email_en_multiline_2.txt", [LOREM_KEPT], [LOREM_QUOTED, "wrote"]),
    ("email_gmail_split_line_from.txt", [LOREM_KEPT], ["wrote:", "Respond"]),
    ("email_thread.txt", ["This is new email reply"], ["wrote:", "Ok. Thanks."]),
    ("email_reply_header.txt", ["On the other hand, it could happen TWICE!"], ["mrmister"]),
    ("email_4.txt", ["Awesome!"], ["Loader seems"]),
    ("email_3.txt", ["Oh thanks."], ["Russell Brown wrote", "riakClient"]),
    ("email_24.txt", [LOREM_KEPT], ["When are you available?"]),
    ("email_zoho.txt", ["clear a Riak bucket"], ["Java sucks"]),
    ("email_unquoted_reply.txt", ["This is my reply."], ["This is my quote."]),
    # Outlook header blocks, French and English, indented, split "From" line.
    ("email_10.txt", [LOREM_KEPT], ["Envoyé le", LOREM_QUOTED]),
    ("email_11.txt", [LOREM_KEPT], ["Objet", LOREM_QUOTED]),
    ("email_18.txt", [LOREM_KEPT], ["Subject: Re:", LOREM_QUOTED]),
    ("email_customer_quote_header_2.txt", ["Thank you very much."], ["somedude"]),
    ("email_customer_quote_header_3.txt", ["merci d'avance"], ["Someone Somewhere", "cdt"]),
    ("email_outlook_split_line_from.txt", [LOREM_KEPT], ["Human Resources", "cool"]),
    ("email_ios_outlook_fr.txt", [LOREM_KEPT], ["Outlook pour iOS", "Hiring", LOREM_QUOTED]),
    ("email_ios_outlook.txt", [LOREM_KEPT], ["Get Outlook", "Chauffeur"]),
    ("email_9.txt", [LOREM_KEPT], ["Message du", "Proin cursus"]),
    # Original-message separators.
    ("email_original_message.txt", [LOREM_KEPT], ["original message", "revisit"]),
    ("email_original_message_2.txt", [LOREM_KEPT], ["Original Message", "revisit"]),
    ("email_french_dash_separator.txt", [LOREM_KEPT], ["Message d'origine", "Abc vous"]),
    ("email_tricky_15_original_message_variations.txt", [LOREM_KEPT], ["original message"]),
    ("email_german_outlook.txt", [LOREM_KEPT], ["Ursprüngliche", "Max Mustermann"]),
    # Other languages the same rules cover.
    ("email_tricky_5_mixed_languages.txt", [LOREM_KEPT], ["Pierre Dubois", "Hans"]),
    ("email_italian.txt", [LOREM_KEPT], ["ha scritto", "Buongiorno"]),
    ("email_russian.txt", [LOREM_KEPT], ["привет"]),
    ("email_23.txt", [LOREM_KEPT], ["Baptiste", "Test"]),
    # Signatures and mobile footers.
    ("correct_sig.txt", ["correct -- signature."], ["rick"]),
    ("sig_no_empty_line.txt", ["no empty line above."], ["rick"]),
    ("email_iphone.txt", ["Here is another email"], ["Sent from my iPhone"]),
    ("email_blackberry.txt", ["Here is another email"], ["BlackBerry"]),
    ("email_multi_word_sent_from_my_mobile_device.txt", ["another email"], ["Verizon"]),
    ("email_tricky_11_double_signature.txt", ["Thanks for your help!"], ["Senior Developer"]),
    ("email_tricky_16_unicode_signatures.txt", ["Thanks for the update!"], ["Product Manager"]),
    ("email_german_3.txt", [LOREM_KEPT], ["Gesendet von Outlook"]),
    # Things that look like markers and are not.
    ("email_tricky_1_on_false_positive.txt", ["On average, this parser works well."], []),
    ("email_tricky_2_url_with_wrote.txt", ['patterns like "wrote:" in them'], []),
    ("email_tricky_3_code_block.txt", ["Notice how the code contains"], []),
    ("email_tricky_4_from_in_body.txt", ["This is the actual message content."], []),
    ("email_tricky_6_regards_in_sentence.txt", ["content that should be visible"], []),
    ("email_tricky_7_multiple_dashes.txt", ["Also these equal signs"], []),
    ("email_tricky_8_sent_from_in_content.txt", ["not Sent from my iPad.", "main server"], []),
    ("email_tricky_13_timestamp_variations.txt", ["not quote headers."], []),
    ("email_sent_from_my_not_signature.txt", ["Sent from my desk, is much easier"], []),
    ("email_not_a_signature_2.txt", ["-- second point", "Thanks!"], []),
    ("email_one_is_not_on.txt", ["Locally (on development)"], ["lastLocation"]),
    # Quote lines: dropped, the author's own lines kept (inline replies).
    ("email_tricky_18_inline_reply.txt", ["option A is great", "Option C is not"], ["> "]),
    ("email_tricky_19_quote_without_header.txt", ["final thoughts"], ["angle brackets"]),
    ("email_tricky_9_nested_quotes.txt", ["I agree with the points below."], ["option A"]),
    # A forward keeps the forwarded message: it is the content.
    (
        "email_tricky_17_forward_header.txt",
        ["See the forwarded message", "Subject: Important update", "forwarded content"],
        ["To: Team"],
    ),
    ("email_msn.txt", [LOREM_KEPT], ["Hiring Engine", "Thanks for your interest"]),
]


@pytest.mark.parametrize(("name", "kept", "gone"), CRISP_CASES, ids=[c[0] for c in CRISP_CASES])
def test_reply_parser_fixtures(
    shared_data: Path, name: str, kept: list[str], gone: list[str]
) -> None:
    text = clean_body(_crisp(shared_data, name), html=False)
    for fragment in kept:
        assert fragment in text
    for fragment in gone:
        assert fragment not in text


TALON_HTML = [
    "gmail.html",
    "hotmail.html",
    "mail_ru.html",
    "ms_outlook_2003.html",
    "ms_outlook_2007.html",
    "ms_outlook_2010.html",
    "thunderbird.html",
    "windows_mail.html",
    "yandex_ru.html",
]


@pytest.mark.parametrize("name", TALON_HTML)
def test_html_replies_keep_only_the_answer(shared_data: Path, name: str) -> None:
    path = shared_data / "mime-fixtures/talon/tests/fixtures/html_replies" / name
    if not path.is_file():
        pytest.skip(f"fixture {name} not found")
    text = clean_body(path.read_text(encoding="utf-8", errors="replace"), html=True)
    assert text.startswith("Hi. I am fine.")
    assert "How are you" not in text
    assert "<" not in text


def _melusine_rows(shared_data: Path) -> list[dict[str, str]]:
    path = shared_data / "melusine-fr" / "emails.v2019.csv"
    if not path.is_file():
        pytest.skip("melusine-fr sample not found")
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def test_melusine_french_mail(shared_data: Path) -> None:
    """Every sample: no attribution, no iPhone footer; forwards keep sender, subject, body."""
    rows = _melusine_rows(shared_data)
    assert len(rows) == 40
    forwards = 0
    for row in rows:
        text = clean_body(row["body"], html=False, subject=row["header"])
        assert text, row["header"]
        assert "a écrit :" not in text, row["header"]
        assert "Envoyé de mon iPhone" not in text, row["header"]
        assert "\n\n\n" not in text and "  " not in text
        if "Transféré par" in row["body"]:
            forwards += 1
            header_end = text.index("Objet :")
            assert "De :" in text[:header_end], row["header"]
            assert len(text[header_end:].split("\n", 1)[1].strip()) > 20, row["header"]
            assert "A :" not in text and "Date :" not in text and "Cc :" not in text
    assert forwards >= 8


def test_melusine_reply_keeps_only_the_new_part(shared_data: Path) -> None:
    row = next(r for r in _melusine_rows(shared_data) if r["header"].startswith("Re: Envoi"))
    text = clean_body(row["body"], html=False, subject=row["header"])
    assert text.startswith("Bonjours,")
    assert text.endswith("Merci bonne journée")


def test_melusine_apple_forward_keeps_the_forwarded_request(shared_data: Path) -> None:
    row = next(r for r in _melusine_rows(shared_data) if "Début du message" in r["body"])
    text = clean_body(row["body"], html=False, subject=row["header"])
    assert "Objet: Demande" in text and "preuve\nde règlement" in text
    assert "Destinataire" not in text


# --- synthetic cases for each rule ------------------------------------------------------------

OUTLOOK_FR = """Bonjour, voir ci-dessous.

________________________________
De : Marie Martin <marie@client.fr>
Envoyé : lundi 3 juin 2024 10:12
À : contact@societe.fr
Objet : Commande 4512 non livrée

Ma commande n'est toujours pas arrivée.
"""


def test_outlook_block_is_history_in_a_reply() -> None:
    assert clean_body(OUTLOOK_FR, html=False, subject="RE: Commande 4512") == (
        "Bonjour, voir ci-dessous."
    )


def test_outlook_block_is_content_in_a_forward() -> None:
    text = clean_body(OUTLOOK_FR, html=False, subject="TR : Commande 4512 non livrée")
    assert text == (
        "Bonjour, voir ci-dessous.\n\n"
        "De : Marie Martin <marie@client.fr>\n"
        "Objet : Commande 4512 non livrée\n\n"
        "Ma commande n'est toujours pas arrivée."
    )


def test_outlook_block_with_nothing_above_is_a_forward() -> None:
    text = clean_body(OUTLOOK_FR.split("\n", 2)[2], html=False, subject="Commande 4512")
    assert text.startswith("De : Marie Martin <marie@client.fr>\nObjet : Commande 4512")
    assert text.endswith("Ma commande n'est toujours pas arrivée.")


def test_thousands_of_nested_forwards_stay_bounded() -> None:
    body = "Début.\n" + "---------- Forwarded message ---------\nFrom: a@b.fr\n\nTexte\n" * 3000
    text = clean_body(body, html=False)
    assert text.startswith("Début.\n---------- Forwarded message ---------\nFrom: a@b.fr\n\nTexte")
    assert clean_body("On Mon, a@b.fr wrote:\n" * 3000 + "fin", html=False).endswith("fin")


def test_forward_keeps_content_but_cuts_the_history_beneath_it() -> None:
    body = (
        "Pour toi.\n\n---------- Forwarded message ---------\nFrom: Client <c@x.fr>\n"
        "Date: Mon, 3 Jun 2024\nSubject: Devis\nTo: <contact@s.fr>\n\n"
        "Pouvez-vous m'envoyer un devis ?\n\n"
        "Le lun. 3 juin 2024 à 09:00, Contact <contact@s.fr> a écrit :\n> Bonjour\n"
    )
    text = clean_body(body, html=False)
    assert "Pouvez-vous m'envoyer un devis ?" in text
    assert "Subject: Devis" in text
    assert "a écrit" not in text and "Bonjour" not in text


@pytest.mark.parametrize(
    "separator",
    ["-----Original Message-----", "-----Message d'origine-----", "----- Message d'origine -----"],
)
def test_original_message_separators(separator: str) -> None:
    body = f"Merci pour votre retour.\n\n{separator}\nDe : x@y.fr\nObjet : devis\n\nAncien texte"
    assert clean_body(body, html=False) == "Merci pour votre retour."


def test_french_attribution_wrapped_by_the_client() -> None:
    body = (
        "Je confirme.\n\nLe mar. 4 juin 2024 à 18:02, Service Client <service@societe.fr>\n"
        "a écrit :\n\n> Pouvez-vous confirmer ?\n"
    )
    assert clean_body(body, html=False) == "Je confirme."


@pytest.mark.parametrize(
    "footer",
    [
        "Envoyé de mon iPhone",
        "Sent from my iPhone",
        "Envoyé depuis Outlook",
        "Envoyé depuis mon appareil Galaxy",
        "Get Outlook for Android",
        "Sent from Mail for Windows",
        "Envoyé de Yahoo Mail pour Android",
    ],
)
def test_mobile_footers_are_dropped(footer: str) -> None:
    assert clean_body(f"Voici ma facture.\n\n{footer}", html=False) == "Voici ma facture."


def test_signature_delimiter_cuts_to_the_end() -> None:
    body = "Bonjour,\nmerci.\n-- \nJean Dupont\nDirecteur\n06 00 00 00 00"
    assert clean_body(body, html=False) == "Bonjour,\nmerci."


def test_whitespace_is_collapsed() -> None:
    body = "  Bonjour\u00a0\u00a0 Madame,\t\r\n\r\n\r\n\r\n  Merci\u200b !  \r\n\r\n"
    assert clean_body(body, html=False) == "Bonjour Madame,\n\nMerci !"


def test_all_quoted_body_is_unquoted_rather_than_emptied() -> None:
    assert clean_body("> Bonjour\n> Merci", html=False) == "Bonjour\nMerci"


def test_html_to_text_blocks_entities_and_quotes() -> None:
    html = (
        "<html><head><style>p{color:red}</style><title>x</title></head><body>"
        "<p>Bonjour&nbsp;Madame,</p><div>Prix&nbsp;: 10&euro; &amp; plus</div>"
        "<script>alert(1)</script><ul><li>un</li><li>deux</li></ul>"
        "<blockquote>ancien<br>message</blockquote><!-- commentaire --></body></html>"
    )
    text = html_to_text(html)
    assert "color" not in text and "alert" not in text and "commentaire" not in text
    assert "- un" in text and "- deux" in text
    assert "> ancien" in text and "> message" in text
    assert clean_body(html, html=True) == "Bonjour Madame,\nPrix : 10€ & plus\n- un\n- deux"
    assert html_to_text("<b>Bonjour</b> <i>Madame</i>") == "Bonjour Madame"


def test_html_gmail_quote_is_removed() -> None:
    html = (
        '<div dir="ltr">Oui, c\'est bon.</div><br><div class="gmail_quote">'
        '<div dir="ltr" class="gmail_attr">Le lun. 3 juin 2024 à 10:00, Paul &lt;p@x.fr&gt; '
        'a écrit&nbsp;:<br></div><blockquote class="gmail_quote">Ça vous va ?</blockquote></div>'
    )
    assert clean_body(html, html=True) == "Oui, c'est bon."


@pytest.mark.parametrize(
    ("subject", "forward"),
    [("TR : devis", True), ("Fwd: order", True), ("FW: x", True), ("WG: y", True),
     ("[ext] Fwd: z", True), ("RE: devis", False), ("Tres urgent", False), ("", False)],
)  # fmt: skip
def test_forward_subjects(subject: str, forward: bool) -> None:
    assert is_forward_subject(subject) is forward


def test_truncate_keeps_subject_and_opening() -> None:
    text = "Bonjour, " + "je voudrais un devis pour des fenêtres. " * 50
    out = truncate("Demande de devis", text, 120)
    assert len(out) <= 120
    assert out.startswith("Demande de devis\n\nBonjour, je voudrais")
    assert out.endswith("…") and " fenêtres. …" not in out


def test_truncate_short_inputs_unchanged_and_long_subject_bounded() -> None:
    assert truncate("Sujet", "Court.", 100) == "Sujet\n\nCourt."
    assert truncate("", "Court.", 100) == "Court."
    assert truncate("Sujet", "", 100) == "Sujet"
    assert len(truncate("S" * 500, "corps du message", 100)) <= 100
    assert "corps" in truncate("S" * 500, "corps du message", 100)
    assert truncate("Sujet", "texte", 0) == ""
