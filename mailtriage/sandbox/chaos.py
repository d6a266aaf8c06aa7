"""kill -9 chaos against `mailtriage run`: the harness behind `bench/chaos.py` and its test.

The Graph and Gmail emulators and a sandbox model run in this process; `mailtriage run` runs
as a subprocess against them, its provider traffic passing through a byte-counting TCP
proxy. While mail is delivered to both providers, the service is killed with SIGKILL, again
and again, in four ways:

- at a random moment;
- through an emulator hook, right after a given kind of write was executed and before its
  answer left (forward, move, PATCH; messages.send, messages.modify);
- by the proxy, after an arbitrary number of bytes, i.e. between two arbitrary bytes of an
  HTTP exchange (a request half-sent, or an answer half-received);
- and, without a kill, writes whose answer is lost (dropped, cut, 503/504) after they ran.

It is restarted after each kill. At the end every delivered message is checked in the
emulators: triaged or not, forwarded how many times, moved how many times, and what is left
in Drafts.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import random
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

from mailtriage.connectors.graph.convert import MARKER_ID
from mailtriage.core.config import Settings, load_settings
from mailtriage.core.ledger import Ledger, Status
from mailtriage.sandbox.faults import Executed
from mailtriage.sandbox.gmail import GmailEmulator
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.llm import SandboxLLM
from mailtriage.sandbox.process import (
    DEPARTMENTS,
    GMAIL_BOX,
    GRAPH_BOX,
    TOPIC,
    ServiceProcess,
    add_mailboxes,
    config_data,
    service_env,
    write_toml,
)
from mailtriage.sandbox.server import free_port

# Writes after which a hook kills the service (Graph, Gmail).
HOOK_KINDS = (
    ("graph", "forward"),
    ("graph", "move"),
    ("graph", "patch"),
    ("gmail", "messages.send"),
    ("gmail", "messages.modify"),
)
LOSS_MODES = ("drop", "truncate", "503", "504")
# Subject and body per category, with the sandbox model's keywords for that department.
MAILS = {
    "rh": (
        "Candidature spontanée {n}",
        "Bonjour, je vous adresse ma candidature au poste de technicien. "
        "Vous trouverez mon CV et ma lettre de motivation. Cordialement, Jean {n}",
    ),
    "fournisseurs": (
        "Facture F-{n}",
        "Veuillez trouver ci-joint notre facture fournisseur F-{n}, règlement sous 30 jours.",
    ),
    "clients": (
        "Commande {n} non reçue",
        "Ma commande n°{n} n'est toujours pas arrivée, le colis est perdu. "
        "Je demande un remboursement.",
    ),
    "devis": (
        "Demande de devis {n}",
        "Pourriez-vous nous faire un devis pour 200 pièces ? Demande de prix et catalogue.",
    ),
    "publicite": (
        "Promo {n} : -30% sur tout",
        "Notre newsletter : promotion exceptionnelle, -30% ! Pour vous désabonner, unsubscribe.",
    ),
}
GRAPH_KEYS = ("rh", "fournisseurs", "clients", "devis", "publicite")
GMAIL_KEYS = ("clients", "devis", "publicite")


@dataclass
class ChaosConfig:
    """What to run: how much mail, how many kills, of which kinds, and where."""

    workdir: Path
    messages: int = 200  # over both providers, half each
    kills: int = 100
    seed: int = 1
    llm_latency_s: float = 0.05
    state_url: str | None = None  # None: SQLite in `workdir`
    # Shares of kills by kind; the rest are random-moment kills.
    hook_share: float = 0.45
    byte_share: float = 0.25
    # Chance, per kill cycle, to also lose the answer of one write (no kill).
    loss_share: float = 0.3
    backlog: int = 6  # messages kept waiting so that a kill always has work to hit
    random_window_s: float = 6.0  # a random kill lands this long after a restart, at most
    hook_wait_s: float = 8.0  # how long an armed hook or byte count waits for traffic
    # Graph change notifications (a subscription renewed at each start, ~2 s of msgraph-sdk
    # model loading); without them the scheduled sync drives Graph intake.
    graph_push: bool = True
    # `mailtriage run` processes on the one state database; each kill hits one of them.
    processes: int = 1
    drain_timeout_s: float = 180.0
    service_log_level: str = "WARNING"
    log: Callable[[str], None] = field(default=lambda _: None)


@dataclass
class ChaosReport:
    kills: Counter[str] = field(default_factory=Counter)
    losses: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    lost: int = 0
    not_triaged: int = 0
    duplicate_forwards: int = 0
    missing_forwards: int = 0
    duplicate_moves: int = 0
    orphan_drafts: int = 0
    restart_to_work_s: list[float] = field(default_factory=list)
    extra_restarts: int = 0
    killed_before_work: int = 0  # restarts killed again before their first write
    replayed_modifies: int = 0  # Gmail modifies asking a move already done (set-based: no-op)
    duration_s: float = 0.0
    details: list[str] = field(default_factory=list)

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values())

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.not_triaged
            or self.duplicate_forwards
            or self.missing_forwards
            or self.duplicate_moves
            or self.orphan_drafts
        )

    def table(self) -> str:
        mean = statistics.mean(self.restart_to_work_s) if self.restart_to_work_s else 0.0
        p95 = (
            sorted(self.restart_to_work_s)[int(0.95 * (len(self.restart_to_work_s) - 1))]
            if self.restart_to_work_s
            else 0.0
        )
        rows = [
            ("kills", str(self.total_kills)),
            ("messages", str(self.messages)),
            ("lost", str(self.lost)),
            ("not triaged", str(self.not_triaged)),
            ("duplicate forwards", str(self.duplicate_forwards)),
            ("missing forwards", str(self.missing_forwards)),
            ("duplicate moves", str(self.duplicate_moves)),
            ("orphan drafts", str(self.orphan_drafts)),
            (
                "mean restart-to-work (s)",
                f"{mean:.2f} (p95 {p95:.2f}, n={len(self.restart_to_work_s)})",
            ),
        ]
        width = max(len(k) for k, _ in rows)
        out = [f"| {'':{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
        out += [f"| {k:{width}} | {v} |" for k, v in rows]
        out.append("")
        out.append("kills by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(self.kills.items())))
        out.append(
            "answers lost without a kill: "
            + (", ".join(f"{k} {n}" for k, n in sorted(self.losses.items())) or "none")
        )
        out.append(f"Gmail modifies replayed with no effect: {self.replayed_modifies}")
        out.append(f"restarts killed again before their first write: {self.killed_before_work}")
        out.append(f"restarts that were not kills: {self.extra_restarts}")
        out.append(f"wall time: {self.duration_s:.0f} s")
        return "\n".join(out)


class ByteProxy:
    """A TCP proxy that can kill the client after exactly N more bytes, either direction."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._lock = threading.Lock()
        self._left: int | None = None
        self._on_fire: Callable[[], object] | None = None
        self.fired = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True, name="byte-proxy")
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ByteProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def arm(self, after_bytes: int, on_fire: Callable[[], object]) -> None:
        with self._lock:
            self._left, self._on_fire = after_bytes, on_fire
            self.fired.clear()

    def disarm(self) -> None:
        with self._lock:
            self._left = self._on_fire = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            await asyncio.start_server(self._client, "127.0.0.1", self.port)
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer, writer), self._pipe(up_reader, writer, up_writer)
        )

    def _take(self, n: int) -> tuple[int, Callable[[], object] | None]:
        """How many of `n` bytes may pass, and the kill to run after them (if it is due)."""
        with self._lock:
            if self._left is None:
                return n, None
            if n < self._left:
                self._left -= n
                return n, None
            passed, fire = self._left, self._on_fire
            self._left = self._on_fire = None
            return passed, fire

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, other: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await src.read(65536):
                passed, fire = self._take(len(data))
                dst.write(data[:passed])
                await dst.drain()
                if fire is not None:
                    fire()
                    self.fired.set()
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (dst, other):
                with contextlib.suppress(Exception):
                    w.close()


