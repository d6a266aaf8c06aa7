"""Raw RFC 822 bytes to Message: headers, charsets, MIME structure, attachments, errors."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from mailtriage.core.errors import MessageParseError
from mailtriage.core.extract import (
    MAX_HEADER_CHARS,
    MAX_SUBJECT_CHARS,
    UNEXPECTED,
    decode_header_value,
    decode_text,
    parse_rfc822,
)
from mailtriage.core.message import Address, Attachment, Message

FLANKER = "mime-fixtures/flanker/tests/fixtures/messages/"
MIMEKIT = "mime-fixtures/mimekit/"


def mail(headers: str, body: str | bytes = "", *, eol: str = "\r\n") -> bytes:
    """A message from a header block and a body; `headers` lines are joined with CRLF."""
    head = eol.join(line.strip() for line in headers.strip().splitlines() if line.strip())
    head = head.replace(f"{eol}|", f"{eol} ")  # "|" starts a folded continuation line
    data = body.encode("utf-8") if isinstance(body, str) else body
    return head.encode("utf-8") + (eol + eol).encode() + data


def parse(raw: bytes) -> Message:
    return parse_rfc822(raw, mailbox="contact@societe.fr", provider_id="msg-1")


def fixture(shared_data: Path, relative: str) -> bytes:
    path = shared_data / relative
    if not path.is_file():
        pytest.skip(f"{relative} not found")
    return path.read_bytes()


# --- headers -----------------------------------------------------------------------------------


def test_every_field_is_filled() -> None:
    raw = mail(
        """
        Return-Path: <bounce@client.fr>
        Message-ID: <abc.123@client.fr>
        Date: Mon, 3 Jun 2024 10:12:00 +0200
        From: =?utf-8?q?Marie_Ch=C3=A2telet?= <marie@client.fr>
        Reply-To: Service <service@client.fr>
        To: Contact <contact@societe.fr>, "Dupont, Jean" <jean@societe.fr>
        Cc: compta@societe.fr
        Subject: =?utf-8?b?RGVtYW5kZSBkZSBkZXZpcyDigJMgZmVuw6p0cmVz?=
        List-Unsubscribe: <mailto:unsub@client.fr>
        X-Spam-Flag: NO
        MIME-Version: 1.0
        Content-Type: text/plain; charset=utf-8
        Content-Transfer-Encoding: 8bit
        """,
        "Bonjour,\n\nJe voudrais un devis pour 4 fenêtres.\n\nEnvoyé de mon iPhone\n",
    )
    message = parse(raw)
    assert message.mailbox == "contact@societe.fr" and message.provider_id == "msg-1"
    assert message.subject == "Demande de devis – fenêtres"
    assert message.sender == Address("marie@client.fr", "Marie Châtelet")
    assert message.reply_to == [Address("service@client.fr", "Service")]
    assert message.to == [
        Address("contact@societe.fr", "Contact"),
        Address("jean@societe.fr", "Dupont, Jean"),
    ]
    assert message.cc == [Address("compta@societe.fr")]
    assert message.date == datetime(2024, 6, 3, 10, 12, tzinfo=timezone(timedelta(hours=2)))
    assert message.internet_message_id == "<abc.123@client.fr>"
    assert message.header("List-Unsubscribe") == "<mailto:unsub@client.fr>"
    assert message.headers["return-path"] == "<bounce@client.fr>"
    assert message.headers["content-type"] == "text/plain; charset=utf-8"
    assert "message-id" not in message.headers and "subject" not in message.headers
    assert message.text == "Bonjour,\n\nJe voudrais un devis pour 4 fenêtres."
    assert message.attachments == []
    assert message.size == len(raw)


def test_encoded_words_split_inside_a_character_are_joined() -> None:
    # "é" (C3 A9) split across two base64 words, as some mailers fold long subjects.
    subject = "=?UTF-8?B?Q2Fmw6k=?= =?UTF-8?B?w6k=?= =?UTF-8?B?w6k=?=_x"
    assert decode_header_value(subject) == "Cafééé_x"
    split = "=?utf-8?b?" + base64.b64encode(b"caf\xc3").decode() + "?="
    split += " =?utf-8?b?" + base64.b64encode(b"\xa9 ok").decode() + "?="
    assert decode_header_value(split) == "café ok"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("=?iso-8859-1?q?R=E9ponse?= urgente", "Réponse urgente"),
        ("=?windows-1252?Q?Facture_n=B0_42?=", "Facture n° 42"),
        ("=?unknown-8bit?q?Caf=E9?=", "Café"),  # bogus charset: cp1252 fallback
        ("=?x-unknown?B?w6l0w6k=?=", "été"),  # bogus charset: UTF-8 fallback
        ("=?utf-8?q?broken", "=?utf-8?q?broken"),  # not an encoded word: left alone
        ("=?utf-8?B?!!!?=", "!!!"),  # undecodable base64 kept as text
        ("line\r\n folded", "line folded"),
        ("=?gb2312?B?1tDOxA==?=", "中文"),
        ("=?utf-8*fr?q?d=C3=A9j=C3=A0?=", "déjà"),  # RFC 2231 language suffix
    ],
)
def test_decode_header_value(raw: str, expected: str) -> None:
    assert decode_header_value(raw) == expected


def test_raw_8bit_headers_are_decoded() -> None:
    raw = "Subject: Réunion à 10h\r\nFrom: José <jose@x.es>\r\n\r\nTexte".encode()
    message = parse(raw)
    assert message.subject == "Réunion à 10h"
    assert message.sender == Address("jose@x.es", "José")
    latin = "Subject: Réunion\r\nFrom: a@b.fr\r\n\r\nx".encode("latin-1")
    assert parse(latin).subject == "Réunion"


def test_raw_8bit_header_uses_the_body_charset() -> None:
    head = "Subject: [광고] 자격증\r\nFrom: a@b.kr\r\n".encode("euc-kr")
    head += b"Content-Type: text/plain; charset=ks_c_5601-1987\r\n\r\n"
    message = parse(head + "안녕하세요".encode("euc-kr"))
    assert message.subject == "[광고] 자격증"
    assert message.text == "안녕하세요"


def test_huge_headers_are_capped() -> None:
    raw = mail(
        f"""
        From: a@b.fr
        Subject: {"Très long sujet " * 400}
        References: {" ".join(f"<{i}@x.fr>" for i in range(3000))}
        """,
        "Corps",
    )
    message = parse(raw)
    assert len(message.subject) == MAX_SUBJECT_CHARS
    assert len(message.headers["references"]) == MAX_HEADER_CHARS
    assert message.text == "Corps"


def test_dates() -> None:
    naive = parse(mail("From: a@b.fr\nDate: Mon, 3 Jun 2024 10:12:00 -0000", "x"))
    assert naive.date == datetime(2024, 6, 3, 10, 12, tzinfo=UTC)
    assert parse(mail("From: a@b.fr\nDate: le 3 juin", "x")).date is None
    assert parse(mail("From: a@b.fr", "x")).date is None


def test_malformed_address_list_keeps_the_addresses() -> None:
    message = parse(mail('From: "broken <a@b.fr>\nTo: ;;, <<x@y.fr>>, z@w.fr', "x"))
    assert message.sender is not None and message.sender.email == "a@b.fr"
    assert {a.email for a in message.to} >= {"z@w.fr"}


def test_header_without_folding_whitespace_is_repaired(shared_data: Path) -> None:
    """Exchange sometimes loses the indentation of a continuation line (MimeKit issue 358)."""
    message = parse(fixture(shared_data, MIMEKIT + "messages/issue358.txt"))
    assert message.text == "Test headers"
    assert message.header("content-type").startswith("multipart/alternative")


# --- charsets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "charset", ["default", "DEFAULT_CHARSET", "unknown-8bit", "x-unknown", "no-such-charset"]
)
def test_bogus_charsets_fall_back(charset: str) -> None:
    body = "Votre facture de décembre est disponible.".encode("cp1252")
    raw = mail(f"From: a@b.fr\nContent-Type: text/plain; charset={charset}", body)
    assert parse(raw).text == "Votre facture de décembre est disponible."


def test_chinesebig5_alias() -> None:
    raw = mail(
        "From: a@b.tw\nContent-Type: text/plain; charset=chinesebig5", "中文測試".encode("big5")
    )
    assert parse(raw).text == "中文測試"


def test_decode_text_order() -> None:
    assert decode_text("déjà".encode(), "iso-8859-1") == "déjà"  # UTF-8 labelled Latin-1
    assert decode_text("déjà".encode("latin-1"), "utf-8") == "déjà"  # Latin-1 labelled UTF-8
    assert decode_text("Привет".encode("koi8-r"), "koi8-r") == "Привет"
    assert decode_text(b"+AOk-t+AOk-", "utf-7") == "été"
    assert decode_text(b"\x81\xff", "us-ascii") == "\ufffdÿ"


@pytest.mark.parametrize(
    "relative",
    [
        "spamassassin/spam-1/00217.43b4ef3d9c56cf42be9c37b546a19e78.txt",  # DEFAULT_CHARSET
        "spamassassin/spam-1/00388.53eae0055e66fcb7194f9cca080fdefe.txt",  # DEFAULT
        "spamassassin/spam-1/00319.a99dff9c010e00ec182ed5701556d330.txt",  # unknown-8bit
        "mime-fixtures/zbateson-mail-mime-parser/emails/invalid-charset.txt",
    ],
)
def test_corpus_files_with_bogus_charsets(shared_data: Path, relative: str) -> None:
    message = parse(fixture(shared_data, relative))
    assert len(message.text) > 200
    assert "\ufffd" not in message.text[:200]


# --- structure ---------------------------------------------------------------------------------

ALTERNATIVE = """From: shop@boutique.fr
Subject: Commande
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="MIX"

