"""The demo corpus: every mail builds into valid RFC 822 and says what the demo promises."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage, MIMEPart
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from mailtriage.core.config import load_settings
from mailtriage.core.message import KEPT_HEADERS, Address, Message
from mailtriage.core.rules import skip_reason
from mailtriage.sandbox.demo_corpus import (
    DEFAULT_SPAN,
    DEMO_MAILS,
    DemoMail,
    build_rfc822,
    demo_messages,
    dummy_bytes,
    render_body,
)

MAILBOX = "contact@atelier-dupont.fr"
WHEN = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
ROUTED = ("rh", "fournisseurs", "clients", "devis", "publicite")
ALLOWED_DOMAIN = re.compile(
    r"(?:^|\.)(?:example\.(?:com|org|net)|[a-z0-9-]+\.example|atelier-dupont\.(?:fr|com))$"
)
EMAIL = re.compile(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)")


def parse(raw: bytes) -> EmailMessage:
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


@pytest.fixture(scope="module")
def built() -> dict[str, bytes]:
    """Each demo mail built once for the module's tests (building is the slow part)."""
    return {m.key: build_rfc822(m, to=MAILBOX, date=WHEN) for m in DEMO_MAILS}


def content(part: MIMEPart) -> str:
    """Decoded text with the wire's CRLF line ends turned back into newlines."""
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n").rstrip()


def by_tag(tag: str) -> list[DemoMail]:
    return [m for m in DEMO_MAILS if tag in m.tags]


def as_core_message(mail: DemoMail, parsed: EmailMessage) -> Message:
    """The core view rules see, built by hand until core/extract.py lands on main."""
    sender = parsed["From"].addresses[0]
    return Message(
        mailbox=MAILBOX,
        provider_id=mail.key,
        subject=str(parsed["Subject"]),
        sender=Address(sender.addr_spec, sender.display_name),
        headers={k.lower(): str(v) for k, v in parsed.items() if k.lower() in KEPT_HEADERS},
    )


@pytest.mark.parametrize("mail", DEMO_MAILS, ids=lambda m: m.key)
def test_mail_builds_and_parses_back(mail: DemoMail, built: dict[str, bytes]) -> None:
    parsed = parse(built[mail.key])

    assert not parsed.defects
    assert parsed["Subject"] == mail.subject
    sender = parsed["From"].addresses[0]
    assert (sender.addr_spec, sender.display_name) == (mail.sender, mail.sender_name)
    assert parsed["To"].addresses[0].addr_spec == MAILBOX
    assert parsedate_to_datetime(parsed["Date"]) == WHEN
    assert parsed["Message-ID"] == f"<demo.{mail.key}@demo.example>"
    if mail.reply_to:
        assert parsed["Reply-To"].addresses[0].addr_spec in mail.reply_to
    for name, value in mail.headers:
        assert " ".join(str(parsed[name]).split()) == " ".join(value.split())

    text_part = parsed.get_body(preferencelist=("plain",))
    html_part = parsed.get_body(preferencelist=("html",))
    if mail.body:
        assert text_part is not None
        assert content(text_part) == render_body(mail, to=MAILBOX, date=WHEN).rstrip()
    else:
        assert text_part is None, "an HTML-only mail must not carry a text part"
    if mail.html:
        assert html_part is not None
        assert content(html_part) == mail.html.rstrip()

    attached = [
        (a.get_filename(), a.get_content_type(), len(a.get_content()))
        for a in parsed.iter_attachments()
    ]
    assert attached == [(a.filename, a.content_type, a.size) for a in mail.attachments]
    for part, attachment in zip(parsed.iter_attachments(), mail.attachments, strict=True):
        assert part.get_content() == dummy_bytes(attachment)


def test_mime_structures_cover_plain_alternative_and_html_only(built: dict[str, bytes]) -> None:
    shapes = Counter(parse(raw).get_content_type() for raw in built.values())
    assert shapes["text/plain"] >= 10
    assert shapes["multipart/alternative"] >= 3
    assert shapes["text/html"] == len(by_tag("html-only")) >= 2
    assert shapes["multipart/mixed"] >= 10


def test_build_is_deterministic_and_needs_an_aware_date(built: dict[str, bytes]) -> None:
    for mail in DEMO_MAILS:
        assert build_rfc822(mail, to=MAILBOX, date=WHEN) == built[mail.key]
    with pytest.raises(ValueError, match="timezone-aware"):
        build_rfc822(DEMO_MAILS[0], to=MAILBOX, date=datetime(2026, 1, 1))


def test_keys_and_message_ids_are_unique() -> None:
    keys = [m.key for m in DEMO_MAILS]
    assert len(keys) == len(set(keys))
    assert all(re.fullmatch(r"[a-z0-9-]+", k) for k in keys)
    assert 38 <= len(DEMO_MAILS) <= 46


def test_expected_categories_exist_in_the_example_config(example_config_path: Path) -> None:
    keys = {c.key for c in load_settings(example_config_path).categories}
    assert {m.expected for m in DEMO_MAILS} - {"skip"} <= keys


def test_every_routed_category_is_covered_in_both_languages() -> None:
    for category in ROUTED:
        mails = [m for m in DEMO_MAILS if m.expected == category]
        assert len(mails) >= 4, category
        assert {m.lang for m in mails} == {"fr", "en"}, category
    langs = Counter(m.lang for m in DEMO_MAILS)
    assert abs(langs["fr"] - langs["en"]) <= len(DEMO_MAILS) // 5


