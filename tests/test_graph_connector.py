"""GraphMailbox through the real msgraph-sdk against the Graph emulator."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError

from mailtriage.connectors.graph.client import GraphTransport, RetryPolicy, build_client
from mailtriage.connectors.graph.convert import MARKER_ID
from mailtriage.connectors.graph.mailbox import GraphMailbox
from mailtriage.core.actions import ActionPlan, Forward, Label, MarkRead, Move
from mailtriage.core.config import Settings
from mailtriage.core.decision import Decision
from mailtriage.core.errors import AccessDeniedError, AuthError, ThrottledError
from mailtriage.core.ports import MemoryStateStore
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.graph.config import sandbox_settings

SHARED = "contact@atelier-dupont.fr"
RH = "rh@atelier-dupont.fr"
CUSTOMER = "jeanne.martin@example.org"


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RetryPolicy, "delay_scale", 0.0)


@pytest.fixture
def emu() -> Iterator[GraphEmulator]:
    with GraphEmulator() as e:
        e.add_mailbox(SHARED)
        e.add_mailbox(RH)
        yield e


def make_settings(emu: GraphEmulator, *boxes: str, **kw: Any) -> Settings:
    return sandbox_settings(emu.base_url, list(boxes or [SHARED]), **kw)


@pytest.fixture
async def mailbox(emu: GraphEmulator) -> AsyncIterator[GraphMailbox]:
    settings = make_settings(emu)
    mb = GraphMailbox.from_settings(settings, settings.mailboxes[0], MemoryStateStore())
    yield mb
    await mb.aclose()


async def drain(mb: GraphMailbox, cursor: str | None) -> tuple[list[Any], str | None]:
    """All pages from `cursor`; returns messages (and failures) and the final cursor."""
    out: list[Any] = []
    while True:
        page = await mb.changes(cursor)
        out += page.messages + page.failures
        cursor = page.cursor
        if not page.more:
            return out, cursor


def deliver_application(emu: GraphEmulator, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "subject": "Candidature technicien de maintenance",
        "body": "<p>Bonjour,</p><p>Veuillez trouver mon CV.</p>",
        "html": True,
        "sender": CUSTOMER,
        "sender_name": "Jeanne Martin",
        "headers": {"Auto-Submitted": "no", "X-Unrelated": "1"},
        "attachments": [{"name": "CV.pdf", "contentType": "application/pdf", "size": 12345}],
    }
    args.update(kw)
    return emu.deliver(SHARED, **args)


async def test_first_run_starts_from_now_then_delta_returns_new_mail(
    emu: GraphEmulator, mailbox: GraphMailbox
) -> None:
    deliver_application(emu, subject="old", received=datetime.now(UTC) - timedelta(hours=1))
    items, cursor = await drain(mailbox, None)
    assert items == [] and cursor and "$deltatoken=" in cursor
    stored = deliver_application(emu, reply_to=["jeanne@perso.example"])
    items, cursor2 = await drain(mailbox, cursor)
    assert len(items) == 1
    m = items[0]
    assert m.provider_id == stored.immutable_id  # Prefer IdType="ImmutableId" honoured
    assert m.subject == "Candidature technicien de maintenance"
    assert m.sender.email == CUSTOMER and m.sender.name == "Jeanne Martin"
    assert [a.email for a in m.reply_to] == ["jeanne@perso.example"]
    assert [a.email for a in m.to] == [SHARED]
    assert "Veuillez trouver mon CV." in m.text and "<p>" not in m.text  # text body
    assert m.headers == {"auto-submitted": "no"}  # only kept headers
    assert [(a.filename, a.size) for a in m.attachments] == [("CV.pdf", 12345)]
    assert m.internet_message_id == stored.internet_message_id
    assert m.processed_marker is False
    # the delta request asked for text bodies and immutable ids in one merged Prefer header
    delta = [r for r in emu.requests if r.path.endswith("/delta")][-1]
    assert 'outlook.body-content-type="text"' in delta.headers["prefer"]
    assert 'IdType="ImmutableId"' in delta.headers["prefer"]
    assert (await drain(mailbox, cursor2))[0] == []


@pytest.mark.parametrize(("backfill", "expected"), [(0, 0), (1, 3)])
async def test_backfill_window_and_paging(emu: GraphEmulator, backfill: int, expected: int) -> None:
    for i in range(3):
        deliver_application(emu, subject=f"m{i}", received=datetime.now(UTC) - timedelta(hours=2))
    settings = make_settings(emu, graph={"page_size": 2}, mailbox={"backfill_days": backfill})
    mb = GraphMailbox.from_settings(settings, settings.mailboxes[0], MemoryStateStore())
    try:
        first = await mb.changes(None)
        items, _ = await drain(mb, first.cursor) if first.more else ([], first.cursor)
        assert len(first.messages) + len(items) == expected
        assert first.more is (expected > 2)
    finally:
        await mb.aclose()


async def test_expired_delta_token_restarts_from_bounded_window(
    emu: GraphEmulator, mailbox: GraphMailbox
) -> None:
    _, cursor = await drain(mailbox, None)
    deliver_application(emu, subject="recent")
    deliver_application(emu, subject="ancient", received=datetime.now(UTC) - timedelta(days=30))
    emu.expire_delta_tokens(SHARED)
    items, cursor2 = await drain(mailbox, cursor)
    assert [m.subject for m in items] == ["recent"]  # 48 h window, not the whole inbox
    assert any(r.status == 410 for r in emu.requests)
    assert cursor2 != cursor


async def test_apply_full_plan_natively(emu: GraphEmulator, mailbox: GraphMailbox) -> None:
    _, cursor = await drain(mailbox, None)
    stored = deliver_application(emu)
    (msg,), _ = await drain(mailbox, cursor)
    plan = ActionPlan(
        category="rh",
        actions=(
            Forward(to=(RH,), note="Routed by mailtriage to RH", reply_to=CUSTOMER),
            Label("RH", color="preset7"),
            MarkRead(),
            Move("Triage/RH"),
        ),
        marker="v1;rh;0.90",
    )
    results = await mailbox.apply(msg, plan)
    assert [r.ok for r in results] == [True] * 4, results
    assert results[3].new_provider_id == stored.immutable_id  # immutable id survives the move
    assert emu.where(SHARED, stored.immutable_id) == "Inbox/Triage/RH"
    moved = emu.message(SHARED, stored.immutable_id)
    assert moved.categories == ["RH"] and moved.is_read
    assert moved.ext_props[MARKER_ID] == "v1;rh;0.90"  # the marker rode on the same PATCH
    assert emu.mailbox(SHARED).master_categories[0] | {"id": ""} == {
        "id": "",
        "displayName": "RH",
        "color": "preset7",
    }
    (fwd,) = emu.folder_messages(RH, "Inbox")
    assert fwd.subject == "FW: Candidature technicien de maintenance"
    assert [r["emailAddress"]["address"] for r in fwd.reply_to] == [CUSTOMER]
    headers = {h["name"].lower(): h["value"] for h in fwd.headers}
    assert headers["x-mailtriage"].startswith(f"forwarded; mailbox={SHARED}; id=mtf-")
    assert headers["x-mailtriage-origin"] == stored.internet_message_id
    assert "Routed by mailtriage to RH" in fwd.body
    assert len(emu.folder_messages(SHARED, "Sent Items")) == 1
    assert emu.folder_messages(SHARED, "Drafts") == []
    # the minimum the API allows: one forward (set entirely in its request), one PATCH
    # (categories + isRead + marker), one move; no draft, nothing PATCHed afterwards
    assert [e.kind for e in emu.executed] == ["forward", "patch", "move"]
    (patch,) = [r for r in emu.requests if r.method == "PATCH"]
    assert sorted(k for k in patch.body if not k.startswith("@")) == [
        "categories",
        "isRead",
        "singleValueExtendedProperties",
    ]
    # mark_processed has nothing left to do
    await mailbox.mark_processed(msg, Decision("rh", 0.9, "r", "test"))
    assert [e.kind for e in emu.executed] == ["forward", "patch", "move"]
    # the folder ids are cached: a second move resolves nothing again
    lookups = emu.count("GET", "childFolders")
    other = deliver_application(emu, subject="second")
    (msg2,), _ = await drain(mailbox, _)
    await mailbox.apply(msg2, ActionPlan("rh", (Move("Triage/RH"),)))
    assert emu.count("GET", "childFolders") == lookups
    assert emu.where(SHARED, other.immutable_id) == "Inbox/Triage/RH"


async def test_label_without_mailboxsettings_permission_warns_once(
    emu: GraphEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emu.mailbox(SHARED).permissions.discard("MailboxSettings.ReadWrite")
    settings = make_settings(emu)
    mb = GraphMailbox.from_settings(settings, settings.mailboxes[0], MemoryStateStore())
    try:
        _, cursor = await drain(mb, None)
        a, b = deliver_application(emu), deliver_application(emu, subject="2")
        msgs, _ = await drain(mb, cursor)
        with caplog.at_level(logging.WARNING):
            for m in msgs:
                (r,) = await mb.apply(m, ActionPlan("rh", (Label("RH", "preset7"),)))
                assert r.ok
        assert emu.message(SHARED, a.immutable_id).categories == ["RH"]
        assert emu.message(SHARED, b.immutable_id).categories == ["RH"]
        warnings = [r for r in caplog.records if "MailboxSettings.ReadWrite" in r.getMessage()]
        assert len(warnings) == 1
        assert emu.count(contains="masterCategories") == 1
    finally:
        await mb.aclose()


async def test_processed_marker_survives_lost_cursor(emu: GraphEmulator) -> None:
    settings = make_settings(emu, mailbox={"backfill_days": 1})
    mb = GraphMailbox.from_settings(settings, settings.mailboxes[0], MemoryStateStore())
    try:
        stored = deliver_application(emu)
        (msg,), _ = await drain(mb, None)
        assert not msg.processed_marker
        await mb.mark_processed(msg, Decision("rh", 0.91, "CV", "llm"))
        assert emu.message(SHARED, stored.immutable_id).ext_props == {MARKER_ID: "v1;rh;0.91"}
        (again,), _ = await drain(mb, None)  # ledger lost: read the window again
        assert again.processed_marker is True
        assert again.attachments == []  # not fetched for processed mail
    finally:
        await mb.aclose()


async def test_throttling_storm_is_absorbed_within_four_in_flight(emu: GraphEmulator) -> None:
    settings = make_settings(emu, mailbox={"backfill_days": 1})
    mb = GraphMailbox.from_settings(settings, settings.mailboxes[0], MemoryStateStore())
    try:
        stored = [deliver_application(emu, subject=f"s{i}", attachments=[]) for i in range(20)]
        msgs, _ = await drain(mb, None)
        emu.set_latency(0.01)
        emu.inject(429, times=30, mailbox=SHARED, retry_after=0, every=2)
        emu.inject(503, times=5, mailbox=SHARED, retry_after=None, every=3)
        plan = ActionPlan("rh", (Label("RH"), MarkRead()))
        results = await asyncio.gather(*(mb.apply(m, plan) for m in msgs))
        assert all(r.ok for rs in results for r in rs)
        assert all(emu.message(SHARED, s.immutable_id).is_read for s in stored)
        assert emu.count(contains="") and any(r.status == 429 for r in emu.requests)
        assert emu.max_inflight(SHARED) <= 4
        assert emu.mailbox(SHARED).rejected_concurrency == 0
        assert mb.client.transport.retries >= 30
    finally:
        await mb.aclose()


async def test_throttling_beyond_retries_is_a_throttled_error(emu: GraphEmulator) -> None:
    settings = make_settings(emu)
    mb = GraphMailbox.from_settings(settings, settings.mailboxes[0], MemoryStateStore())
    try:
        emu.inject(429, times=100, mailbox=SHARED, retry_after=7)
        with pytest.raises(ThrottledError) as err:
            await mb.changes(None)
        assert err.value.retry_after_s == 7
    finally:
        await mb.aclose()


async def test_unscoped_concurrency_hits_the_mailbox_limit(emu: GraphEmulator) -> None:
    """Control: without the transport cap the emulator really rejects a 5th request."""
    import httpx

    emu.set_latency(0.05)
    async with httpx.AsyncClient(base_url=emu.base_url) as http:
        rs = await asyncio.gather(*(http.get(f"/users/{SHARED}") for _ in range(8)))
    codes = sorted(r.status_code for r in rs)
    assert codes.count(429) == 4
    body = next(r for r in rs if r.status_code == 429).json()["error"]
    assert body["code"] == "ApplicationThrottled"
    assert body["message"] == "Application is over its MailboxConcurrency limit."


async def test_access_denied_names_mailbox_and_fix(emu: GraphEmulator) -> None:
    emu.mailbox(SHARED).access_denied = True
    settings = make_settings(emu)
    mb = GraphMailbox.from_settings(settings, settings.mailboxes[0], MemoryStateStore())
    try:
        with pytest.raises(AccessDeniedError) as err:
            await mb.changes(None)
        assert SHARED in str(err.value) and "Test-ServicePrincipalAuthorization" in str(err.value)
        assert err.value.mailbox == SHARED
    finally:
        await mb.aclose()


class _Credential:
    """A TokenCredential: a fixed token, or a refusal like azure-identity's."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.calls = 0

    async def get_token(self, *scopes: str, **kw: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.calls += 1
        if self.token is None:
            raise ClientAuthenticationError("AADSTS7000215: Invalid client secret provided.")
        return AccessToken(self.token, 2_000_000_000)


@pytest.mark.parametrize(
    ("token", "ok"), [("good", True), ("forged", False), (None, False)], ids=str
)
async def test_bearer_tokens_and_auth_errors(
    emu: GraphEmulator, token: str | None, ok: bool
) -> None:
    import httpx

    emu.require_auth({"client-1": "s3cret"})
    r = httpx.post(
        f"{emu.url}/tenant-1/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "client-1",
            "client_secret": "s3cret",
            "scope": "https://graph.microsoft.com/.default",
        },
    )
    issued = r.json()["access_token"]
    settings = make_settings(
        emu,
        graph={"anonymous": False, "tenant_id": "t", "client_id": "c", "client_secret_env": "S"},
    )
    cred = _Credential(issued if token == "good" else token)
    client = build_client(settings.graph, credential=cred)
    mb = GraphMailbox(SHARED, client, MemoryStateStore(), settings)
    try:
        if ok:
            page = await mb.changes(None)
            assert page.cursor
            assert emu.requests[-1].headers["authorization"] == f"Bearer {issued}"
        else:
            with pytest.raises(AuthError):
                await mb.changes(None)
        assert cred.calls >= 1
    finally:
        await mb.aclose()


