"""`mailtriage run` as a real subprocess against both emulators (issue 6 acceptance).

The emulators run in this test process; the service is started with the console script,
receives Graph notifications and Gmail Pub/Sub pushes on its own webhook port, syncs on its
schedule, and is stopped with SIGTERM.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from mailtriage.sandbox.gmail import GmailEmulator
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.process import (
    GMAIL_BOX,
    GRAPH_BOX,
    TOPIC,
    ServiceProcess,
    add_mailboxes,
    config_data,
    service_env,
    wait_for,
    write_config,
)
from mailtriage.sandbox.server import free_port

# Clear enough for the embedded model: job applications (→ RH, forwarded, moved).
APPLICATION = (
    "Candidature spontanée {n}",
    "Bonjour, je vous adresse ma candidature au poste de technicien de maintenance. "
    "Vous trouverez mon CV et ma lettre de motivation en pièce jointe. Cordialement, Jean {n}",
)


@pytest.fixture
def emulators() -> Iterator[tuple[GraphEmulator, GmailEmulator]]:
    with GraphEmulator() as graph, GmailEmulator() as gmail:
        add_mailboxes(graph, gmail)
        yield graph, gmail


def config_for(
    tmp_path: Path,
    graph: GraphEmulator,
    gmail: GmailEmulator,
    port: int,
    name: str = "cfg",
    **options: object,
) -> Path:
    """The emulators' configuration (`push`, `sync_interval_s` as in `config_data`)."""
    data = config_data(tmp_path, graph, gmail, port, **options)  # type: ignore[arg-type]
    return write_config(tmp_path, data, name)


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


def gmail_done(gmail: GmailEmulator, count: int) -> bool:
    """Received messages moved out of the inbox (the service's own forwards not counted)."""
    moved = [m for m in gmail.messages(GMAIL_BOX) if not {"INBOX", "SENT"} & set(m.labels)]
    return len(moved) >= count


def graph_done(graph: GraphEmulator, count: int) -> bool:
    return len(graph.folder_messages(GRAPH_BOX, "Inbox/Triage/RH")) >= count


def test_push_schedule_sigterm_restart_and_health(
    emulators: tuple[GraphEmulator, GmailEmulator], tmp_path: Path
) -> None:
    graph, gmail = emulators
    port = free_port()
    config = config_for(tmp_path, graph, gmail, port)
    gmail.subscribe_push(TOPIC, f"http://127.0.0.1:{port}/hooks/gmail")
    env = service_env(gmail)
    log = tmp_path / "service.log"

    svc = ServiceProcess(config, port, env, log)
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
    svc = ServiceProcess(config, port, env, log)
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
    env = service_env(gmail)
    configs = [config_for(tmp_path, graph, gmail, p, name=f"cfg{i}") for i, p in enumerate(ports)]
    for p in ports:
        gmail.subscribe_push(TOPIC, f"http://127.0.0.1:{p}/hooks/gmail", name=f"sub-{p}")
    services = [
        ServiceProcess(c, p, env, tmp_path / f"s{i}.log")
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


def test_without_push_the_schedule_alone_brings_mail_in(
    emulators: tuple[GraphEmulator, GmailEmulator], tmp_path: Path
) -> None:
    """No public URL, no Pub/Sub topic: mail only lands in the emulators, and the service
    must fetch it by itself, within two sync intervals, every time."""
    graph, gmail = emulators
    port = free_port()
    interval = 4
    config = config_for(tmp_path, graph, gmail, port, push=False, sync_interval_s=interval)
    svc = ServiceProcess(config, port, service_env(gmail), tmp_path / "service.log")
    svc.wait_ready()
    assert graph.subscriptions() == [] and gmail.state.users[GMAIL_BOX].watch is None
    time.sleep(1)
    for n in range(3):
        deliver(graph, gmail, n)
        started = time.monotonic()
        wait_for(
            lambda n=n: graph_done(graph, n + 1) and gmail_done(gmail, n + 1),
            timeout=2 * interval + 2,
            what=f"message {n} without push",
        )
        time.sleep(max(0.0, 1.5 - (time.monotonic() - started)))  # land between syncs
    assert svc.readyz() == 200
    assert svc.stop() == 0
    graph_fw, gmail_fw = forwards(graph, gmail)
    assert sum(graph_fw.values()) == 3 and sum(gmail_fw.values()) == 3


def test_start_up_failures_are_one_line_with_their_exit_code(
    emulators: tuple[GraphEmulator, GmailEmulator], tmp_path: Path
) -> None:
    import socket
    import subprocess

    from mailtriage.sandbox.process import KEY_ENV, MAILTRIAGE

    graph, gmail = emulators

    def run(config: Path, env: dict[str, str]) -> tuple[int, list[str]]:
        proc = subprocess.run(
            [str(MAILTRIAGE), "run", "-c", str(config)],
            env={**env, "COLUMNS": "300"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        return proc.returncode, proc.stderr.strip().splitlines()

    env = service_env(gmail)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    cases = [
        ({}, env, 4, f"runtime.port: cannot listen on 127.0.0.1:{port}"),
        ({}, {k: v for k, v in env.items() if k != KEY_ENV}, 2, f"variable {KEY_ENV} is not"),
        ({"state": {"url": "sqlite:////nonexistent/x.sqlite"}}, env, 2, "does not exist"),
        ({"state": {"url": "postgres ql://x"}}, env, 2, "is not a database URL"),
        ({"state": {"url": "oracle://db/x"}}, env, 2, "unsupported database 'oracle'"),
        (
            {"state": {"url": "postgresql+psycopg://mt:pw@127.0.0.1:1/mt"}},
            env,
            3,
            "state database postgresql+psycopg://mt:***@127.0.0.1:1/mt: cannot connect",
        ),
    ]
    try:
        for i, (change, case_env, code, text) in enumerate(cases):
            data = config_data(tmp_path, graph, gmail, port)
            data.update(change)
            returned, lines = run(write_config(tmp_path, data, f"c{i}"), case_env)
            assert (returned, len(lines)) == (code, 1), (text, lines)
            assert text in lines[0] and "Traceback" not in lines[0]
    finally:
        busy.close()
