"""Graph subscriptions and the webhook, with the emulator really POSTing to it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from mailtriage.connectors.graph.client import build_client
from mailtriage.connectors.graph.push import SUB_KEY, GraphPush
from mailtriage.core.ports import MemoryStateStore
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.server import LoopServer
from tests.graph_fixtures import RH, SHARED, emu, no_backoff
from tests.test_graph_connector import make_settings

__all__ = ["emu", "no_backoff"]

pytestmark = pytest.mark.usefixtures("no_backoff")


@dataclass
class Hook:
    push: GraphPush
    url: str
    store: MemoryStateStore
    triggered: list[str] = field(default_factory=list)

    async def settle(self, emu: GraphEmulator) -> None:
        """Wait until the emulator's notifications are delivered and handled."""
        await asyncio.to_thread(emu.wait_notifications)
        for _ in range(100):
            if not self.push._tasks:
                return
            await asyncio.sleep(0.01)


@pytest.fixture
async def hook(emu: GraphEmulator) -> AsyncIterator[Hook]:
    store = MemoryStateStore()
    triggered: list[str] = []

    async def trigger(address: str) -> None:
        triggered.append(address)

    app = Starlette(routes=[])
    async with LoopServer(app) as srv:
        settings = make_settings(emu, SHARED, RH)
        push = GraphPush(settings, build_client(settings.graph), store, public_url=srv.url)
        app.router.routes.extend(push.routes(trigger))
        yield Hook(push, srv.url, store, triggered)
        await push.aclose()


async def test_install_validates_and_notifications_trigger_sync(
    emu: GraphEmulator, hook: Hook
) -> None:
    await hook.push.install()
    subs = emu.subscriptions()
    assert {s["resource"] for s in subs} == {
        f"users/{a}/mailFolders('inbox')/messages" for a in (SHARED, RH)
    }
    sub = subs[0]
    assert sub["changeType"] == "created"
    assert sub["notificationUrl"] == hook.url + "/hooks/graph"
    assert sub["lifecycleNotificationUrl"] == hook.url + "/hooks/graph/lifecycle"
    assert len(sub["clientState"]) >= 32  # generated secret, kept in the store
    assert await hook.store.get("_graph", "graph.client_state") == sub["clientState"]
    expires = datetime.fromisoformat(sub["expirationDateTime"].replace("0000000Z", "+00:00"))
    assert timedelta(minutes=9_900) < expires - datetime.now(UTC) <= timedelta(minutes=10_080)
    emu.deliver(SHARED, subject="Devis", body="Bonjour", sender="a@example.org")
    await hook.settle(emu)
    assert hook.triggered == [SHARED]
    assert [n.status for n in emu.notifications] == [202]
    assert emu.notifications[0].elapsed_s < 3


@pytest.mark.parametrize(
    "token",
    [
        "plain",
        "Validation: Testing client application reachability <script>alert(1)</script>",
        "a+b=c&d%20e",
    ],
)
async def test_validation_handshake_echoes_decoded_token(hook: Hook, token: str) -> None:
    async with httpx.AsyncClient() as c:
        for path in ("/hooks/graph", "/hooks/graph/lifecycle"):
            r = await c.post(hook.url + path, params={"validationToken": token})
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain")
            assert r.text == token
    assert hook.triggered == []


async def test_wrong_client_state_is_rejected_and_triggers_nothing(
    emu: GraphEmulator, hook: Hook
) -> None:
    await hook.push.install()
    sub_id = json.loads((await hook.store.get(SHARED, SUB_KEY)) or "{}")["id"]
    note = {"subscriptionId": sub_id, "changeType": "created", "resource": "Users/x/Messages/y"}
    async with httpx.AsyncClient() as c:
        bad = await c.post(
            hook.url + "/hooks/graph", json={"value": [{**note, "clientState": "guess"}]}
        )
        missing = await c.post(hook.url + "/hooks/graph", json={"value": [note]})
        garbage = await c.post(hook.url + "/hooks/graph", content=b"not json")
    assert (bad.status_code, missing.status_code, garbage.status_code) == (403, 403, 400)
    await asyncio.sleep(0.05)
    assert hook.triggered == []


async def test_endpoint_that_fails_validation_gets_no_subscription(emu: GraphEmulator) -> None:
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def echo_encoded(request: object) -> PlainTextResponse:
        return PlainTextResponse("Validation%3A+encoded")

    app = Starlette(routes=[Route("/hooks/graph", echo_encoded, methods=["POST"])])
    async with LoopServer(app) as srv:
        settings = make_settings(emu)
        push = GraphPush(
            settings, build_client(settings.graph), MemoryStateStore(), public_url=srv.url
        )
        with pytest.raises(Exception, match="validation request failed"):
            await push.install()
        await push.aclose()
    assert emu.subscriptions() == []


async def test_lifecycle_events(emu: GraphEmulator, hook: Hook) -> None:
    await hook.push.install()
    first = json.loads((await hook.store.get(SHARED, SUB_KEY)) or "{}")["id"]
    patches = emu.count("PATCH", "/subscriptions/")
    emu.lifecycle(first, "reauthorizationRequired")
    await hook.settle(emu)
    assert emu.count("PATCH", "/subscriptions/") == patches + 1
    assert hook.triggered == []
    emu.lifecycle(first, "missed")
    await hook.settle(emu)
    assert hook.triggered == [SHARED]
    emu.lifecycle(first, "subscriptionRemoved")
    await hook.settle(emu)
    second = json.loads((await hook.store.get(SHARED, SUB_KEY)) or "{}")["id"]
    assert second != first and second in {s["id"] for s in emu.subscriptions()}
    assert hook.triggered == [SHARED, SHARED]  # recreated, then a catch-up sync