def test_exactly_one_auto_reply_and_it_is_skipped_by_the_rules() -> None:
    skipped = [m for m in DEMO_MAILS if m.expected == "skip"]
    assert skipped == by_tag("auto-reply")
    assert len(skipped) == 1
    (ooo,) = skipped
    assert ooo.subject == "Réponse automatique : Absent du bureau"
    assert ("Auto-Submitted", "auto-replied") in ooo.headers


def test_rules_skip_only_the_auto_reply(built: dict[str, bytes]) -> None:
    for mail in DEMO_MAILS:
        parsed = parse(built[mail.key])
        reason = skip_reason(as_core_message(mail, parsed))
        if mail.expected == "skip":
            assert reason is not None and "auto-reply" in reason.reason
        else:
            assert reason is None, (mail.key, reason)


def test_exactly_one_injection_routed_as_a_careful_system_would() -> None:
    (injection,) = by_tag("injection")
    assert injection.expected in {"clients", "review"}
    assert injection.note
    assert "Ignore all previous instructions" in injection.body
    assert "attacker@evil.example" in injection.body
    assert injection.html and "display:none" in injection.html


def test_a_few_genuinely_ambiguous_mails_go_to_review() -> None:
    review = [m for m in DEMO_MAILS if m.expected == "review"]
    assert 2 <= len(review) <= 3
    assert all("ambiguous" in m.tags and m.note for m in review)


def test_realism_markers_are_present() -> None:
    bodies = [m.body for m in DEMO_MAILS]
    assert sum("Envoyé de mon iPhone" in b for b in bodies) == 1
    assert any(re.search(r"^Le \{short-\d+ [\d:]+\}, .* a écrit :$", b, re.M) for b in bodies)
    assert any(re.search(r"^On \{short-\d+ [\d:]+\}, .* wrote:$", b, re.M) for b in bodies)
    assert any("De : " in b and "Envoyé : {long-" in b for b in bodies)
    assert all(len(m.body.strip().splitlines()) >= 2 for m in DEMO_MAILS if m.body)
    newsletters = by_tag("bulk")
    assert len(newsletters) >= 4
    for mail in newsletters:
        names = {name for name, _ in mail.headers}
        assert {"List-Unsubscribe", "Precedence"} <= names
    assert any(a.filename == "facture_F2025-118.pdf" for m in DEMO_MAILS for a in m.attachments)
    assert any(a.filename == "CV_Marie_Lefevre.pdf" for m in DEMO_MAILS for a in m.attachments)


def test_quoted_dates_are_rendered_relative_to_the_message() -> None:
    mails = {m.key: m for m in DEMO_MAILS}
    fr = render_body(mails["cli-remboursement-retour"], to=MAILBOX, date=WHEN)
    assert "Le dim. 15 nov. 2026 à 10:12, Service client" in fr
    outlook = render_body(mails["four-relance-quincaillerie"], to=MAILBOX, date=WHEN)
    assert "Envoyé : mercredi 21 octobre 2026 16:05" in outlook
    assert f"À : {MAILBOX}" in outlook
    en = render_body(mails["rh-payslip-overtime"], to=MAILBOX, date=WHEN)
    assert "On Sun, Nov 22, 2026 at 9:41 AM, Claire Martin" in en
    assert all("{" not in render_body(m, to=MAILBOX, date=WHEN) for m in DEMO_MAILS)


def test_only_example_domains_appear() -> None:
    for mail in DEMO_MAILS:
        text = " ".join([mail.sender, mail.reply_to or "", mail.body, mail.html or ""])
        text += " ".join(value for _, value in mail.headers)
        for domain in EMAIL.findall(text) + re.findall(r"https?://([\w.-]+)", text):
            assert ALLOWED_DOMAIN.search(domain.lower()), (mail.key, domain)


def test_demo_messages_spread_over_the_previous_days() -> None:
    start = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    built = demo_messages("info@atelier-dupont.com", start=start)
    assert sorted(m.key for m, _ in built) == sorted(m.key for m in DEMO_MAILS)
    dates = [parsedate_to_datetime(parse(raw)["Date"]) for _, raw in built]
    assert dates == sorted(dates)
    assert start - DEFAULT_SPAN <= dates[0] and dates[-1] < start
    assert len({d.date() for d in dates}) >= 2
    assert all(parse(raw)["To"] == "info@atelier-dupont.com" for _, raw in built)
    # Categories interleave like a real inbox instead of arriving in blocks.
    firsts = [m.expected for m, _ in built[:10]]
    assert len(set(firsts)) >= 4
    assert built == demo_messages("info@atelier-dupont.com", start=start)


def test_demo_messages_default_to_now() -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    built = demo_messages(MAILBOX)
    newest = parsedate_to_datetime(parse(built[-1][1])["Date"])
    assert before - DEFAULT_SPAN <= newest <= datetime.now(UTC)


def test_core_extract_reads_every_demo_mail(built: dict[str, bytes]) -> None:
    """Once core/extract.py is on main, the demo's mail must go through the real parser."""
    extract = pytest.importorskip("mailtriage.core.extract")
    for mail in DEMO_MAILS:
        message = extract.parse_rfc822(built[mail.key], mailbox=MAILBOX, provider_id=mail.key)
        assert message.subject == mail.subject
        assert message.sender is not None and message.sender.email == mail.sender
        assert message.text.strip(), mail.key
        assert [(a.filename, a.size) for a in message.attachments] == [
            (a.filename, a.size) for a in mail.attachments
        ]
        assert (skip_reason(message) is not None) == (mail.expected == "skip"), mail.key