--MIX
Content-Type: multipart/alternative; boundary="ALT"

--ALT
Content-Type: text/plain; charset=utf-8

Votre commande 42 est expédiée.
--ALT
Content-Type: text/html; charset=utf-8

<p>Version <b>HTML</b></p>
--ALT--
--MIX
Content-Type: application/pdf; name="facture.pdf"
Content-Disposition: attachment; filename="facture.pdf"
Content-Transfer-Encoding: base64

{pdf}
--MIX--
"""


def _pdf_base64(size: int) -> str:
    return base64.encodebytes(b"%PDF-1.4 " + b"\x01" * (size - 9)).decode()


def test_plain_is_preferred_and_attachments_are_described_not_read() -> None:
    pdf = _pdf_base64(10_001)
    message = parse(ALTERNATIVE.format(pdf=pdf).replace("\n", "\r\n").encode())
    assert message.text == "Votre commande 42 est expédiée."
    assert message.attachments == [Attachment("facture.pdf", "application/pdf", 10_001)]
    assert pdf.splitlines()[1] not in message.text


def test_html_only_mail_is_converted() -> None:
    raw = mail(
        "From: news@shop.fr\nContent-Type: text/html; charset=iso-8859-1",
        "<html><body><h1>Soldes d'&eacute;t&eacute;</h1><p>-50&nbsp;%</p></body></html>".encode(
            "latin-1"
        ),
    )
    assert parse(raw).text == "Soldes d'été\n-50 %"


def test_blank_plain_alternative_loses_to_html() -> None:
    raw = ALTERNATIVE.replace("Votre commande 42 est expédiée.", "  ").format(pdf="AAAA")
    assert parse(raw.encode()).text == "Version HTML"


def test_large_attachment_size_without_decoding_into_text() -> None:
    """8 MB of base64: the size comes from the encoded length, the text stays clean."""
    size = 8_000_000
    pdf = _pdf_base64(size)
    raw = ALTERNATIVE.format(pdf=pdf).encode()
    message = parse(raw)
    assert message.attachments[0].size == size
    assert message.text == "Votre commande 42 est expédiée."


def test_rfc2231_and_encoded_attachment_names() -> None:
    raw = mail(
        """
        From: a@b.fr
        Content-Type: multipart/mixed; boundary=B
        """,
        "--B\r\nContent-Type: text/plain\r\n\r\nCV en pièce jointe\r\n"
        "--B\r\nContent-Type: application/pdf\r\n"
        "Content-Disposition: attachment; filename*=UTF-8''CV%20h%C3%A9l%C3%A8ne.pdf\r\n\r\n"
        "AAAA\r\n"
        '--B\r\nContent-Type: application/msword; name="=?utf-8?q?lettre_motiv=C3=A9e.doc?="\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nQUJD\r\n--B--\r\n",
    )
    message = parse(raw)
    assert [(a.filename, a.size) for a in message.attachments] == [
        ("CV hélène.pdf", 4),
        ("lettre motivée.doc", 3),
    ]
    assert message.text == "CV en pièce jointe"


def test_missing_boundary_is_recovered() -> None:
    raw = mail(
        "From: a@b.fr\nContent-Type: multipart/mixed",
        "--XYZ\r\nContent-Type: text/plain\r\n\r\nLe texte\r\n--XYZ\r\n"
        "Content-Type: image/png; name=a.png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "iVBORw0KGgo=\r\n--XYZ--\r\n",
    )
    message = parse(raw)
    assert message.text == "Le texte"
    assert message.attachments == [Attachment("a.png", "image/png", 8)]


def test_missing_final_boundary(shared_data: Path) -> None:
    raw = fixture(shared_data, FLANKER + "missing-final-boundary.eml")
    assert parse(raw).text == "Some body"


def test_signed_mail_takes_the_signed_content(shared_data: Path) -> None:
    message = parse(fixture(shared_data, "mime-fixtures/cpython_test_email/msg_45.txt"))
    assert message.text == "This is the signed contents."
    assert message.attachments == []


def test_forwarded_message_is_included_and_bounded() -> None:
    inner = (
        "From: Client <client@x.fr>\r\nSubject: Réclamation\r\n"
        "Content-Type: multipart/mixed; boundary=IN\r\n\r\n"
        "--IN\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + "Le colis est arrivé cassé. "
        * 1000
        + "\r\n--IN\r\nContent-Type: image/jpeg; name=photo.jpg\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n/9j/4AAQ\r\n--IN--\r\n"
    )
    raw = mail(
        "From: collegue@societe.fr\nSubject: TR: Réclamation\n"
        "Content-Type: multipart/mixed; boundary=OUT",
        "--OUT\r\nContent-Type: text/plain\r\n\r\nPour toi.\r\n"
        "--OUT\r\nContent-Type: message/rfc822\r\n\r\n" + inner + "\r\n--OUT--\r\n",
    )
    message = parse(raw)
    assert message.text.startswith(
        "Pour toi.\n\n---------- Forwarded message ----------\n"
        "From: Client <client@x.fr>\nSubject: Réclamation\n\nLe colis est arrivé cassé."
    )
    assert len(message.text) < 5_200
    assert message.attachments == [
        Attachment("Réclamation.eml", "message/rfc822", message.attachments[0].size),
        Attachment("photo.jpg", "image/jpeg", 6),
    ]


def test_forwarded_fixture(shared_data: Path) -> None:
    message = parse(fixture(shared_data, FLANKER + "enclosed.eml"))
    assert message.text.startswith("Hello\n\n---------- Forwarded message ----------\nFrom: Kirk")
    assert any(a.filename == "thanks.eml" for a in message.attachments)


def test_tnef_body_and_attachment_names(shared_data: Path) -> None:
    message = parse(fixture(shared_data, MIMEKIT + "tnef/rich-text.eml"))
    assert message.text.startswith("You've made this a Christmas to remember")
    names = [a.filename for a in message.attachments]
    assert "kitten-playing-with-a-christmas-tree.jpg" in names
    assert "winmail.dat" not in names


def test_tnef_wrapped_from_raw_files(shared_data: Path) -> None:
    data = fixture(shared_data, MIMEKIT + "tnef/two-files.tnef")
    raw = mail(
        "From: a@b.fr\nContent-Type: multipart/mixed; boundary=B",
        "--B\r\nContent-Type: text/plain\r\n\r\nVoir PJ\r\n--B\r\n"
        "Content-Type: application/ms-tnef; name=winmail.dat\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(data).decode()
        + "--B--\r\n",
    )
    assert [(a.filename, a.size) for a in parse(raw).attachments] == [
        ("AUTHORS", 244),
        ("README", 893),
    ]


def test_broken_tnef_is_listed_only() -> None:
    raw = mail(
        "From: a@b.fr\nContent-Type: multipart/mixed; boundary=B",
        "--B\r\nContent-Type: text/plain\r\n\r\nVoir PJ\r\n--B\r\n"
        "Content-Type: application/ms-tnef; name=winmail.dat\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nbm90IHRuZWY=\r\n--B--\r\n",
    )
    message = parse(raw)
    assert message.text == "Voir PJ"
    assert message.attachments == [Attachment("winmail.dat", "application/ms-tnef", 8)]


def test_delivery_report_keeps_the_human_part(shared_data: Path) -> None:
    message = parse(fixture(shared_data, FLANKER + "bounce/zed.eml"))
    assert message.text.startswith("This is the mail system at host mail.example.com.")
    assert "Reporting-MTA" not in message.text
    assert message.header("content-type").startswith("multipart/report")


def test_read_receipt(shared_data: Path) -> None:
    message = parse(fixture(shared_data, MIMEKIT + "messages/disposition-notification.txt"))
    assert message.text.startswith("The message sent on 1995 Sep 19")
    assert "Disposition:" not in message.text


def test_message_partial(shared_data: Path) -> None:
    first = parse(fixture(shared_data, MIMEKIT + "partial/message-partial.0.eml"))
    assert first.text.startswith("Hey all,")
    assert first.attachments[0] == Attachment(
        "fragment 1 of 3", "message/partial", first.attachments[0].size
    )
    second = parse(fixture(shared_data, MIMEKIT + "partial/message-partial.1.eml"))
    assert second.text == ""
    assert second.subject == "Photo of a girl with feather earrings"
    assert second.attachments[0].filename == "fragment 2 of 3"


def test_uuencoded_text_part() -> None:
    raw = mail(
        "From: a@b.fr\nContent-Type: text/plain\nContent-Transfer-Encoding: x-uuencode",
        "begin 644 a.txt\r\n&:&5L;&\\*\r\n`\r\nend\r\n",
    )
    assert parse(raw).text.startswith("hell")


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty message"),
        (b"   \r\n\r\n", "empty message"),
        (b"Hi folks, this is just text.\nNo header at all.\n", "no RFC 822 header"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "PNG image"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\x00", "Outlook .msg"),
        (b"\x78\x9f\x3e\x22\x00\x00", "TNEF"),
        (b"X-Nothing: here\r\n\r\n", "no sender, subject, text or attachment"),
    ],
)
def test_unusable_input_raises_a_clear_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(MessageParseError) as error:
        parse(raw)
    assert reason in error.value.reason


def test_bom_and_leading_blank_lines_are_tolerated() -> None:
    message = parse(b"\xef\xbb\xbf\r\nFrom: a@b.fr\r\nSubject: x\r\n\r\nCorps")
    assert message.subject == "x" and message.text == "Corps"


def test_lf_only_line_endings() -> None:
    message = parse(mail("From: a@b.fr\nSubject: LF", "ligne 1\nligne 2\n", eol="\n"))
    assert message.subject == "LF" and message.text == "ligne 1\nligne 2"


MUTATION_SNIPPETS = [
    b"\r\n",
    b"\n\n",
    b"=?",
    b"?=",
    b"--",
    b"=?utf-8?b?",
    b"\x00",
    b"charset*=bogus''x",
    b"Content-Type: multipart/mixed; boundary=x\r\n",
    b"Content-Transfer-Encoding: base64\n",
    b"message/rfc822",
    b"application/ms-tnef",
    b"<blockquote>",
]


def _mutate(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 12)):
        at = rng.randrange(len(data) + 1)
        choice = rng.random()
        if choice < 0.3 and at < len(data):
            data[at] = rng.randrange(256)
        elif choice < 0.5:
            del data[at : at + rng.randint(1, 200)]
        elif choice < 0.8:
            data[at:at] = rng.choice(MUTATION_SNIPPETS)
        else:
            source = rng.randrange(len(data) + 1)
            data[at:at] = data[source : source + rng.randint(1, 400)]
    return bytes(data)


def test_mutated_messages_never_crash(shared_data: Path) -> None:
    """Damaged copies of real fixtures: a Message or MessageParseError, never anything else."""
    names = [
        FLANKER + "enclosed.eml",
        FLANKER + "torture-part.eml",
        FLANKER + "bounce/zed.eml",
        FLANKER + "signed.eml",
        MIMEKIT + "tnef/ukr.eml",
        MIMEKIT + "messages/multipart-digest.txt",
        "mime-fixtures/zbateson-mail-mime-parser/emails/m2005.txt",
        "mime-fixtures/cpython_test_email/msg_33.txt",
        "mime-fixtures/zbateson-mail-mime-parser/emails/m1001.txt",
        "mime-fixtures/mail-parser/tests/mails/mail_test_14",
    ]
    originals = [fixture(shared_data, name) for name in names]
    rng = random.Random(20240603)
    crashes = []
    for round_ in range(2000):
        raw = _mutate(originals[round_ % len(originals)], rng)
        try:
            parse(raw)
        except MessageParseError as error:
            if error.reason.startswith(UNEXPECTED):
                crashes.append(f"round {round_}: {error.reason}")
        except Exception as error:  # what this test is for
            crashes.append(f"round {round_}: {type(error).__name__}: {error}")
    assert not crashes, "\n".join(crashes[:20])
