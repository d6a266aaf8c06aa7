"""`mailtriage run` as a real subprocess against both emulators (issue 6 acceptance).

The emulators run in this test process; the service is started with the console script,
receives Graph notifications and Gmail Pub/Sub pushes on its own webhook port, syncs on its
schedule, and is stopped with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailtriage.data import EXAMPLE_CONFIG
from mailtriage.sandbox.gmail import GmailEmulator
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.server import free_port
from mailtriage.sandbox.toml import write_toml

GRAPH_BOX = "contact@atelier-dupont.fr"
GMAIL_BOX = "info@atelier-dupont.com"
DEPARTMENTS = [
    "rh@atelier-dupont.fr",
    "sav@atelier-dupont.fr",
    "commercial@atelier-dupont.fr",
    "compta@atelier-dupont.fr",
]
TOPIC = "projects/sandbox-project/topics/mailtriage"
KEY_ENV = "MT_PROC_GMAIL_KEY"
MAILTRIAGE = Path(sys.executable).with_name("mailtriage")

# Clear enough for the embedded model: job applications (→ RH, forwarded, moved).
APPLICATION = (
    "Candidature spontanée {n}",
    "Bonjour, je vous adresse ma candidature au poste de technicien de maintenance. "
    "Vous trouverez mon CV et ma lettre de motivation en pièce jointe. Cordialement, Jean {n}",
)


@pytest.fixture
def emulators() -> Iterator[tuple[GraphEmulator, GmailEmulator]]:
    with GraphEmulator() as graph, GmailEmulator(users=[GMAIL_BOX]) as gmail:
        graph.add_mailbox(GRAPH_BOX)
        for address in DEPARTMENTS:
            graph.add_mailbox(address)
        yield graph, gmail


def config_for(
    tmp_path: Path, graph: GraphEmulator, gmail: GmailEmulator, port: int, name: str = "cfg"
) -> Path:
    data = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["classifier"] = "embedded"
    data["llm"] = {"model": ""}
    data["state"] = {"url": f"sqlite:///{tmp_path / 'state.sqlite'}"}
    data["runtime"] = {
        "sync_interval_s": 2,
        "host": "127.0.0.1",
        "port": port,
        "public_url": f"http://127.0.0.1:{port}",
        "max_attempts": 5,
    }
    data["graph"] = {"base_url": graph.base_url, "anonymous": True}
    data["gmail"] = {
        "service_account_env": KEY_ENV,
        "api_endpoint": gmail.url,
        "token_uri": gmail.token_uri,
        "certs_url": gmail.certs_url,
        "pubsub_topic": TOPIC,
        "push_audience": f"http://127.0.0.1:{port}/hooks/gmail",
        "push_service_account": gmail.signer.service_account,
        "retry_base_delay_s": 0.05,
    }
    data["mailbox"] = [
        {"provider": "graph", "address": GRAPH_BOX},
        {"provider": "gmail", "address": GMAIL_BOX, "categories": []},
    ]
    path = tmp_path / f"{name}.toml"
    write_toml(path, data)
    return path


class Service:
    """One `mailtriage run` subprocess."""

    def __init__(self, config: Path, port: int, env: dict[str, str], log: Path) -> None:
        self.port = port
        self.log = log
        self.proc = subprocess.Popen(
            [str(MAILTRIAGE), "run", "-c", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited: {self.log.read_text()[-3000:]}")
            try:
                resp = httpx.get(self.url("/readyz"), timeout=2)
                if resp.status_code == 200:
                    return dict(resp.json())
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"service not ready: {self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def env_for(gmail: GmailEmulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTRIAGE_")}
    env[KEY_ENV] = gmail.service_account_json()
    return env


def application(n: int, to: str) -> EmailMessage:
    msg = EmailMessage()
    subject, body = APPLICATION
    msg["From"] = f"Jean {n} <jean.{n}@example.org>"
    msg["To"] = to
    msg["Subject"] = subject.format(n=n)
    msg["Message-ID"] = f"<app-{n}-{to}@example.org>"
    msg.set_content(body.format(n=n))
    return msg


def deliver(graph: GraphEmulator, gmail: GmailEmulator, n: int) -> None:
    subject, body = APPLICATION
    graph.deliver(
        GRAPH_BOX,
        subject=subject.format(n=n),
        body=body.format(n=n),
        sender=f"jean.{n}@example.org",
        internet_message_id=f"<app-{n}-graph@example.org>",
    )
    gmail.deliver(GMAIL_BOX, application(n, GMAIL_BOX).as_bytes())


def forwards(graph: GraphEmulator, gmail: GmailEmulator) -> tuple[Counter[str], Counter[str]]:
    """Forwarded copies per original subject, at the RH mailbox (Graph) and Gmail's outbox."""
    graph_fw = Counter(
        m.subject.removeprefix("FW: ")
        for m in graph.folder_messages("rh@atelier-dupont.fr", "Inbox")
    )
    gmail_fw: Counter[str] = Counter()
    for _sender, _to, raw in gmail.outbound():
        subject = str(message_from_bytes(raw, policy=policy.default)["Subject"] or "")
        gmail_fw[subject.split(": ", 1)[-1]] += 1
    return graph_fw, gmail_fw


