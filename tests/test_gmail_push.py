"""Gmail push: users.watch management and the Pub/Sub webhook (OIDC JWT checks)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Iterator

import jwt
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient

from mailtriage.connectors.gmail import GmailMailbox, GmailWatch, webhook_routes
from mailtriage.core.ports import MemoryStateStore
from mailtriage.sandbox.gmail import GmailEmulator, new_rsa_key
from mailtriage.sandbox.server import free_port
from tests.gmail_fixtures import OTHER, SHARED, gm, gmail_settings, rfc822

__all__ = ["gm"]
AUDIENCE = "https://mailtriage.example.fr/hooks/gmail"


@pytest.fixture(autouse=True)
def key_env(gm: GmailEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MT_TEST_GMAIL_KEY", gm.service_account_json())
    yield


def push_body(address: str = SHARED, history_id: int = 4_000_123) -> dict[str, object]:
    data = json.dumps({"emailAddress": address, "historyId": history_id}).encode()
    return {
        "message": {
            "data": base64.urlsafe_b64encode(data).decode(),
            "messageId": "2070443601311540",
            "publishTime": "2026-11-26T05:00:00.000Z",
        },
        "subscription": "projects/sandbox-project/subscriptions/mailtriage-push",
    }


async def test_watch_install_renew_and_uninstall(gm: GmailEmulator) -> None:
    settings = gmail_settings(gm)
    store = MemoryStateStore()
    box = GmailMailbox.from_settings(settings, settings.mailbox(SHARED), store)
    watch = GmailWatch(box)

    assert await watch.renew_due() is True  # nothing installed yet
    state = await watch.state()
    assert state and state["topic"] == "projects/sandbox-project/topics/mailtriage"
    recorded = gm.state.users[SHARED].watch
    assert recorded and recorded.label_ids == ["INBOX"]
    assert state["expiration_ms"] == recorded.expiration_ms

    assert await watch.renew_due() is False  # renewed less than a day ago
    assert await watch.renew_due(now=time.time() + 86_401) is True
    assert gm.calls("watch", SHARED) == 2

    await watch.uninstall()
    assert gm.state.users[SHARED].watch is None and await watch.state() is None


@pytest.fixture
def hook(gm: GmailEmulator) -> Iterator[tuple[TestClient, list[str]]]:
    triggered: list[str] = []

    async def trigger(address: str) -> None:
        triggered.append(address)

    routes = webhook_routes(gmail_settings(gm).gmail, trigger, addresses=[SHARED, OTHER])
    with TestClient(Starlette(routes=routes)) as client:
        yield client, triggered


def test_valid_push_is_acknowledged_and_triggers(
    gm: GmailEmulator, hook: tuple[TestClient, list[str]]
) -> None:
    client, triggered = hook
    token = gm.signer.sign(gm.signer.claims(AUDIENCE))
    headers = {"Authorization": f"Bearer {token}"}
    resp = client.post("/hooks/gmail", json=push_body(), headers=headers)
    assert resp.status_code == 204
    assert triggered == [SHARED]


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("missing", 401),
        ("forged signature", 403),
        ("wrong audience", 403),
        ("wrong service account", 403),
        ("email not verified", 403),
        ("wrong issuer", 403),
        ("expired", 403),
    ],
)
def test_bad_or_missing_jwt_is_rejected_without_trigger(
    gm: GmailEmulator, hook: tuple[TestClient, list[str]], case: str, status: int
) -> None:
    client, triggered = hook
    signer = gm.signer
    tokens: dict[str, Callable[[], str]] = {
        "forged signature": lambda: signer.sign(signer.claims(AUDIENCE), key=new_rsa_key()),
        "wrong audience": lambda: signer.sign(signer.claims("https://evil.example/hook")),
        "wrong service account": lambda: signer.sign(
            signer.claims(AUDIENCE, email="attacker@evil.iam.gserviceaccount.com")
        ),
        "email not verified": lambda: signer.sign(signer.claims(AUDIENCE, email_verified=False)),
        "wrong issuer": lambda: signer.sign(signer.claims(AUDIENCE, iss="https://evil.example")),
        "expired": lambda: signer.sign(
            signer.claims(AUDIENCE, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
        ),
    }
    headers = {"Authorization": f"Bearer {tokens[case]()}"} if case in tokens else {}
    resp = client.post("/hooks/gmail", json=push_body(), headers=headers)
    assert resp.status_code == status
    assert triggered == []


def test_unknown_mailbox_or_garbage_is_acknowledged_but_ignored(
    gm: GmailEmulator, hook: tuple[TestClient, list[str]]
) -> None:
    client, triggered = hook
    headers = {"Authorization": f"Bearer {gm.signer.sign(gm.signer.claims(AUDIENCE))}"}
    stranger = push_body("x@other.example")
    assert client.post("/hooks/gmail", json=stranger, headers=headers).status_code == 204
    assert client.post("/hooks/gmail", json={"message": {}}, headers=headers).status_code == 204
    assert triggered == []


async def test_push_from_the_emulator_triggers_a_history_sync(gm: GmailEmulator) -> None:
    """Emulator pusher → real HTTP webhook → trigger → history sync finds the message."""
    settings = gmail_settings(gm)
    box = GmailMailbox.from_settings(settings, settings.mailbox(SHARED), MemoryStateStore())
    cursor = (await box.changes(None)).cursor
    loop = asyncio.get_running_loop()
    synced: asyncio.Queue[list[str]] = asyncio.Queue()

    async def sync(address: str) -> None:
        page = await box.changes(cursor)
        await synced.put([m.subject for m in page.messages])

    def trigger(address: str) -> object:  # the webhook runs in uvicorn's own loop
        return asyncio.run_coroutine_threadsafe(sync(address), loop).result()

    async def bridge(address: str) -> None:
        await asyncio.to_thread(trigger, address)

    port = free_port()
    app = Starlette(routes=webhook_routes(settings.gmail, bridge, addresses=[SHARED]))
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        gm.subscribe_push(
            settings.gmail.pubsub_topic or "",
            f"http://127.0.0.1:{port}/hooks/gmail",
            audience=AUDIENCE,
        )
        await GmailWatch(box).install()
        gm.deliver(SHARED, rfc822(subject="Candidature technicien"))
        subjects = await asyncio.wait_for(synced.get(), timeout=10)
        assert subjects == ["Candidature technicien"]
        assert gm.pusher.results[-1][2] == 204
    finally:
        server.should_exit = True
        thread.join(5)


def test_unknown_key_ids_refresh_the_certs_at_most_once_a_minute(gm: GmailEmulator) -> None:
    """500 forged tokens with made-up key ids cost one certificate download, not 500."""
    from mailtriage.connectors.gmail.push import PushVerifier

    triggered: list[str] = []

    async def trigger(address: str) -> None:
        triggered.append(address)

    verifier = PushVerifier(AUDIENCE, gm.signer.service_account, gm.certs_url)
    routes = webhook_routes(
        gmail_settings(gm).gmail, trigger, addresses=[SHARED], verifier=verifier
    )
    with TestClient(Starlette(routes=routes)) as client:
        valid = {"Authorization": f"Bearer {gm.signer.sign(gm.signer.claims(AUDIENCE))}"}
        assert client.post("/hooks/gmail", json=push_body(), headers=valid).status_code == 204
        assert verifier.fetches == 1
        for n in range(500):
            token = jwt.encode(
                gm.signer.claims(AUDIENCE), new_key, algorithm="RS256", headers={"kid": f"k{n}"}
            )
            headers = {"Authorization": f"Bearer {token}"}
            resp = client.post("/hooks/gmail", json=push_body(), headers=headers)
            assert resp.status_code == 403 and resp.text == "invalid token"
        assert verifier.fetches == 1  # fetched less than a minute ago: no refresh
        verifier._fetched_at -= 61  # a minute later, Google may have rotated its keys
        for _ in range(3):
            client.post("/hooks/gmail", json=push_body(), headers=headers)
        assert verifier.fetches == 2  # one refresh, then a minute of waiting again
    assert triggered == [SHARED]


new_key = new_rsa_key()


def test_replayed_pubsub_message_triggers_one_sync(
    gm: GmailEmulator, hook: tuple[TestClient, list[str]]
) -> None:
    client, triggered = hook
    headers = {"Authorization": f"Bearer {gm.signer.sign(gm.signer.claims(AUDIENCE))}"}
    for _ in range(5):
        assert client.post("/hooks/gmail", json=push_body(), headers=headers).status_code == 204
    other = push_body()
    other["message"]["messageId"] = "2070443601311541"  # type: ignore[index]
    assert client.post("/hooks/gmail", json=other, headers=headers).status_code == 204
    assert triggered == [SHARED, SHARED]  # one per distinct Pub/Sub message id


def test_seen_messages_forget_after_the_window_and_stay_bounded() -> None:
    from mailtriage.connectors.gmail.push import SeenMessages

    seen = SeenMessages(window_s=10, limit=3)
    assert seen.first_time("a", now=0) and not seen.first_time("a", now=5)
    assert seen.first_time("a", now=20)  # past the retention window
    for n in range(10):
        seen.first_time(str(n), now=21)
    assert len(seen._seen) <= 3


def test_oversized_push_is_refused_before_it_is_read(
    gm: GmailEmulator, hook: tuple[TestClient, list[str]]
) -> None:
    client, triggered = hook
    headers = {"Authorization": f"Bearer {gm.signer.sign(gm.signer.claims(AUDIENCE))}"}
    big = client.post("/hooks/gmail", content=b" " * (1024 * 1024 + 1), headers=headers)
    deep = client.post("/hooks/gmail", content=b"[" * 100_000 + b"]" * 100_000, headers=headers)
    assert big.status_code == 413 and deep.status_code == 204  # malformed: acknowledged
    assert client.post("/hooks/gmail", json=push_body()).status_code == 401  # as before
    assert triggered == []
