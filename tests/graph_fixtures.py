"""Shared fixtures for the Graph tests: the emulator with the shared and RH mailboxes,
a connector on it, and retries without waiting."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from mailtriage.connectors.graph.client import RetryPolicy
from mailtriage.connectors.graph.mailbox import GraphMailbox
from mailtriage.core.ports import MemoryStateStore
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.graph.config import sandbox_settings

SHARED = "contact@atelier-dupont.fr"
RH = "rh@atelier-dupont.fr"


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries happen at once (the tests count them, they do not wait for them)."""
    monkeypatch.setattr(RetryPolicy, "delay_scale", 0.0)


@pytest.fixture
def emu() -> Iterator[GraphEmulator]:
    with GraphEmulator() as e:
        e.add_mailbox(SHARED)
        e.add_mailbox(RH)
        yield e


@pytest.fixture
async def box(emu: GraphEmulator) -> AsyncIterator[GraphMailbox]:
    settings = sandbox_settings(emu.base_url, [SHARED])
    mb = GraphMailbox.from_settings(settings, settings.mailboxes[0], MemoryStateStore())
    yield mb
    await mb.aclose()
