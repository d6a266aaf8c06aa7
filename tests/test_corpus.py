"""Every public message parses: a Message or a recorded MessageParseError, nothing else.

SpamAssassin (3,250 real messages, index.csv) and the MIME torture fixtures of seven parser
projects, read in place. Each test loops over all files, collects every failure and reports
them together, so one run shows the whole picture.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailtriage.core.errors import MessageParseError
from mailtriage.core.extract import UNEXPECTED, parse_rfc822
from mailtriage.core.message import Message

# Three or more lines of nothing but base64: an attachment leaking into the text.
BASE64_BLOCK = re.compile(r"(?:^[A-Za-z0-9+/]{60,}={0,2}\n){3,}", re.M)
SPAMASSASSIN_MESSAGES = 3250
# Documentation and licence files travel with the fixtures; everything else is fed to the
# parser, including non-mail files (bare TNEF, HTML snippets, reply bodies), which must be
# refused with a reason.
NOT_FIXTURES_NAMES = re.compile(r"^(?:LICENSE|NOTICE|README|STDLIB_README)(?:\..*)?$", re.I)
NOT_FIXTURES_SUFFIXES = frozenset({".md", ".py", ".gitignore", ".csv"})


@dataclass
class Outcome:
    messages: dict[str, Message] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    crashed: dict[str, str] = field(default_factory=dict)


def run(paths: list[Path], root: Path) -> Outcome:
    outcome = Outcome()
    for path in paths:
        name = path.relative_to(root).as_posix()
        try:
            outcome.messages[name] = parse_rfc822(
                path.read_bytes(), mailbox="corpus", provider_id=name
            )
        except MessageParseError as error:
            if error.reason.startswith(UNEXPECTED):
                outcome.crashed[name] = error.reason
            else:
                outcome.skipped[name] = error.reason
        except Exception as error:  # the point of the test: nothing else may escape
            outcome.crashed[name] = f"{type(error).__name__}: {error}"
    return outcome


def problems(outcome: Outcome) -> list[str]:
    found = [f"{name}: crashed: {error}" for name, error in outcome.crashed.items()]
    for name, message in outcome.messages.items():
        if BASE64_BLOCK.search(message.text + "\n"):
            found.append(f"{name}: base64 block in text")
        if "=?" in message.subject and "?=" in message.subject:
            found.append(f"{name}: undecoded subject {message.subject!r}")
        if any("\udc80" <= char <= "\udcff" for char in message.subject + message.text):
            found.append(f"{name}: raw bytes left as surrogates")
        if message.date is not None and message.date.tzinfo is None:
            found.append(f"{name}: naive date")
    return found


def spamassassin_paths(root: Path) -> list[Path]:
    index = root / "index.csv"
    with index.open(encoding="utf-8", newline="") as handle:
        return [root / row["path"] for row in csv.DictReader(handle)]


def fixture_paths(root: Path) -> list[Path]:
    return sorted(
        path
        for path in root.rglob("*")
        if path.is_file()
        and not NOT_FIXTURES_NAMES.match(path.name)
        and path.suffix.lower() not in NOT_FIXTURES_SUFFIXES
    )


@pytest.fixture(scope="module")
def spamassassin(shared_data: Path) -> Outcome:
    """The whole corpus parsed once for the tests of this module."""
    root = shared_data / "spamassassin"
    paths = spamassassin_paths(root)
    assert len(paths) == SPAMASSASSIN_MESSAGES
    walked = {p for p in root.rglob("*.txt") if p.parent != root}
    assert walked == set(paths), "index.csv and the folders disagree"
    return run(paths, root)


def test_spamassassin_corpus(spamassassin: Outcome) -> None:
    outcome = spamassassin
    found = problems(outcome)
    found += [f"{name}: skipped: {reason}" for name, reason in outcome.skipped.items()]
    assert not found, "\n".join(found)
    messages = list(outcome.messages.values())
    with_text = sum(1 for m in messages if m.text.strip())
    assert with_text / len(messages) > 0.99, f"only {with_text} of {len(messages)} have text"
    assert sum(1 for m in messages if m.subject) / len(messages) > 0.99
    assert sum(1 for m in messages if m.sender is not None) == len(messages)
    assert sum(1 for m in messages if m.date is not None) / len(messages) > 0.99
    assert all(m.size > 0 for m in messages)


def test_spamassassin_subjects_decode(spamassassin: Outcome) -> None:
    """Known encoded subjects of the corpus come out readable."""
    expected = {
        "日本語の件名（サブジェクト） スパムメールではありません！",
        "Re: RE: [zzzzteana] Sitting Bull über alles [Long]",
        "Matrox Parhelia™ now available",
        "Robbie Williams signs £80m deal",
        "[광고] 요즘 뜨는 직종 Best 5 & 자격증 따기 열풍",  # raw 8-bit, body charset ks_c_5601
    }
    subjects = {m.subject for m in spamassassin.messages.values()}
    assert expected <= subjects


def test_mime_fixtures(shared_data: Path) -> None:
    root = shared_data / "mime-fixtures"
    paths = fixture_paths(root)
    assert len(paths) > 450

    outcome = run(paths, root)

    found = problems(outcome)
    assert not found, "\n".join(found)
    # Real messages parse; a bare report fragment with no sender, subject or text is refused.
    refused_mail = {n: r for n, r in outcome.skipped.items() if n.endswith(".eml")}
    assert set(refused_mail.values()) <= {"no sender, subject, text or attachment found"}
    assert len(refused_mail) <= 1, refused_mail
    reasons = Counter(outcome.skipped.values())
    assert reasons["bare TNEF (winmail.dat) data, not RFC 822"] == sum(
        1 for p in paths if p.suffix == ".tnef"
    )
    crisp_bodies = [n for n in outcome.skipped if n.startswith("crisp-email-reply-parser/")]
    assert len(crisp_bodies) > 80  # plain reply bodies without headers: not mail
    assert len(outcome.messages) > 250
    with_text = sum(1 for m in outcome.messages.values() if m.text)
    assert with_text / len(outcome.messages) > 0.85


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("mime-fixtures/mail-parser/tests/mails/mail_outlook_1", "Outlook .msg"),
        ("mime-fixtures/mimekit/tnef/winmail.tnef", "TNEF"),
        ("mime-fixtures/talon/tests/fixtures/html_replies/gmail.html", "no RFC 822 header"),
    ],
)
def test_non_mail_fixtures_are_refused_with_a_reason(
    shared_data: Path, relative: str, reason: str
) -> None:
    with pytest.raises(MessageParseError) as error:
        parse_rfc822((shared_data / relative).read_bytes(), mailbox="m", provider_id="p")
    assert reason in error.value.reason
