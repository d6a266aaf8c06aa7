"""Soak: `mailtriage run` for about three minutes with nothing but its schedule.

No push: mail trickles into the Graph and Gmail emulators and only the scheduled syncs bring
it in. In the middle the service is killed with SIGKILL and restarted at once (its old
lease still live), and later the model goes down for a while. At the end every delivered
message has been triaged exactly once, the service's memory stayed flat, and `/readyz`
answered 200 whenever the service was up, outside the model outage.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailtriage.core.ledger import Ledger, Status
from mailtriage.sandbox.gmail import GmailEmulator
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.llm import SandboxLLM
from mailtriage.sandbox.process import (
    GMAIL_BOX,
    GRAPH_BOX,
    ServiceProcess,
    add_mailboxes,
    config_data,
    service_env,
    wait_for,
    write_config,
)
from mailtriage.sandbox.server import free_port

INTERVAL_S = 3
MAILS = 36  # per provider, one every TRICKLE_S
TRICKLE_S = 3.0
KILL_AT = 12  # after this many deliveries
OUTAGE = (22, 28)  # the model is down from delivery 22 to delivery 28
RSS_GROWTH_MB = 60  # allowed rise of a run's RSS after its first minute
KINDS = [  # subject, body, forwarded
    ("Candidature spontanée", "Je vous adresse ma candidature et mon CV pour le poste.", True),
    ("Facture fournisseur", "Veuillez trouver notre facture, échéance de paiement au 30.", True),
    ("Demande de devis", "Pourriez-vous nous faire un devis pour 40 chaises ?", True),
    ("Newsletter", "Promotion exclusive ce week-end, offre spéciale. Se désabonner.", False),
]


@dataclass
class Probe:
    """Polls /readyz and the RSS of whichever process is current, once a second."""

    svc: ServiceProcess
    ready: list[tuple[float, int | None]] = field(default_factory=list)
    rss: dict[int, list[tuple[float, int]]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            svc = self.svc
            now = time.monotonic()
            self.ready.append((now, svc.readyz(timeout=5)))
            with contextlib.suppress(OSError, KeyError):  # between kill and restart
                self.rss.setdefault(svc.pid, []).append((now, svc.rss_kb()))
            self.stop.wait(1.0)


def subject(kind: int, n: int) -> str:
    return f"{KINDS[kind][0]} n°{n}"


def deliver(graph: GraphEmulator, gmail: GmailEmulator, n: int) -> None:
    kind = n % len(KINDS)
    _, body, _ = KINDS[kind]
    graph.deliver(
        GRAPH_BOX,
        subject=subject(kind, n),
        body=body,
        sender=f"client{n}@example.org",
        internet_message_id=f"<soak-{n}-graph@example.org>",
    )
    msg = EmailMessage()
    msg["From"], msg["To"] = f"client{n}@example.org", GMAIL_BOX
    msg["Subject"], msg["Message-ID"] = subject(kind, n), f"<soak-{n}-gmail@example.org>"
    msg.set_content(body)
    gmail.deliver(GMAIL_BOX, msg.as_bytes())


@pytest.fixture
def world() -> Iterator[tuple[GraphEmulator, GmailEmulator, SandboxLLM]]:
    with GraphEmulator() as graph, GmailEmulator() as gmail, SandboxLLM() as llm:
        add_mailboxes(graph, gmail)
        yield graph, gmail, llm


def test_soak_without_push_through_kill_and_model_outage(
    world: tuple[GraphEmulator, GmailEmulator, SandboxLLM], tmp_path: Path
) -> None:
    graph, gmail, llm = world
    port = free_port()
    data = config_data(tmp_path, graph, gmail, port, push=False, sync_interval_s=INTERVAL_S)
    data["classifier"] = "llm"
    data["llm"] = {"base_url": llm.base_url, "model": llm.model, "max_retries": 0, "timeout_s": 5}
    config = write_config(tmp_path, data)
    env = service_env(gmail)
    log = tmp_path / "service.log"
    ledger = Ledger(data["state"]["url"])

    svc = ServiceProcess(config, port, env, log)
    svc.wait_ready(120)
    probe = Probe(svc)
    watcher = threading.Thread(target=probe.run, daemon=True)
    watcher.start()
    started = time.monotonic()
    down: list[tuple[float, float]] = []  # (killed, listening again)
    outage: list[float] = []
    try:
        for n in range(MAILS):
            deliver(graph, gmail, n)
            if n == KILL_AT:
                killed = time.monotonic()
                svc.kill()  # no shutdown: the lease stays held for its TTL
                svc = ServiceProcess(config, port, env, log)
                probe.svc = svc
                svc.wait_listening(120)
                down.append((killed, time.monotonic()))
            if n == OUTAGE[0]:
                llm.faults.fail(10**9, status=503)
                outage.append(time.monotonic())
            if n == OUTAGE[1]:
                llm.faults.fail(0)
                outage.append(time.monotonic())
            time.sleep(max(0.0, started + (n + 1) * TRICKLE_S - time.monotonic()))

        def all_done() -> bool:
            rows = ledger.recent(limit=1000)
            return len(rows) == 2 * MAILS and all(r.status == Status.DONE for r in rows)

        # Failures of the outage are retried on the retry schedule (60 s backoff).
        wait_for(all_done, timeout=120, what="every message triaged")
    finally:
        probe.stop.set()
        watcher.join()
        code = svc.stop()
    assert code == 0, svc.log_tail()

    # exactly once: one ledger row per message, one forward per forwarded message
    rows = ledger.recent(limit=1000)
    assert Counter(r.mailbox for r in rows) == {GRAPH_BOX: MAILS, GMAIL_BOX: MAILS}
    retried = [r for r in rows if r.attempts > 0]
    assert retried, "the outage should have failed some messages, then retried them"
    forwarded = {subject(n % len(KINDS), n) for n in range(MAILS) if KINDS[n % len(KINDS)][2]}
    graph_fw = Counter(
        m.subject.removeprefix("FW: ")
        for address in ("rh@atelier-dupont.fr", "compta@atelier-dupont.fr")
        for m in graph.folder_messages(address, "Inbox")
    ) + Counter(
        m.subject.removeprefix("FW: ")
        for m in graph.folder_messages("commercial@atelier-dupont.fr", "Inbox")
    )
    gmail_fw = Counter(
        str(message_from_bytes(raw, policy=policy.default)["Subject"]).split(": ", 1)[-1]
        for _sender, _to, raw in gmail.outbound()
    )
    assert set(graph_fw) == forwarded and set(graph_fw.values()) == {1}
    assert set(gmail_fw) == forwarded and set(gmail_fw.values()) == {1}

    # /readyz: 200 whenever the service was up, except during the model outage
    (killed, back), (out_from, out_to) = down[0], outage
    for when, status in probe.ready:
        if killed <= when <= back or out_from <= when <= out_to + 5:
            continue
        assert status == 200, (round(when - started, 1), status)

    # memory: each run's RSS after its first minute stays within a bound of its median then
    for samples in probe.rss.values():
        settled = [kb for when, kb in samples if when - samples[0][0] >= 60]
        if len(settled) < 20:
            continue
        baseline = statistics.median(settled[: len(settled) // 3])
        assert max(settled) - baseline <= RSS_GROWTH_MB * 1024, (baseline, max(settled))
    log_text = log.read_text()
    assert "Traceback" not in log_text and '"event": "lease taken"' in log_text
    print(  # figures for the closing note (pytest -s)
        f"soak: {2 * MAILS} messages in {time.monotonic() - started:.0f} s, "
        f"{len(retried)} retried after the outage, readyz non-200 samples "
        f"{sum(1 for _, s in probe.ready if s != 200)} of {len(probe.ready)}, RSS MB per run "
        + ", ".join(
            f"{min(kb for _, kb in v) / 1024:.0f}-{max(kb for _, kb in v) / 1024:.0f}"
            for v in probe.rss.values()
        )
    )
