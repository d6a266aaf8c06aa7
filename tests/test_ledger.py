"""The ledger on SQLite and, where a server is installed, on a throwaway PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from mailtriage.core.actions import ActionPlan, Forward, Label
from mailtriage.core.decision import Decision
from mailtriage.core.errors import LedgerError
from mailtriage.core.ledger import SCHEMA_VERSION, Ledger, Status, migrate, utcnow
from mailtriage.core.memory import MemoryMailbox
from mailtriage.core.pipeline import Outcome, Pipeline, RetryPolicy
from tests.helpers import ScriptedClassifier, by_subject, example_settings, make_message
from tests.postgres import temporary_postgres

BOX = "contact@atelier-dupont.fr"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str | None]:
    with temporary_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path, pg_url) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.sqlite'}"
        return
    if pg_url is None:
        pytest.skip("PostgreSQL server not installed here")
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    yield pg_url


def test_claim_is_unique_and_actions_are_tracked(url: str) -> None:
    ledger = Ledger(url)
    m = make_message("[rh] CV", mailbox=BOX)
    row = ledger.claim(m, "a")
    assert row is not None and ledger.claim(m, "b") is None
    plan = ActionPlan("rh", (Label("RH"), Forward(("rh@x.fr",), "n", "c@y.fr")))
    decision = Decision("rh", 0.9, "r", "llm")
    rec = ledger.record_decision(row.id, decision, plan, routed_to_review=False)
    assert [a for _, a, _ in rec.actions] == list(plan.actions)
    ledger.record_action(row.id, 0, ok=True)
    ledger.record_action(row.id, 1, ok=False, error="boom", new_id="new-id")
    rec = ledger.record(row.id)
    assert rec.pending_actions == [plan.actions[1]] and rec.current_provider_id == "new-id"
    assert ledger.find(BOX, "new-id") is not None  # found by its new id too
    assert ledger.find(BOX, "other", m.internet_message_id) is not None  # and by Message-ID


def test_bodies_are_not_stored_unless_asked(url: str) -> None:
    m = make_message("x", "confidential body", mailbox=BOX)
    ledger = Ledger(url)
    ledger.claim(m)
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT text FROM messages")).scalar() is None
    ledger2 = Ledger(url, store_text=True)
    ledger2.claim(make_message("y", "kept body", mailbox=BOX))
    with ledger2.engine.connect() as conn:
        stored = conn.execute(text("SELECT text FROM messages WHERE subject='y'")).scalar()
    assert stored == "kept body"


def test_leases(url: str) -> None:
    ledger = Ledger(url)
    ttl = timedelta(seconds=60)
    assert ledger.acquire_lease(BOX, "a", ttl)
    assert not ledger.acquire_lease(BOX, "b", ttl)
    assert ledger.acquire_lease(BOX, "a", ttl)  # renewal
    assert ledger.lease_owner(BOX) == "a"
    ledger.release_lease(BOX, "a")
    assert ledger.acquire_lease(BOX, "b", ttl)
    assert ledger.acquire_lease(BOX, "c", timedelta(seconds=-1)) is False
    # an expired lease can be taken over
    assert ledger.acquire_lease("x@y.fr", "a", timedelta(seconds=-1))
    assert ledger.acquire_lease("x@y.fr", "b", ttl)


def test_kv_and_cursor(url: str) -> None:
    ledger = Ledger(url)
    asyncio.run(ledger.put(BOX, "subscription", '{"id": "s1"}'))
    assert asyncio.run(ledger.get(BOX, "subscription")) == '{"id": "s1"}'
    asyncio.run(ledger.put(BOX, "subscription", None))
    assert asyncio.run(ledger.get(BOX, "subscription")) is None
    assert ledger.get_cursor(BOX) is None
    ledger.set_cursor(BOX, "delta-1")
    assert ledger.get_cursor(BOX) == "delta-1" and ledger.last_sync(BOX) is not None


def test_schema_is_versioned(url: str) -> None:
    ledger = Ledger(url)
    assert migrate(ledger.engine) == SCHEMA_VERSION  # already current: nothing to do
    with ledger.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO schema_version (version, applied_at) VALUES (99, CURRENT_TIMESTAMP)")
        )
    with pytest.raises(LedgerError, match="newer than this mailtriage"):
        Ledger(url)


async def test_two_workers_on_one_database(url: str) -> None:
    box = MemoryMailbox(BOX)
    for i in range(15):
        box.deliver(make_message(f"[rh] Candidature {i}"))
    settings = example_settings()

    def pipe() -> Pipeline:
        return Pipeline(
            settings, Ledger(url), ScriptedClassifier(by_subject), retry=RetryPolicy(0, 0)
        )

    r1, r2 = await asyncio.gather(pipe().sync_mailbox(box), pipe().sync_mailbox(box))
    done = [r for r in r1.results + r2.results if r.status == Outcome.DONE]
    assert len(done) == 15 and len(box.sent) == 15
    assert {r.status for r in Ledger(url).recent(limit=100)} == {Status.DONE}


def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(LedgerError, match="state database postgresql"):
        Ledger("postgresql+psycopg://mt:secret@127.0.0.1:1/none")


def test_concurrent_first_start_migrates_once(url: str) -> None:
    """Two processes starting on a fresh database: both open it, the schema is made once."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        ledgers = list(pool.map(lambda _: Ledger(url), range(4)))
    with ledgers[0].engine.connect() as conn:
        versions = conn.execute(text("SELECT version FROM schema_version")).scalars().all()
    assert versions == list(range(1, SCHEMA_VERSION + 1))  # each step once


