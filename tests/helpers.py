"""Small builders shared by tests (messages, settings, a scripted classifier)."""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailtriage.core.config import Settings, parse_settings
from mailtriage.core.decision import ConfidenceSource, Decision
from mailtriage.core.errors import ClassifierError
from mailtriage.core.intents import NO_INTENT, Intent
from mailtriage.core.message import Address, Message
from mailtriage.core.ports import ActionResult

EXAMPLE = Path(__file__).resolve().parents[1] / "manifest" / "mailtriage.example.toml"
_ids = itertools.count(1)


def example_settings(**overrides: Any) -> Settings:
    """The example configuration with a local SQLite-free state and overrides applied."""
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_settings(data, "test.toml")


def make_message(
    subject: str = "Bonjour",
    text: str = "",
    *,
    mailbox: str = "contact@atelier-dupont.fr",
    sender: str = "client@example.org",
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> Message:
    n = next(_ids)
    return Message(
        mailbox=mailbox,
        provider_id=kw.pop("provider_id", f"msg-{n}"),
        internet_message_id=kw.pop("internet_message_id", f"<{n}@example.org>"),
        subject=subject,
        sender=Address(sender, "Someone"),
        text=text,
        headers={k.lower(): v for k, v in (headers or {}).items()},
        **kw,
    )


class ScriptedClassifier:
    """Decides by a function of the message; counts calls; can raise ClassifierError."""

    name = "scripted"

    def __init__(self, decide: Callable[[Message], tuple[str, float]]) -> None:
        self.decide = decide
        self.calls = 0

    async def classify(self, message: Message) -> Decision:
        self.calls += 1
        key, confidence = self.decide(message)
        if key == "!error":
            raise ClassifierError("model unavailable")
        return Decision(
            category=key,
            confidence=confidence,
            reason=f"scripted {key}",
            classifier="scripted",
            confidence_source=ConfidenceSource.MODEL,
        )


def by_subject(message: Message) -> tuple[str, float]:
    """'[rh] ...' → ('rh', 0.9); '[x:0.2] ...' → ('x', 0.2)."""
    tag = message.subject.split("]")[0].lstrip("[")
    key, _, conf = tag.partition(":")
    return key, float(conf) if conf else 0.9


class ScriptedJournal:
    """A `Journal` with given intents that keeps what the connector reports."""

    def __init__(self, *intents: Intent) -> None:
        self.intents = list(intents)
        self.notes: list[tuple[int, str]] = []
        self.results: dict[int, ActionResult] = {}

    def intent(self, index: int) -> Intent:
        return self.intents[index] if index < len(self.intents) else NO_INTENT

    async def note(self, index: int, evidence: str) -> None:
        self.notes.append((index, evidence))

    async def record(self, index: int, result: ActionResult) -> None:
        self.results[index] = result