async def test_dry_run_changes_nothing(emu: GraphEmulator) -> None:
    settings = make_settings(emu, mailbox={"backfill_days": 1}, dry_run=True)
    mb = GraphMailbox.from_settings(settings, settings.mailboxes[0], MemoryStateStore())
    try:
        deliver_application(emu)
        (msg,), _ = await drain(mb, None)
        before = emu.snapshot()
        plan = ActionPlan("rh", (Label("RH", "preset7"), Move("Triage/RH"), Forward((RH,))))
        results = await mb.apply(msg, plan)
        await mb.mark_processed(msg, Decision("rh", 0.9, "x", "llm"))
        assert not any(r.ok for r in results)
        assert emu.snapshot() == before
        assert {r.method for r in emu.requests} == {"GET"}
    finally:
        await mb.aclose()


def test_transport_caps_in_flight_per_mailbox() -> None:
    import httpx

    seen: dict[str, int] = {}
    live: dict[str, int] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        key = request.url.path.split("/")[3]
        live[key] = live.get(key, 0) + 1
        seen[key] = max(seen.get(key, 0), live[key])
        await asyncio.sleep(0.01)
        live[key] -= 1
        return httpx.Response(200, json={})

    async def run() -> None:
        t = GraphTransport(httpx.MockTransport(handler))
        async with httpx.AsyncClient(transport=t, base_url="http://g/v1.0") as c:
            await asyncio.gather(*(c.get(f"/users/{box}/messages") for box in ["a", "b"] * 12))

    asyncio.run(run())
    assert seen == {"a": 4, "b": 4}