def wait_for(predicate: Any, timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def gmail_done(gmail: GmailEmulator, count: int) -> bool:
    labelled = [m for m in gmail.messages(GMAIL_BOX) if "INBOX" not in m.labels]
    return len(labelled) >= count


def graph_done(graph: GraphEmulator, count: int) -> bool:
    return len(graph.folder_messages(GRAPH_BOX, "Inbox/Triage/RH")) >= count


def test_push_schedule_sigterm_restart_and_health(
    emulators: tuple[GraphEmulator, GmailEmulator], tmp_path: Path
) -> None:
    graph, gmail = emulators
    port = free_port()
    config = config_for(tmp_path, graph, gmail, port)
    gmail.subscribe_push(TOPIC, f"http://127.0.0.1:{port}/hooks/gmail")
    env = env_for(gmail)
    log = tmp_path / "service.log"

    svc = Service(config, port, env, log)
    ready = svc.wait_ready()
    assert set(ready["mailboxes"]) == {GRAPH_BOX, GMAIL_BOX} and ready["database"] is True
    assert httpx.get(svc.url("/healthz")).text == "ok\n"
    assert len(graph.subscriptions()) == 1  # push installed for the Graph mailbox

    # a first message through push (and the schedule as a fallback)
    deliver(graph, gmail, 0)
    wait_for(lambda: graph_done(graph, 1) and gmail_done(gmail, 1), what="first message")

    # a burst, then SIGTERM in the middle of it
    for n in range(1, 16):
        deliver(graph, gmail, n)
    time.sleep(0.5)
    assert svc.stop() == 0
    assert '"event": "stopped"' in log.read_text()  # graceful: in-flight work finished

    # restart: everything delivered is triaged, nothing twice
    svc = Service(config, port, env, log)
    svc.wait_ready()
    wait_for(lambda: graph_done(graph, 16) and gmail_done(gmail, 16), what="the whole burst")
    text = httpx.get(svc.url("/metrics")).text
    assert "mailtriage_messages_total" in text and "mailtriage_sync_lag_seconds" in text
    assert svc.stop() == 0

    graph_fw, gmail_fw = forwards(graph, gmail)
    expected = {APPLICATION[0].format(n=n) for n in range(16)}
    assert set(graph_fw) == expected and set(graph_fw.values()) == {1}
    assert set(gmail_fw) == expected and set(gmail_fw.values()) == {1}
    assert graph.folder_messages(GRAPH_BOX, "Inbox") == []


def test_two_processes_share_one_database(
    emulators: tuple[GraphEmulator, GmailEmulator], tmp_path: Path
) -> None:
    graph, gmail = emulators
    ports = free_port(), free_port()
    env = env_for(gmail)
    configs = [config_for(tmp_path, graph, gmail, p, name=f"cfg{i}") for i, p in enumerate(ports)]
    for p in ports:
        gmail.subscribe_push(TOPIC, f"http://127.0.0.1:{p}/hooks/gmail", name=f"sub-{p}")
    services = [
        Service(c, p, env, tmp_path / f"s{i}.log")
        for i, (c, p) in enumerate(zip(configs, ports, strict=True))
    ]
    for s in services:
        s.wait_ready()
    for n in range(12):
        deliver(graph, gmail, n)
    wait_for(lambda: graph_done(graph, 12) and gmail_done(gmail, 12), what="both mailboxes")
    time.sleep(3)  # let a further scheduled round pass: it must find nothing to do
    for s in services:
        assert s.stop() == 0
    graph_fw, gmail_fw = forwards(graph, gmail)
    assert sum(graph_fw.values()) == 12 and set(graph_fw.values()) == {1}
    assert sum(gmail_fw.values()) == 12 and set(gmail_fw.values()) == {1}
