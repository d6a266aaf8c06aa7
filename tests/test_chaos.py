"""kill -9 chaos, CI-sized: `mailtriage run` killed 15 times over 40 messages.

The service runs as a subprocess against both emulators and the sandbox model; it is killed
right after each kind of provider write, between two arbitrary bytes of an HTTP exchange
(a byte-counting proxy), and at random moments, and some answers are lost without a kill.
Whatever the timing, the invariants below hold: every message triaged, none lost, no
forward or move twice, nothing left in Drafts. `bench/chaos.py` runs the long version.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailtriage.sandbox.chaos import ChaosConfig, run_chaos


def test_kill_9_at_any_moment_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    report = run_chaos(
        ChaosConfig(
            workdir=tmp_path,
            messages=40,
            kills=15,
            seed=7,
            llm_latency_s=0.02,
            random_window_s=3.0,
            hook_wait_s=5.0,
            graph_push=False,  # saves ~2 s per restart; the schedule drives Graph intake
            drain_timeout_s=100.0,
        )
    )
    summary = report.table() + "\n" + "\n".join(report.details)
    assert report.total_kills == 15, summary
    assert sum(n for k, n in report.kills.items() if k.startswith("between bytes")), summary
    assert sum(n for k, n in report.kills.items() if k.startswith("after ")), summary
    assert report.messages == 40
    assert report.lost == 0 and report.not_triaged == 0, summary
    assert report.duplicate_forwards == 0 and report.missing_forwards == 0, summary
    assert report.duplicate_moves == 0 and report.orphan_drafts == 0, summary


def test_two_processes_on_postgresql_under_kills(tmp_path: Path) -> None:
    """Two `run` processes on one PostgreSQL ledger, one of them killed at a time."""
    from tests.postgres import temporary_postgres

    with temporary_postgres() as url:
        if url is None:
            pytest.skip("PostgreSQL server not installed here")
        report = run_chaos(
            ChaosConfig(
                workdir=tmp_path,
                messages=16,
                kills=6,
                seed=3,
                llm_latency_s=0.02,
                random_window_s=3.0,
                hook_wait_s=5.0,
                graph_push=False,
                processes=2,
                state_url=url,
                drain_timeout_s=100.0,
            )
        )
    summary = report.table() + "\n" + "\n".join(report.details)
    assert report.total_kills == 6 and report.messages == 16, summary
    assert report.clean, summary
