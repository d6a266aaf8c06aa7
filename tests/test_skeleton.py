"""Large messages are parsed from their skeleton: same result, bounded memory."""

from __future__ import annotations

import base64
import csv
import os
import quopri
import tracemalloc
from pathlib import Path

import pytest

import mailtriage.core.skeleton as skeleton_module
from mailtriage.core.errors import MessageParseError
from mailtriage.core.extract import parse_rfc822
from mailtriage.core.skeleton import skeleton

MB = 1024 * 1024
# A delimiter line of a declared boundary quoted inside the text (skeleton docstring).
KNOWN_DIFFERENCES = {
    "mime-fixtures/cpython_test_email/msg_38.txt",
    "spamassassin/spam-1/00481.5c95b526e965fa325044123c4ce29c1f.txt",
}


def summary(raw: bytes) -> tuple[object, ...]:
    try:
        m = parse_rfc822(raw, mailbox="m", provider_id="p")
    except MessageParseError as exc:
        return ("unreadable", exc.reason)
    atts = [(a.filename, a.content_type, a.size) for a in m.attachments]
    return (m.subject, m.sender, m.text, atts, m.internet_message_id, m.headers)


def test_every_public_message_reads_the_same_from_its_skeleton(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every body reduced (thresholds at zero) changes nothing but the two known cases."""
    paths = [p for p in (shared_data / "mime-fixtures").rglob("*") if p.is_file()]
    with (shared_data / "spamassassin" / "index.csv").open(encoding="utf-8") as handle:
        paths += [shared_data / "spamassassin" / r["path"] for r in csv.DictReader(handle)]
    different = []
    for path in paths:
        raw = path.read_bytes()
        as_is = summary(raw)
        with monkeypatch.context() as m:
            m.setattr(skeleton_module, "SHRINK_ABOVE", 0)
            m.setattr(skeleton_module, "SMALL_BODY", 0)
            reduced = summary(raw)
        if reduced != as_is:
            different.append(path.relative_to(shared_data).as_posix())
    assert len(paths) > 3700
    assert set(different) <= KNOWN_DIFFERENCES, different


def qp_mail(size: int) -> bytes:
    block = quopri.encodestring(
        ("Découvrez nos nouveautés, élégance à la française. " * 80).encode()
    )
    head = (
        b"From: Boutique <news@boutique.example>\r\nSubject: Newsletter\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
        b"\r\n\r\n"
    )
    return head + (block * (size // len(block) + 1))[:size]


def attachment_mail(size: int, name: str = "cv.pdf") -> bytes:
    data = base64.encodebytes(os.urandom(size))
    return (
        b"From: a@example.org\r\nSubject: Candidature\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="BB"\r\n\r\n--BB\r\n'
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour, ci-joint mon CV.\r\n--BB\r\n"
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename="
        + name.encode()
        + b"\r\n\r\n"
        + data
        + b"--BB--\r\n"
    )


@pytest.mark.parametrize(
    ("make", "size"),
    [
        (qp_mail, 30 * MB),
        (attachment_mail, 20 * MB),
        (lambda n: b"Subject: x\r\n\r\n" + b"Q" * n, 30 * MB),
    ],
)
def test_parsing_a_large_message_allocates_a_bounded_amount(make, size: int) -> None:  # type: ignore[no-untyped-def]
    raw = make(size)
    tracemalloc.start()
    try:
        message = parse_rfc822(raw, mailbox="m", provider_id="p")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * MB  # was 5 to 9 times the message size before the skeleton
    assert message.subject and len(message.text) <= 100_000


def test_attachment_sizes_survive_the_skeleton() -> None:
    raw = attachment_mail(20 * MB)
    reduced = skeleton(raw)
    assert reduced is not None and len(reduced.data) < 4096 and reduced.cut == 1
    message = parse_rfc822(raw, mailbox="m", provider_id="p")
    assert [(a.filename, a.size) for a in message.attachments] == [("cv.pdf", 20 * MB)]
    assert message.text == "Bonjour, ci-joint mon CV."


def test_the_size_marker_cannot_be_forged() -> None:
    """A sender's own size header means nothing: the marker name is random per parse."""
    raw = attachment_mail(2 * MB).replace(
        b"Content-Type: application/pdf\r\n",
        b"Content-Type: application/pdf\r\nX-Mailtriage-Size-0000000000000000: 1\r\n",
    )
    message = parse_rfc822(raw, mailbox="m", provider_id="p")
    assert message.attachments[0].size == 2 * MB
    a, b = skeleton(raw), skeleton(raw)
    assert a is not None and b is not None and a.size_header != b.size_header


def test_small_messages_are_not_touched() -> None:
    assert skeleton(attachment_mail(100_000)) is None
