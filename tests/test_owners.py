"""Lease owners: a dead local holder is recognised, so a restarted service resumes at once."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from mailtriage.core.ledger import Ledger
from mailtriage.core.owners import is_dead, process_owner

PRINT_OWNER = "from mailtriage.core.owners import process_owner; print(process_owner())"


def owner_of_a_finished_process() -> str:
    out = subprocess.run([sys.executable, "-c", PRINT_OWNER], capture_output=True, check=True)
    return out.stdout.decode().strip()


def test_dead_local_owner_is_recognised_live_and_foreign_ones_are_not() -> None:
    assert is_dead(owner_of_a_finished_process())
    assert not is_dead(process_owner())  # this process
    assert not is_dead("elsewhere.example:1:4026531836.1.abcdef")  # another host
    assert not is_dead("old-style:123:a1b2c3")  # an id without namespace and start time
    # a live process of this host: its start time still matches
    proc = subprocess.Popen(
        [sys.executable, "-c", PRINT_OWNER + "; import time; time.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        live = proc.stdout.readline().decode().strip()
        assert not is_dead(live)
        proc.kill()
        proc.wait()
        assert is_dead(live)
    finally:
        proc.kill()


def test_lease_of_a_killed_process_is_taken_at_once(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 's.db'}")
    ttl = timedelta(minutes=5)
    assert ledger.acquire_lease("box@x.fr", owner_of_a_finished_process(), ttl)
    assert ledger.acquire_lease("box@x.fr", process_owner(), ttl)  # not after 5 minutes
    alive = process_owner()
    assert not ledger.acquire_lease("box@x.fr", alive + "-other", ttl)  # a live holder stays