def test_intents_are_recorded_before_and_results_after(url: str) -> None:
    from mailtriage.core.intents import forward_key

    ledger = Ledger(url)
    m = make_message("[rh] CV", mailbox=BOX)
    row = ledger.claim(m, "worker-a")
    assert row is not None
    plan = ActionPlan("rh", (Label("RH"), Forward(("rh@x.fr",), "n", "c@y.fr")))
    ledger.record_decision(row.id, Decision("rh", 0.9, "r", "llm"), plan, routed_to_review=False)
    first = ledger.begin_actions(row.id, [0, 1], "worker-a")
    assert first is not None and [i.earlier for i in first] == [False, False]
    assert first[1].key == forward_key(BOX, m.provider_id, "rh") and first[0].key == ""
    assert ledger.begin_actions(row.id, [0, 1], "worker-b") is None  # not its row
    ledger.record_action(row.id, 0, ok=True)
    ledger.note_action(row.id, 1, "send:draft-1@1700000000")
    again = ledger.begin_actions(row.id, [1], "worker-a")  # a resume
    assert again is not None and again[0].earlier and again[0].evidence.startswith("send:")
    assert again[0].key == first[1].key and again[0].since == first[1].since
    (open_,) = ledger.open_intents(BOX)
    assert (open_.kind, open_.key, open_.state) == ("forward", first[1].key, "started")
    ledger.record_action(row.id, 1, ok=True)
    assert ledger.open_intents(BOX) == []


def test_schema_1_database_gains_intents(url: str) -> None:
    """A database made by the previous release is migrated in place, rows kept."""
    ledger = Ledger(url)
    row = ledger.claim(make_message("[rh] CV", mailbox=BOX), "a")
    assert row is not None
    plan = ActionPlan("rh", (Forward(("rh@x.fr",), "n", "c@y.fr"),))
    ledger.record_decision(row.id, Decision("rh", 0.9, "r", "llm"), plan, routed_to_review=False)
    ledger.close()
    engine = create_engine(url)
    with engine.begin() as conn:  # back to schema 1: no intent columns
        for column in ("intent_key", "started_at", "tries", "evidence"):
            conn.execute(text(f"ALTER TABLE actions DROP COLUMN {column}"))
        conn.execute(text("DROP TABLE processes"))  # schema 3
        conn.execute(text("DELETE FROM schema_version WHERE version >= 2"))
    engine.dispose()
    migrated = Ledger(url)
    assert migrated.heartbeat("a", timedelta(seconds=30)) == ["a"]  # schema 3: the registry
    (rec,) = migrated.recent()
    assert rec.intents[0].tries == 0 and rec.intents[0].key == ""
    begun = migrated.begin_actions(rec.id, [0], "a")
    assert begun is not None and begun[0].key.startswith("mtf-")


def test_decide_records_the_plan_and_its_intents_in_one_step(url: str) -> None:
    ledger = Ledger(url)
    m = make_message("[rh] CV", mailbox=BOX)
    row = ledger.claim(m, "worker-a")
    assert row is not None
    again = dataclasses.replace(m, provider_id="copy-of-it")  # same Message-ID
    assert ledger.claim(again, "worker-b") is None  # known: no second row
    plan = ActionPlan("rh", (Label("RH"), Forward(("rh@x.fr",), "n", "c@y.fr")))
    decision = Decision("rh", 0.9, "r", "llm")
    rec, intents = ledger.decide(row.id, decision, plan, routed_to_review=False, owner="worker-a")
    assert intents is not None and [i.earlier for i in intents] == [False, False]
    assert intents[1].key.startswith("mtf-") and rec.category == "rh"
    assert [state for state, _, _ in rec.actions] == ["started", "started"]
    # another worker's row: the decision is stored, nothing may be attempted
    _, theirs = ledger.decide(row.id, decision, plan, routed_to_review=False, owner="worker-b")
    assert theirs is None
    labels_only = ActionPlan("rh", (Label("RH"),))
    rec, none = ledger.decide(
        row.id, decision, labels_only, routed_to_review=False, owner="worker-a"
    )
    assert none == [] and [state for state, _, _ in rec.actions] == ["planned"]
    done = ledger.finish(row.id, [0])
    assert done.status == Status.DONE and [s for s, _, _ in done.actions] == ["applied"]


def test_process_registry_and_free_mailboxes(url: str) -> None:
    ledger = Ledger(url)
    ttl = timedelta(minutes=5)
    assert ledger.heartbeat("host-a:1:a", ttl) == ["host-a:1:a"]
    assert ledger.heartbeat("host-b:1:b", ttl) == ["host-a:1:a", "host-b:1:b"]  # by start
    assert ledger.acquire_lease("m1", "host-a:1:a", ttl)
    assert ledger.acquire_lease("m2", "host-gone:1:c", ttl)  # never registered
    assert ledger.acquire_lease("m3", "host-b:1:b", timedelta(seconds=-1))  # expired
    assert ledger.free_mailboxes(["m1", "m2", "m3", "m4"]) == ["m3", "m4"]
    # m2's holder is not alive: free when its lease runs out, not before
    at = ledger.orphans_free_at(["m1", "m2", "m3"], ["host-a:1:a", "host-b:1:b"])
    assert at is not None and at > utcnow() + timedelta(minutes=4)
    assert ledger.lease_counts() == {"host-a:1:a": 1, "host-gone:1:c": 1}
    ledger.leave("host-b:1:b")
    assert ledger.heartbeat("host-a:1:a", ttl) == ["host-a:1:a"]
    ledger.heartbeat("host-c:1:c", timedelta(seconds=-1))  # its heartbeat has run out
    assert ledger.heartbeat("host-a:1:a", ttl) == ["host-a:1:a"]
