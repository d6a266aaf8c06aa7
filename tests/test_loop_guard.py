"""A Graph forward into a department mailbox that mailtriage also triages: no loop.

The loop marker travels as a PS_INTERNET_HEADERS property set at creation (Graph does not
take `internetMessageHeaders` afterwards) and arrives as the `x-mailtriage` internet header.
The guard does not rest on that header alone: a forward whose header a relay stripped is
still known by its sender, a configured (triaged) mailbox.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailtriage.connectors.graph.mailbox import GraphMailbox
from mailtriage.core.ledger import Ledger, Status
from mailtriage.core.pipeline import Outcome, Pipeline
from mailtriage.core.rules import skip_reason
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.graph.config import sandbox_settings
from tests.graph_fixtures import RH, SHARED, emu, no_backoff
from tests.helpers import ScriptedClassifier, example_settings, make_message

__all__ = ["emu", "no_backoff"]  # fixtures

pytestmark = pytest.mark.usefixtures("no_backoff")


@pytest.mark.parametrize("strip_header", [False, True])
async def test_forward_into_a_triaged_department_does_not_loop(
    emu: GraphEmulator, tmp_path: Path, strip_header: bool
) -> None:
    settings = sandbox_settings(emu.base_url, [SHARED, RH])
    ledger = Ledger(f"sqlite:///{tmp_path / 'state.db'}")
    everything_is_rh = ScriptedClassifier(lambda m: ("rh", 0.95))  # rh forwards to RH
    pipeline = Pipeline(settings, ledger, everything_is_rh)
    boxes = [GraphMailbox.from_settings(settings, m, ledger) for m in settings.mailboxes]
    try:
        for box in boxes:
            await pipeline.sync_mailbox(box)  # first run: cursors from now
        emu.deliver(SHARED, subject="Candidature", body="Mon CV", sender="jean@example.org")
        (done,) = (await pipeline.sync_mailbox(boxes[0])).results
        assert done.status == Outcome.DONE
        (fwd,) = emu.folder_messages(RH, "Inbox")
        headers = {h["name"].lower(): h["value"] for h in fwd.headers}
        assert headers["x-mailtriage"].startswith(f"forwarded; mailbox={SHARED}")
        if strip_header:  # a relay dropped the custom headers on the way
            with emu.state.lock:
                emu.mailbox(RH).messages[fwd.immutable_id].headers = []
        report = await pipeline.sync_mailbox(boxes[1])
        (seen,) = report.results
        assert seen.status == Outcome.SKIPPED and "loop guard" in seen.detail
        assert emu.folder_messages(RH, "Sent Items") == []  # RH forwarded nothing
        assert len(emu.folder_messages(RH, "Inbox")) == 1
        (row,) = [r for r in ledger.recent() if r.mailbox == RH]
        assert row.status == Status.SKIPPED
    finally:
        for box in boxes:
            await box.aclose()


def test_loop_guard_signals() -> None:
    settings = example_settings()
    own = make_message("Fwd: x", internet_message_id="<mtf-0123456789abcdef@atelier-dupont.com>")
    assert skip_reason(own) is not None  # a Gmail forward's Message-ID
    origin = make_message("FW: x", headers={"X-Mailtriage-Origin": "<a@b>"})
    assert skip_reason(origin) is not None
    from_triaged = make_message("Hello", sender="info@atelier-dupont.com")
    assert skip_reason(from_triaged) is None  # without settings, the sender is unknown
    assert "triaged mailbox" in str(skip_reason(from_triaged, settings))
    assert skip_reason(make_message("Hello", sender="client@example.org"), settings) is None