async def test_renew_due_and_uninstall(emu: GraphEmulator, hook: Hook) -> None:
    await hook.push.install()
    await hook.push.renew_due()
    assert emu.count("PATCH", "/subscriptions/") == 0  # nothing due yet
    soon = (datetime.now(UTC) + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stored = json.loads((await hook.store.get(SHARED, SUB_KEY)) or "{}")
    await hook.store.put(SHARED, SUB_KEY, json.dumps({**stored, "expires": soon}))
    await hook.push.renew_due()
    assert emu.count("PATCH", "/subscriptions/") == 1
    with emu.state.lock:  # Graph forgot the RH subscription: renewal recreates it
        rh_id = json.loads((await hook.store.get(RH, SUB_KEY)) or "{}")["id"]
        del emu.state.subscriptions[rh_id]
    await hook.push.renew(RH)
    assert len(emu.subscriptions()) == 2
    await hook.push.uninstall()
    assert emu.subscriptions() == []
    assert await hook.store.get(SHARED, SUB_KEY) is None


async def test_access_denied_mailbox_does_not_block_the_others(
    emu: GraphEmulator, hook: Hook
) -> None:
    emu.mailbox(RH).access_denied = True
    await hook.push.install()
    assert [s["resource"] for s in emu.subscriptions()] == [
        f"users/{SHARED}/mailFolders('inbox')/messages"
    ]
    assert RH in hook.push.errors and "RBAC" in hook.push.errors[RH]


async def test_changed_public_url_moves_the_subscription(emu: GraphEmulator, hook: Hook) -> None:
    """Restarted behind another URL: the subscription follows, the old one is deleted."""
    await hook.push.install()
    old_ids = {s["id"] for s in emu.subscriptions()}
    moved_to: list[str] = []

    async def trigger(address: str) -> None:
        moved_to.append(address)

    app = Starlette(routes=[])
    async with LoopServer(app) as srv:
        settings = make_settings(emu, SHARED, RH)
        push = GraphPush(settings, build_client(settings.graph), hook.store, public_url=srv.url)
        app.router.routes.extend(push.routes(trigger))
        await push.install()
        subs = emu.subscriptions()
        assert len(subs) == 2 and not old_ids & {s["id"] for s in subs}
        assert {s["notificationUrl"] for s in subs} == {srv.url + "/hooks/graph"}
        stored = json.loads((await hook.store.get(SHARED, SUB_KEY)) or "{}")
        assert stored["url"] == srv.url + "/hooks/graph"
        emu.deliver(SHARED, subject="Devis", body="Bonjour", sender="a@example.org")
        await asyncio.to_thread(emu.wait_notifications)
        for _ in range(100):
            if moved_to:
                break
            await asyncio.sleep(0.01)
        assert moved_to == [SHARED] and hook.triggered == []
        # Same URL again: renewed in place, nothing moved.
        await push.install()
        assert {s["id"] for s in emu.subscriptions()} == {s["id"] for s in subs}
        await push.aclose()


async def test_record_without_url_is_checked_against_graph(emu: GraphEmulator, hook: Hook) -> None:
    """Subscriptions stored before the URL was recorded: Graph says where they point."""
    await hook.push.install()
    legacy = {}
    for address in (SHARED, RH):
        stored = json.loads((await hook.store.get(address, SUB_KEY)) or "{}")
        legacy[address] = {k: stored[k] for k in ("id", "expires")}
    settings = make_settings(emu, SHARED, RH)
    elsewhere = GraphPush(
        settings, build_client(settings.graph), hook.store, public_url="http://127.0.0.1:1"
    )
    assert await hook.push._aimed_elsewhere(SHARED, legacy[SHARED]) is False
    assert await elsewhere._aimed_elsewhere(SHARED, legacy[SHARED]) is True
    await elsewhere.aclose()


async def raw_post(url: str, head: str, body: bytes) -> str:
    """POST by hand and read the answer without sending more than `body`."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(f"POST {parts.path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body)
    await writer.drain()
    status = (await asyncio.wait_for(reader.readline(), 10)).decode()
    writer.close()
    return status


async def test_rejections_are_one_log_line_and_bodies_are_bounded(
    emu: GraphEmulator, hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    await hook.push.install()
    sub_id = json.loads((await hook.store.get(SHARED, SUB_KEY)) or "{}")["id"]
    wrong = {"subscriptionId": sub_id, "clientState": "guess", "changeType": "created"}
    async with httpx.AsyncClient(timeout=30) as c:
        with caplog.at_level("WARNING", logger="mailtriage.connectors.graph.push"):
            many = await c.post(hook.url + "/hooks/graph", json={"value": [wrong] * 5000})
        deep = await c.post(hook.url + "/hooks/graph", content=b"[" * 100_000 + b"]" * 100_000)
    assert many.status_code == 403 and many.text == "rejected"
    rejected = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 1 and "5000 of 5000" in rejected[0].getMessage()
    assert deep.status_code == 400 and "nested deeper" in deep.text
    # Declared too large: answered before a byte of the body is sent.
    declared = await raw_post(hook.url + "/hooks/graph", "Content-Length: 400000000\r\n", b"")
    # Chunked: answered once 1 MiB has streamed in, the rest never sent.
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    streamed = await raw_post(
        hook.url + "/hooks/graph", "Transfer-Encoding: chunked\r\n", chunk * 17
    )
    assert declared.startswith("HTTP/1.1 413") and streamed.startswith("HTTP/1.1 413")
    assert hook.triggered == []