@pytest.mark.parametrize(("secret", "ok"), [("s3cret", True), ("wrong", False)])
async def test_client_secret_credential_against_the_emulated_entra(
    emu: GraphEmulator, monkeypatch: pytest.MonkeyPatch, secret: str, ok: bool
) -> None:
    """azure-identity's ClientSecretCredential really fetches a token (https authority)."""
    authority, ca_file = emu.start_authority()
    emu.require_auth({"11111111-2222": "s3cret"})
    monkeypatch.setenv("TEST_GRAPH_SECRET", secret)
    settings = make_settings(
        emu,
        graph={
            "anonymous": False,
            "tenant_id": "tenant-1",
            "client_id": "11111111-2222",
            "client_secret_env": "TEST_GRAPH_SECRET",
            "authority_host": authority,
            "ca_bundle_file": ca_file,
        },
    )
    mb = GraphMailbox.from_settings(settings, settings.mailboxes[0], MemoryStateStore())
    try:
        if ok:
            await mb.changes(None)
            # a token the emulated Entra endpoint issued (it starts with "emu-")
            assert emu.requests[-1].headers["authorization"].startswith("Bearer emu-")
        else:
            with pytest.raises(AuthError, match="Could not obtain a Microsoft Graph token"):
                await mb.changes(None)
            assert not any(r.path.endswith("/delta") for r in emu.requests)
    finally:
        await mb.aclose()