class Service:
    """One `mailtriage run` (a `ServiceProcess`), killed and restarted at will."""

    def __init__(
        self, config: Path, port: int, env: dict[str, str], log: Path, level: str = "WARNING"
    ) -> None:
        self.config, self.port, self.env, self.log, self.level = config, port, env, log, level
        self.process: ServiceProcess | None = None
        self._lock = threading.Lock()

    def start(self) -> float:
        with self._lock:
            self.process = ServiceProcess(
                self.config, self.port, self.env, self.log, "--log-level", self.level
            )
            return time.monotonic()

    def kill(self) -> bool:
        """SIGKILL and reap; False when it was not running (hooks and proxies may race)."""
        with self._lock:
            if not self.alive():
                return False
            assert self.process is not None
            self.process.kill()
            return True

    def alive(self) -> bool:
        return self.process is not None and self.process.proc.poll() is None

    def wait_up(self) -> None:
        assert self.process is not None
        self.process.wait_listening()

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            try:
                self.process.stop()
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Delivered:
    provider: str
    ref: str  # Graph immutable id / Gmail message id
    message_id: str  # RFC 822 Message-ID
    category: str


class Chaos:
    """Runs one chaos session (see the module docstring)."""

    def __init__(self, cfg: ChaosConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.report = ChaosReport()
        self.delivered: list[Delivered] = []
        self._n = 0
        self._armed_hook: tuple[str, str] | None = None
        self._hook_fired = threading.Event()
        self._restarts: list[tuple[float, bool]] = []  # (restart time, work pending then)
        self._kill_times: list[float] = []
        self.services: list[Service] = []
        self.victim: Service | None = None

    # -- set-up ------------------------------------------------------------------------

    def _config(
        self,
        graph: GraphEmulator,
        gmail: GmailEmulator,
        proxies: list[ByteProxy],
        llm: SandboxLLM,
        port: int,
        index: int = 0,
    ) -> Path:
        """The emulators' configuration (`sandbox.process`), with the sandbox model, the
        chosen ledger, and both providers reached through the byte proxies."""
        graph_url, gmail_url = proxies[0].url, proxies[1].url
        data = config_data(self.cfg.workdir, graph, gmail, port, push=self.cfg.graph_push)
        data["classifier"] = "llm"
        data["llm"] = {"base_url": llm.base_url, "model": llm.model, "few_shot": 0}
        url = self.cfg.state_url or f"sqlite:///{self.cfg.workdir / 'state.sqlite'}"
        data["state"] = {"url": url}
        data["runtime"]["max_attempts"] = 10
        data["graph"]["base_url"] = graph_url + "/v1.0"
        # The emulator files a forward in Sent Items as it answers: a forward interrupted
        # mid-request is looked for again after seconds, not Graph's 10 minutes.
        data["graph"]["sent_copy_grace_s"] = 5.0
        data["gmail"]["api_endpoint"] = gmail_url + "/"
        if not self.cfg.graph_push:  # Gmail keeps its Pub/Sub push either way
            data["gmail"] |= {
                "pubsub_topic": TOPIC,
                "push_audience": f"http://127.0.0.1:{port}/hooks/gmail",
                "push_service_account": gmail.signer.service_account,
            }
        # A backfill day: mail that arrives before the very first sync is not skipped.
        data["mailbox"] = [
            {"provider": "graph", "address": GRAPH_BOX, "backfill_days": 1},
            {
                "provider": "gmail",
                "address": GMAIL_BOX,
                "categories": list(GMAIL_KEYS),
                "backfill_days": 1,
            },
        ]
        path = self.cfg.workdir / f"chaos{index or ''}.toml"
        write_toml(path, data)
        return path

    # -- mail --------------------------------------------------------------------------

    def _deliver_one(self, graph: GraphEmulator, gmail: GmailEmulator) -> None:
        n = self._n = self._n + 1
        if n % 2:
            key = self.rng.choice(GRAPH_KEYS)
            subject, body = MAILS[key]
            mid = f"<chaos-{n}-graph@example.org>"
            stored = graph.deliver(
                GRAPH_BOX,
                subject=subject.format(n=n),
                body=body.format(n=n),
                sender=f"client.{n}@example.org",
                internet_message_id=mid,
            )
            self.delivered.append(Delivered("graph", stored.immutable_id, mid, key))
        else:
            key = self.rng.choice(GMAIL_KEYS)
            subject, body = MAILS[key]
            msg = EmailMessage()
            msg["From"] = f"Client {n} <client.{n}@example.org>"
            msg["To"] = GMAIL_BOX
            msg["Subject"] = subject.format(n=n)
            msg["Date"] = format_datetime(datetime.now().astimezone())
            mid = make_msgid(idstring=f"chaos{n}", domain="example.org")
            msg["Message-ID"] = mid
            msg.set_content(body.format(n=n))
            ref = gmail.deliver(GMAIL_BOX, msg.as_bytes())
            self.delivered.append(Delivered("gmail", ref, mid, key))

    def _done(self, graph: GraphEmulator, gmail: GmailEmulator, d: Delivered) -> bool:
        if d.provider == "graph":
            m = graph.message(GRAPH_BOX, d.ref)
            return m is not None and MARKER_ID in m.ext_props
        return self.processed_label in gmail.label_names(GMAIL_BOX, d.ref)

    def _pending(self, graph: GraphEmulator, gmail: GmailEmulator) -> int:
        return sum(1 for d in self.delivered if not self._done(graph, gmail, d))

    # -- kills -------------------------------------------------------------------------

    def _hook(self, provider: str) -> Callable[[Executed], None]:
        def on_write(done: Executed) -> None:
            if self._armed_hook == (provider, done.kind):
                self._armed_hook = None
                if self.victim is not None and self.victim.kill():
                    self._hook_fired.set()

        return on_write

    def _plan(self) -> list[str]:
        """The kinds of the kills to come, in a seeded order: every hook kind in turn,
        the byte-count kills, the rest at random moments."""
        cfg, rng = self.cfg, random.Random(self.cfg.seed)
        hooks = round(cfg.kills * cfg.hook_share)
        plan = [f"hook:{p}:{k}" for p, k in (HOOK_KINDS * cfg.kills)[:hooks]]
        plan += ["bytes"] * round(cfg.kills * cfg.byte_share)
        plan += ["random"] * (cfg.kills - len(plan))
        rng.shuffle(plan)
        return plan

    def _kill_once(self, how: str, proxies: list[ByteProxy]) -> str | None:
        """One kill as planned; its name, or None when nothing was hit."""
        service = self.victim = self.rng.choice(self.services)
        if how.startswith("hook:"):
            _, provider, kind = how.split(":", 2)
            self._hook_fired.clear()
            self._armed_hook = (provider, kind)
            fired = self._hook_fired.wait(self.cfg.hook_wait_s)
            self._armed_hook = None
            if fired:
                return f"after {provider} {kind}"
            return "random moment" if service.kill() else None  # that write did not come
        if how == "bytes":
            proxy = self.rng.choice(proxies)
            proxy.arm(self.rng.randint(1, 12_000), service.kill)
            fired = proxy.fired.wait(self.cfg.hook_wait_s)
            proxy.disarm()
            which = "graph" if proxy is proxies[0] else "gmail"
            if fired:
                return f"between bytes ({which})"
            return "random moment" if service.kill() else None
        time.sleep(self.rng.uniform(0.0, self.cfg.random_window_s))
        return "random moment" if service.kill() else None

    def _maybe_lose(self, graph: GraphEmulator, gmail: GmailEmulator) -> None:
        if self.rng.random() >= self.cfg.loss_share:
            return
        provider, kind = self.rng.choice(HOOK_KINDS)
        mode = self.rng.choice(LOSS_MODES)
        emu: Any = graph if provider == "graph" else gmail
        emu.lose_response(kind, mode)
        self.report.losses[f"{provider} {kind} {mode}"] += 1

    # -- the run -----------------------------------------------------------------------

    def run(self) -> ChaosReport:
        cfg = self.cfg
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with (
            GraphEmulator() as graph,
            GmailEmulator() as gmail,
            SandboxLLM() as llm,
        ):
            llm.faults.set_latency(cfg.llm_latency_s)
            add_mailboxes(graph, gmail)
            proxies = [
                ByteProxy(int(graph.url.rsplit(":", 1)[1])).start(),
                ByteProxy(gmail.port).start(),
            ]
            env = service_env(gmail)
            for i in range(cfg.processes):
                port = free_port()
                config = self._config(graph, gmail, proxies, llm, port, i)
                gmail.subscribe_push(
                    TOPIC, f"http://127.0.0.1:{port}/hooks/gmail", name=f"push-{port}"
                )
                log = cfg.workdir / f"service{i or ''}.log"
                self.services.append(Service(config, port, env, log, cfg.service_log_level))
            settings = load_settings(self.services[0].config)
            self.settings = settings
            self.processed_label = settings.gmail.processed_label
            self.victim = self.services[0]
            graph.on_executed(None, self._hook("graph"))
            gmail.on_executed(None, self._hook("gmail"))
            try:
                for service in self.services:
                    service.start()
                for service in self.services:
                    service.wait_up()
                time.sleep(1.0)  # first syncs take their cursors
                self._loop(proxies, graph, gmail)
                self._drain(graph, gmail)
            finally:
                for service in self.services:
                    service.stop()
                for p in proxies:
                    p.stop()
            self._check(graph, gmail, settings)
        self.report.duration_s = time.monotonic() - started
        return self.report

    def _feed(self, graph: GraphEmulator, gmail: GmailEmulator) -> None:
        while self._n < self.cfg.messages and self._pending(graph, gmail) < self.cfg.backlog:
            self._deliver_one(graph, gmail)

    def _loop(self, proxies: list[ByteProxy], graph: GraphEmulator, gmail: GmailEmulator) -> None:
        cfg = self.cfg
        misses = 0
        plan = self._plan()
        while self.report.total_kills < cfg.kills:
            self._feed(graph, gmail)
            self._maybe_lose(graph, gmail)
            kind = self._kill_once(plan[self.report.total_kills], proxies)
            if kind is None:
                misses += 1
                if misses > 3 * cfg.kills:
                    raise RuntimeError("kills keep missing: is the service working at all?")
                continue
            self.report.kills[kind] += 1
            cfg.log(f"kill {self.report.total_kills}/{cfg.kills}: {kind}")
            self._kill_times.append(time.monotonic())
            pending = self._pending(graph, gmail) > 0
            assert self.victim is not None
            self._restarts.append((self.victim.start(), pending))
            self.victim.wait_up()

    def _drain(self, graph: GraphEmulator, gmail: GmailEmulator) -> None:
        while self._n < self.cfg.messages:
            self._deliver_one(graph, gmail)
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while self._unsettled(graph, gmail) and time.monotonic() < deadline:
            for service in self.services:
                if not service.alive():  # none dies by itself: restart it, and count it
                    self.report.extra_restarts += 1
                    service.start()
                    service.wait_up()
            time.sleep(0.25)

    def _unsettled(self, graph: GraphEmulator, gmail: GmailEmulator) -> bool:
        """Mail not processed yet in the mailboxes, or rows not final in the ledger."""
        if self._pending(graph, gmail):
            return True
        ledger = Ledger(self.settings.state.url)
        try:
            return any(r.status not in Status.FINAL for r in ledger.recent(limit=100_000))
        finally:
            ledger.close()

    # -- the verdict -------------------------------------------------------------------

    def _check(self, graph: GraphEmulator, gmail: GmailEmulator, settings: Settings) -> None:
        r = self.report
        r.messages = len(self.delivered)
        ledger = Ledger(settings.state.url)
        try:
            rows = {(x.mailbox, x.provider_id): x for x in ledger.recent(limit=100_000)}
        finally:
            ledger.close()
        forwards = self._forwards(graph, gmail)
        graph_moves = Counter(e.target for e in graph.executed if e.kind == "move")
        # A Gmail move is INBOX removed; a replayed modify that changes nothing is no move.
        gmail_moves = Counter(
            e.target
            for e in gmail.executed
            if e.kind == "messages.modify" and "INBOX" in e.detail.get("removed", [])
        )
        self.report.replayed_modifies = sum(
            1
            for e in gmail.executed
            if e.kind == "messages.modify"
            and "INBOX" in e.detail.get("asked_remove", [])
            and "INBOX" not in e.detail.get("removed", [])
        )
        for d in self.delivered:
            box = GRAPH_BOX if d.provider == "graph" else GMAIL_BOX
            row = rows.get((box, d.ref))
            if not self._done(graph, gmail, d):
                if row is None:
                    r.lost += 1
                    r.details.append(f"lost: {d}")
                else:
                    r.not_triaged += 1
                    r.details.append(f"not triaged: {d} ({row.status}: {row.last_error[:200]})")
                continue
            copies = forwards.get(d.message_id, 0)
            category = settings.category(row.category) if row and row.category else None
            wanted = 1 if category is not None and category.actions.forward_to else 0
            if row is not None and row.status != Status.DONE:
                r.details.append(f"marked but {row.status} in the ledger: {d}")
            if copies > wanted:
                r.duplicate_forwards += copies - wanted
                r.details.append(f"{copies} forwards: {d}")
            elif copies < wanted:
                r.missing_forwards += wanted - copies
                r.details.append(f"no forward: {d}")
            moves = graph_moves if d.provider == "graph" else gmail_moves
            if moves.get(d.ref, 0) > 1:
                r.duplicate_moves += moves[d.ref] - 1
                r.details.append(f"{moves[d.ref]} moves: {d}")
        r.orphan_drafts = len(graph.folder_messages(GRAPH_BOX, "Drafts"))
        # Restart to the first provider write of that process (before it was killed again).
        writes = sorted(e.at for e in graph.executed + gmail.executed)
        ends = [*self._kill_times[1:], float("inf")]
        for (t, pending), end in zip(self._restarts, ends, strict=False):
            nxt = next((w for w in writes if w > t), None)
            if not pending:
                continue
            if nxt is not None and nxt < end:
                r.restart_to_work_s.append(nxt - t)
            else:
                r.killed_before_work += 1

    def _forwards(self, graph: GraphEmulator, gmail: GmailEmulator) -> Counter[str]:
        """Forwards received, by the original's Message-ID (X-Mailtriage-Origin)."""
        out: Counter[str] = Counter()
        for dept in DEPARTMENTS:
            for m in graph.folder_messages(dept, "Inbox"):
                origin = {h["name"].lower(): h["value"] for h in m.headers}.get(
                    "x-mailtriage-origin"
                )
                if origin:
                    out[origin.strip()] += 1
        for _sender, _to, raw in gmail.outbound():
            parsed = email.message_from_bytes(raw, policy=email.policy.default)
            origin = str(parsed["X-Mailtriage-Origin"] or "").strip()
            if origin:
                out[origin] += 1
        return out


def run_chaos(cfg: ChaosConfig) -> ChaosReport:
    """Run one chaos session and return its report."""
    return Chaos(cfg).run()
