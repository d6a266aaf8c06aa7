"""Peak memory of `mailtriage run` and `mailtriage classify` on hostile or huge input.

    .venv/bin/python bench/memory.py [--case webhook --case mail --case mail3 --case classify]
                                     [--webhook-mb 400] [--mail-mb 50] [--classify-mb 200]

Starts the Graph and Gmail emulators in this process and `mailtriage run` as a subprocess
(embedded classifier, SQLite, push on), then for each case prints the service's RSS before,
its peak during the case (VmHWM, reset with /proc/<pid>/clear_refs just before) and what the
case added:

- webhook: one unauthenticated POST of `--webhook-mb` MB to /hooks/graph (streamed, with a
  Content-Length), its status and time, and the worst /healthz latency meanwhile (how long
  the event loop stalled);
- mail: one quoted-printable mail of `--mail-mb` MB delivered to the Gmail mailbox, and the
  same text as a Graph message body, each waited for until the ledger records it;
- mail3: three such Gmail mails at once;
- under: the same for a mail of `--under-mb` MB, under `runtime.max_message_mb` (25), which
  is downloaded and parsed whole;
- classify: `mailtriage classify` on a .eml whose body is one base64 line of
  `--classify-mb` MB; peak RSS of that process (ru_maxrss) minus the same command on a small
  mail.

The mails come from a sender the configuration routes to advertising (label and move, no
forward), so the figures are intake's; a forward of a large Gmail message adds the cost of
building and sending the copy. Before the cases, one small mail per provider is triaged, so
that loading the embedded model (about 120 MB, once) is not counted in the first case.
`--code DIR` runs the service and `classify` from another checkout (PYTHONPATH), to
measure the code before a change with the same script. Figures are from a shared
2-core machine: RSS is steady, times are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import quopri
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailtriage.sandbox.gmail import GmailEmulator  # noqa: E402
from mailtriage.sandbox.graph import GraphEmulator  # noqa: E402
from mailtriage.sandbox.process import (  # noqa: E402
    GMAIL_BOX,
    GRAPH_BOX,
    MAILTRIAGE,
    ServiceProcess,
    add_mailboxes,
    config_data,
    service_env,
    wait_for,
    write_config,
)
from mailtriage.sandbox.server import free_port  # noqa: E402

MB = 1024 * 1024
SUBJECT = "Newsletter de novembre : promotions"
PARAGRAPH = (
    "Découvrez nos nouveautés de la saison : remises exceptionnelles, élégance à la française "
    "et livraison offerte dès cinquante euros d'achat. Désabonnement en un clic. "
)


def qp_body(size: int) -> bytes:
    """About `size` bytes of quoted-printable French text (soft line breaks, =C3=A9...)."""
    block = quopri.encodestring((PARAGRAPH * 200).encode("utf-8"))
    return (block * (size // len(block) + 1))[:size].rsplit(b"\n", 1)[0] + b"\n"


def qp_mail(size: int, n: int) -> bytes:
    head = (
        f"From: Boutique <news@boutique.example>\r\nTo: {GMAIL_BOX}\r\n"
        f"Subject: {SUBJECT} {n}\r\nMessage-ID: <big-{n}-{time.time_ns()}@boutique.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    return head.encode() + qp_body(size)


def base64_line_mail(path: Path, size: int) -> None:
    """A text/plain mail whose body is one base64 line of `size` bytes, written in chunks."""
    head = (
        "From: x@example.org\r\nTo: contact@atelier-dupont.fr\r\nSubject: one long line\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    chunk = b"QUJD" * (MB // 4)
    with path.open("wb") as out:
        out.write(head.encode())
        for _ in range(size // len(chunk)):
            out.write(chunk)
        out.write(b"\r\n")


def rows(state: Path, mailbox: str) -> int:
    with sqlite3.connect(state) as db:
        try:
            (count,) = db.execute(
                "SELECT count(*) FROM messages WHERE mailbox = ? AND status != 'pending'",
                (mailbox,),
            ).fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(count)


class Watch:
    """Worst /healthz latency while a case runs (the event loop's longest stall)."""

    def __init__(self, svc: ServiceProcess) -> None:
        self.svc = svc
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                with contextlib.suppress(httpx.HTTPError):
                    client.get(self.svc.url("/healthz"))
                self.worst = max(self.worst, time.perf_counter() - started)
                time.sleep(0.05)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def settle(svc: ServiceProcess, seconds: float = 3.0) -> int:
    time.sleep(seconds)
    return svc.rss_kb()


def row(case: str, before_kb: int, peak_kb: int, note: str) -> None:
    added = max(0, peak_kb - before_kb) / 1024
    print(
        f"{case:<34} {before_kb / 1024:>9.0f} {peak_kb / 1024:>9.0f} {added:>9.0f}  {note}",
        flush=True,
    )


def case_webhook(svc: ServiceProcess, size: int) -> None:
    before = settle(svc)
    svc.reset_peak()

    def body() -> Iterator[bytes]:
        yield b'{"value": [' + b" " * (MB - 11)
        blank = b" " * MB
        for _ in range(size // MB - 1):
            yield blank

    started = time.perf_counter()
    with Watch(svc) as watch:
        try:
            resp = httpx.post(
                svc.url("/hooks/graph"),
                content=body(),
                headers={"content-type": "application/json", "content-length": str(size)},
                timeout=300,
            )
            status = str(resp.status_code)
        except httpx.HTTPError as exc:
            status = f"{type(exc).__name__}"
        time.sleep(1)
    took = time.perf_counter() - started
    row(
        f"webhook POST {size // MB} MB",
        before,
        svc.peak_kb(),
        f"HTTP {status} in {took:.1f} s; worst /healthz {watch.worst * 1000:.0f} ms",
    )


def case_mail(
    svc: ServiceProcess,
    graph: GraphEmulator,
    gmail: GmailEmulator,
    state: Path,
    size: int,
    count: int,
    providers: tuple[str, ...],
    *,
    report: bool = True,
) -> None:
    for provider in providers:
        before = settle(svc)
        svc.reset_peak()
        box = GMAIL_BOX if provider == "gmail" else GRAPH_BOX
        start_rows = rows(state, box)
        started = time.perf_counter()
        for n in range(count):
            if provider == "gmail":
                gmail.deliver(GMAIL_BOX, qp_mail(size, n))
            else:
                text = qp_body(size).decode("ascii")
                graph.deliver(
                    GRAPH_BOX,
                    subject=f"{SUBJECT} {n}",
                    body=quopri.decodestring(text).decode("utf-8", "replace"),
                    sender="news@boutique.example",
                )
        try:
            target = start_rows + count
            wait_for(lambda b=box, t=target: rows(state, b) >= t, 600, "the big mails")
            note = f"recorded in {time.perf_counter() - started:.1f} s"
        except AssertionError:
            note = "NOT recorded within 600 s"
        if svc.proc.poll() is not None:
            note += f"; service exited {svc.proc.returncode}"
        label = f"{provider} {count} x {size / MB:.0f} MB QP mail"
        if report:
            row(label, before, svc.peak_kb() if svc.proc.poll() is None else 0, note)


def code_env(code: str | None) -> dict[str, str]:
    return {"PYTHONPATH": str(Path(code).resolve())} if code else {}


def classify_peak_kb(eml: Path, config: Path, env: dict[str, str]) -> tuple[int, int]:
    proc = subprocess.Popen(
        [str(MAILTRIAGE), "classify", "-c", str(config), "--json", str(eml)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss, proc.returncode


def case_classify(tmp: Path, config: Path, size: int, env: dict[str, str]) -> None:
    small = tmp / "small.eml"
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "x@example.org", GRAPH_BOX, "hello"
    msg.set_content("Bonjour, une question sur ma commande.")
    small.write_bytes(msg.as_bytes())
    big = tmp / "big.eml"
    base64_line_mail(big, size)
    base, _ = classify_peak_kb(small, config, env)
    started = time.perf_counter()
    peak, code = classify_peak_kb(big, config, env)
    took = time.perf_counter() - started
    row(
        f"classify {size // MB} MB base64 line",
        base,
        peak,
        f"exit {code} in {took:.1f} s (before = same command on a small mail)",
    )
    big.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    choices = ["webhook", "mail", "mail3", "under", "classify"]
    parser.add_argument("--case", action="append", choices=choices)
    parser.add_argument("--webhook-mb", type=int, default=400)
    parser.add_argument("--mail-mb", type=int, default=50)
    parser.add_argument("--under-mb", type=int, default=20)
    parser.add_argument("--classify-mb", type=int, default=200)
    parser.add_argument("--providers", default="gmail,graph", help="for the mail case")
    parser.add_argument("--code", help="run mailtriage from this checkout (before/after)")
    args = parser.parse_args()
    cases = args.case or ["webhook", "mail", "mail3", "under", "classify"]
    providers = tuple(p for p in args.providers.split(",") if p)

    print(f"{'case':<34} {'RSS MB':>9} {'peak MB':>9} {'added MB':>9}  note")
    with (
        tempfile.TemporaryDirectory() as tmpdir,
        GraphEmulator() as graph,
        GmailEmulator() as gmail,
    ):
        tmp = Path(tmpdir)
        add_mailboxes(graph, gmail)
        port = free_port()
        data = config_data(tmp, graph, gmail, port, push=True, sync_interval_s=5)
        for category in data["category"]:  # deterministic routing: no model, no forward
            if category["key"] == "publicite":
                category["domains"] = ["boutique.example"]
        config = write_config(tmp, data)
        state = tmp / "state.sqlite"
        if {"webhook", "mail", "mail3", "under"} & set(cases):
            gmail.subscribe_push(data["gmail"]["pubsub_topic"], data["gmail"]["push_audience"])
            env = service_env(gmail, **code_env(args.code))
            svc = ServiceProcess(config, port, env, tmp / "service.log")
            try:
                svc.wait_ready(120)
                case_mail(svc, graph, gmail, state, 4096, 1, ("gmail", "graph"), report=False)
                if "webhook" in cases:
                    case_webhook(svc, args.webhook_mb * MB)
                if "mail" in cases:
                    mb = args.mail_mb * MB
                    case_mail(svc, graph, gmail, state, mb, 1, providers)
                if "mail3" in cases:
                    case_mail(svc, graph, gmail, state, args.mail_mb * MB, 3, ("gmail",))
                if "under" in cases:
                    case_mail(svc, graph, gmail, state, args.under_mb * MB, 1, providers)
            finally:
                if svc.proc.poll() is None:
                    svc.stop()
                else:
                    print(svc.log_tail(), file=sys.stderr)
        if "classify" in cases:
            case_classify(tmp, config, args.classify_mb * MB, code_env(args.code))


if __name__ == "__main__":
    main()
