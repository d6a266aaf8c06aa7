"""`mailtriage run` as a real subprocess against the emulators, with probes an operator uses.

Used by the service-process tests, the soak test and `bench/memory.py`: the emulators run in
the caller's process, the service is started with the console script and a configuration
written for them, and is watched through `/readyz` and `/proc/<pid>/status` (RSS).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from mailtriage.data import EXAMPLE_CONFIG
from mailtriage.sandbox.gmail import GmailEmulator
from mailtriage.sandbox.graph import GraphEmulator

GRAPH_BOX = "contact@atelier-dupont.fr"
GMAIL_BOX = "info@atelier-dupont.com"
DEPARTMENTS = (
    "rh@atelier-dupont.fr",
    "sav@atelier-dupont.fr",
    "commercial@atelier-dupont.fr",
    "compta@atelier-dupont.fr",
)
# One mail per category of the example configuration (four forward, advertising does not),
# the load the benchmarks deliver in rotation.
BENCH_MAILS = [
    ("Candidature spontanée", "Bonjour, je vous adresse ma candidature et mon CV pour le poste."),
    ("Facture 2024-118", "Veuillez trouver notre facture fournisseur, échéance au 30."),
    ("Ma commande n'est pas arrivée", "Ma commande n 4412 : colis pas reçu, remboursement ?"),
    ("Demande de devis", "Pourriez-vous nous faire un devis pour 40 chaises ?"),
    ("Newsletter de novembre", "Promotion exclusive -30% ce week-end. Se désabonner."),
]
TOPIC = "projects/sandbox-project/topics/mailtriage"
KEY_ENV = "MT_PROC_GMAIL_KEY"
MAILTRIAGE = Path(sys.executable).with_name("mailtriage")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def write_toml(path: Path, data: dict[str, Any]) -> None:
    """Enough TOML for a configuration: scalars, tables and arrays of tables."""
    lines = [f"{k} = {_toml(v)}" for k, v in data.items() if not isinstance(v, dict | list)]
    lines += [
        f"{k} = {_toml(v)}"
        for k, v in data.items()
        if isinstance(v, list) and not (v and isinstance(v[0], dict))
    ]
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines += [f"{k} = {_toml(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines.append(f"\n[[{key}]]")
                lines += [f"{k} = {_toml(v)}" for k, v in item.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def add_mailboxes(graph: GraphEmulator, gmail: GmailEmulator) -> None:
    """The shared mailboxes and the department mailboxes the example configuration names."""
    graph.add_mailbox(GRAPH_BOX)
    for address in DEPARTMENTS:
        graph.add_mailbox(address)
    gmail.add_user(GMAIL_BOX)


def config_data(
    tmp_path: Path,
    graph: GraphEmulator,
    gmail: GmailEmulator,
    port: int,
    *,
    push: bool = True,
    sync_interval_s: float = 2,
) -> dict[str, Any]:
    """The example configuration aimed at the emulators, the embedded classifier, SQLite.

    `push=False` leaves out the public URL and the Pub/Sub topic: the schedule alone brings
    mail in.
    """
    data = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    data["classifier"] = "embedded"
    data["llm"] = {"model": ""}
    data["state"] = {"url": f"sqlite:///{tmp_path / 'state.sqlite'}"}
    data["runtime"] = {
        "sync_interval_s": sync_interval_s,
        "host": "127.0.0.1",
        "port": port,
        "max_attempts": 5,
    }
    data["graph"] = {"base_url": graph.base_url, "anonymous": True}
    data["gmail"] = {
        "service_account_env": KEY_ENV,
        "api_endpoint": gmail.url,
        "token_uri": gmail.token_uri,
        "certs_url": gmail.certs_url,
        "retry_base_delay_s": 0.05,
    }
    if push:
        data["runtime"]["public_url"] = f"http://127.0.0.1:{port}"
        data["gmail"] |= {
            "pubsub_topic": TOPIC,
            "push_audience": f"http://127.0.0.1:{port}/hooks/gmail",
            "push_service_account": gmail.signer.service_account,
        }
    data["mailbox"] = [
        {"provider": "graph", "address": GRAPH_BOX},
        {"provider": "gmail", "address": GMAIL_BOX, "categories": []},
    ]
    return data


def write_config(tmp_path: Path, data: dict[str, Any], name: str = "cfg") -> Path:
    path = tmp_path / f"{name}.toml"
    write_toml(path, data)
    return path


def service_env(gmail: GmailEmulator, **extra: str) -> dict[str, str]:
    """The caller's environment minus MAILTRIAGE_* variables, plus the Gmail key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTRIAGE_")}
    env[KEY_ENV] = gmail.service_account_json()
    env.update(extra)
    return env


class ServiceProcess:
    """One `mailtriage run` subprocess, its log file, and probes on it."""

    def __init__(self, config: Path, port: int, env: dict[str, str], log: Path, *args: str) -> None:
        self.port = port
        self.log = log
        self.proc = subprocess.Popen(
            [str(MAILTRIAGE), "run", "-c", str(config), *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]

    def readyz(self, timeout: float = 2.0) -> int | None:
        """The /readyz status code, None when the service does not answer."""
        try:
            return httpx.get(self.url("/readyz"), timeout=timeout).status_code
        except httpx.HTTPError:
            return None

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited: {self.log_tail()}")
            try:
                resp = httpx.get(self.url("/readyz"), timeout=2)
                if resp.status_code == 200:
                    return dict(resp.json())
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"service not ready: {self.log_tail()}")

    def wait_listening(self, timeout: float = 60) -> None:
        """Until the webhook port answers at all (ready or not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited: {self.log_tail()}")
            if self.readyz() is not None:
                return
            time.sleep(0.2)
        raise AssertionError(f"service not listening: {self.log_tail()}")

    def stop(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """kill -9: no shutdown, leases stay held until they expire."""
        self.proc.kill()
        self.proc.wait(timeout=30)

    # -- memory (Linux /proc) ------------------------------------------------------------

    def _status_kb(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def rss_kb(self) -> int:
        return self._status_kb("VmRSS")

    def peak_kb(self) -> int:
        """Peak RSS since start or since the last `reset_peak()` (VmHWM)."""
        return self._status_kb("VmHWM")

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (Linux ≥ 4.0, same user)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5\n")


def wait_for(predicate: Callable[[], bool], timeout: float = 90, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")
