from __future__ import annotations

import pytest

from mailtriage.core.rules import LOOP_HEADER, route_by_sender, skip_reason
from tests.helpers import example_settings, make_message


@pytest.mark.parametrize(
    ("subject", "headers", "sender", "reason"),
    [
        ("Re: devis", {LOOP_HEADER: "forwarded; mailbox=contact@x.fr"}, "a@b.fr", "loop guard"),
        ("Hello", {"Auto-Submitted": "auto-replied"}, "a@b.fr", "Auto-Submitted"),
        ("Hello", {"X-Autoreply": "yes"}, "a@b.fr", "X-Autoreply"),
        ("Hello", {"Precedence": "auto_reply"}, "a@b.fr", "Precedence"),
        ("Réponse automatique : Absent", {}, "a@b.fr", "out-of-office"),
        ("Absence du bureau jusqu'au 3 janvier", {}, "a@b.fr", "out-of-office"),
        ("Out of Office: back Monday", {}, "a@b.fr", "out-of-office"),
        ("Automatic reply: Invoice 42", {}, "a@b.fr", "out-of-office"),
        ("Undeliverable: Votre commande", {}, "a@b.fr", "delivery failure"),
        ("Non remis : facture", {}, "a@b.fr", "delivery failure"),
        ("Hello", {}, "MAILER-DAEMON@mx.example.org", "mailer-daemon"),
        (
            "x",
            {"Content-Type": "multipart/report; report-type=delivery-status"},
            "a@b.fr",
            "delivery status",
        ),
    ],
)
def test_skips(subject: str, headers: dict[str, str], sender: str, reason: str) -> None:
    skip = skip_reason(make_message(subject, headers=headers, sender=sender))
    assert skip is not None and reason in skip.reason


@pytest.mark.parametrize(
    ("subject", "headers"),
    [
        ("Candidature spontanée", {}),
        ("Newsletter de novembre", {"Precedence": "bulk", "List-Unsubscribe": "<mailto:x>"}),
        ("Re: Absence de réponse à ma réclamation", {}),
        ("Hello", {"Auto-Submitted": "no"}),
    ],
)
def test_real_mail_is_not_skipped(subject: str, headers: dict[str, str]) -> None:
    assert skip_reason(make_message(subject, headers=headers)) is None


def test_sender_and_domain_routes() -> None:
    s = example_settings()
    m = make_message("Promo", sender="news@news.bureau-plus.example")
    d = route_by_sender(m, s)
    assert d is not None and d.category == "publicite" and d.classifier == "rule"
    m = make_message("Promo", sender="news@mail.news.bureau-plus.example")
    assert route_by_sender(m, s) is not None
    assert route_by_sender(make_message("x", sender="a@bureau-plus.example"), s) is None
