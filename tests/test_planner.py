from __future__ import annotations

from mailtriage.core.actions import Forward, Label, MarkRead, Move
from mailtriage.core.decision import Decision
from mailtriage.core.planner import plan, review_plan
from tests.helpers import example_settings, make_message


def _d(key: str, conf: float = 0.9, classifier: str = "llm") -> Decision:
    return Decision(category=key, confidence=conf, reason="because", classifier=classifier)


def test_plan_comes_from_configuration_only() -> None:
    s = example_settings()
    m = make_message("CV", sender="jean@example.org")
    p = plan(_d("rh"), m, s)
    assert p.category == "rh"
    # The forward first: the message stays untouched in the Inbox until it is sent.
    assert p.actions == (
        Forward(("rh@atelier-dupont.fr",), p.actions[0].note, "jean@example.org"),  # type: ignore[union-attr]
        Label("RH", "preset7"),
        Move("Triage/RH"),
    )
    assert "RH" in p.describe() and "forwarded to rh@atelier-dupont.fr" in p.describe()
    pub = plan(_d("publicite"), m, s)
    assert MarkRead() in pub.actions and not any(isinstance(a, Forward) for a in pub.actions)


def test_low_confidence_and_unknown_keys_go_to_review() -> None:
    s = example_settings()
    m = make_message("?")
    assert plan(_d("rh", 0.2), m, s).category == "review"
    assert plan(_d("urgent_ceo"), m, s).category == "review"
    assert plan(_d("rh", 1.0, "rule"), m, s).category == "rh"
    # per-mailbox subset: rh does not apply to the Gmail info@ mailbox
    info = make_message("CV", mailbox="info@atelier-dupont.com")
    assert plan(_d("rh"), info, s).category == "review"
    assert review_plan(m, s).actions == (Label("À vérifier", "preset1"),)


def test_reply_to_prefers_reply_to_header_and_reason_is_not_forwarded() -> None:
    from mailtriage.core.message import Address

    s = example_settings()
    m = make_message("x", reply_to=[Address("real@client.fr")])
    fwd = next(a for a in plan(_d("clients"), m, s).actions if isinstance(a, Forward))
    assert fwd.reply_to == "real@client.fr"
    assert "because" not in fwd.note  # model text is not forwarded by default
