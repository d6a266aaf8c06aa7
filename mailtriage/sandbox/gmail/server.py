"""`GmailEmulator`: the loopback server (uvicorn in a thread) and the Pub/Sub pusher."""

from __future__ import annotations

import base64
import datetime as dt
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from mailtriage.sandbox.faults import Executed
from mailtriage.sandbox.gmail.app import build_app
from mailtriage.sandbox.gmail.iam import CLOUD_PLATFORM, IamPolicy
from mailtriage.sandbox.gmail.keys import PushSigner, ServiceAccountKey
from mailtriage.sandbox.gmail.state import GmailState, StoredMessage
from mailtriage.sandbox.server import Running, ThreadedServer, loopback_socket


@dataclass
class PushSubscription:
    """A Pub/Sub push subscription on a topic: where to POST and which audience to sign."""

    name: str
    topic: str
    endpoint: str
    audience: str


class Pusher:
    """POSTs Pub/Sub-style push requests, signed with the test OIDC key, from a thread."""

    def __init__(self, state: GmailState, signer: PushSigner) -> None:
        self.state = state
        self.signer = signer
        self.subscriptions: list[PushSubscription] = []
        self.results: list[tuple[str, str, int]] = []  # address, historyId, HTTP status
        self._queue: queue.Queue[tuple[str, int] | None] = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="gmail-pusher", daemon=True)
        self._counter = 2070443601311540
        state.on_inbox.append(self.notify)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def notify(self, address: str, history_id: int) -> None:
        with self._cond:
            self._pending += 1
        self._queue.put((address, history_id))

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until every queued push has been delivered (or failed)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("pushes still pending")
                self._cond.wait(left)

    def body(self, address: str, history_id: int, subscription: str) -> dict[str, Any]:
        self._counter += 1
        data = json.dumps({"emailAddress": address, "historyId": history_id}).encode()
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "message": {
                "data": base64.urlsafe_b64encode(data).decode(),
                "messageId": str(self._counter),
                "message_id": str(self._counter),
                "publishTime": now,
                "publish_time": now,
            },
            "subscription": subscription,
        }

    def _run(self) -> None:
        client: httpx.Client | None = None  # made on first use: an SSL context costs ~0.2 s
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                address, history_id = item
                try:
                    client = client or httpx.Client(timeout=10)
                    self._deliver(client, address, history_id)
                finally:
                    with self._cond:
                        self._pending -= 1
                        self._cond.notify_all()
        finally:
            if client is not None:
                client.close()

    def _deliver(self, client: httpx.Client, address: str, history_id: int) -> None:
        with self.state.lock:
            watch = self.state.users[address].watch
        if watch is None:
            return
        for sub in self.subscriptions:
            if sub.topic != watch.topic:
                continue
            token = self.signer.sign(self.signer.claims(sub.audience))
            try:
                resp = client.post(
                    sub.endpoint,
                    json=self.body(address, history_id, sub.name),
                    headers={"Authorization": f"Bearer {token}"},
                )
                status = resp.status_code
            except httpx.HTTPError:
                status = 0
            self.results.append((address, str(history_id), status))


_KEYS: tuple[ServiceAccountKey, PushSigner] | None = None


def _test_keys() -> tuple[ServiceAccountKey, PushSigner]:
    """Test keys, generated once per process (RSA generation costs ~0.1 s each)."""
    global _KEYS
    if _KEYS is None:
        _KEYS = (ServiceAccountKey(), PushSigner())
    return _KEYS


class GmailEmulator(Running):
    """A stateful Gmail API on 127.0.0.1 for tests and benchmarks.

        with GmailEmulator(users=["info@example.com"]) as gm:
            gm.deliver("info@example.com", raw_rfc822)
            ...  # point google-api-python-client at gm.url, the token grant at gm.token_uri

    `state` is the whole mailbox state (see `state.GmailState`); the helpers below are the
    usual shortcuts.
    """

    def __init__(
        self,
        users: list[str] = (),  # type: ignore[assignment]
        *,
        quota_units_per_s: float = 250,
        enforce_quota: bool = True,
        quota_error: str = "429",
        require_auth: bool = True,
    ) -> None:
        self.state = GmailState(
            quota_units_per_s=quota_units_per_s,
            enforce_quota=enforce_quota,
            quota_error=quota_error,
            require_auth=require_auth,
        )
        for user in users:
            self.state.add_user(user)
        self.service_account, self.signer = _test_keys()
        self.pusher = Pusher(self.state, self.signer)
        # The port is taken now (tests write configurations before starting the server).
        self._socket = loopback_socket()
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/"
        self.iam = IamPolicy()
        app = build_app(
            self.state, self.service_account, self.signer, lambda: self.token_uri, self.iam
        )
        self._server = ThreadedServer(app, port=self.port, name="gmail-emulator")

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> GmailEmulator:
        self._socket.close()
        self._server.start()
        self.pusher.start()
        return self

    def stop(self) -> None:
        self.pusher.close()
        self._server.stop()

    # -- addresses -----------------------------------------------------------------------

    @property
    def token_uri(self) -> str:
        return self.url + "token"

    @property
    def certs_url(self) -> str:
        return self.url + "oauth2/v1/certs"

    @property
    def iam_endpoint(self) -> str:
        """Where `iamcredentials.googleapis.com` is served (signJwt)."""
        return self.url

    def service_account_json(self) -> str:
        """The test service account's JSON key (TEST KEY, generated at start)."""
        return self.service_account.json(self.token_uri)

    # -- key-less delegation (IAM signJwt) -----------------------------------------------

    def grant_token_creator(self, principal: str) -> None:
        """`principal` gets roles/iam.serviceAccountTokenCreator on the service account."""
        self.iam.grant_token_creator(principal)

    def source_token(self, principal: str, scopes: frozenset[str] | None = None) -> str:
        """An access token for `principal` itself (a VM's or Cloud Run's identity)."""
        return self.state.issue_token(principal, scopes or frozenset({CLOUD_PLATFORM}))

    def adc_info(self, principal: str) -> dict[str, str]:
        """An `authorized_user` ADC file for `principal`, refreshed at this emulator (TEST)."""
        refresh = f"1//emu-{uuid.uuid4().hex}"
        with self.iam.lock:
            self.iam.refresh_tokens[refresh] = principal.lower()
        return {
            "type": "authorized_user",
            "client_id": "sandbox-adc.apps.googleusercontent.com",
            "client_secret": "sandbox-adc-secret",
            "refresh_token": refresh,
            "token_uri": self.token_uri,
        }

    # -- seeding and inspection -----------------------------------------------------------

    def add_user(self, address: str) -> None:
        self.state.add_user(address)

    def deliver(self, address: str, raw: bytes, **kwargs: Any) -> str:
        return self.state.deliver(address, raw, **kwargs)

    def message(self, address: str, message_id: str) -> StoredMessage:
        return self.state.message(address.lower(), message_id)

    def messages(self, address: str) -> list[StoredMessage]:
        with self.state.lock:
            return list(self.state.box(address).messages.values())

    def label_names(self, address: str, message_id: str) -> set[str]:
        return self.state.label_names(address, message_id)

    def inbox(self, address: str) -> list[StoredMessage]:
        return [m for m in self.messages(address) if "INBOX" in m.labels]

    def outbound(self, recipient: str | None = None) -> list[tuple[str, list[str], bytes]]:
        """Messages sent to addresses not hosted by the emulator."""
        return [o for o in self.state.outbound if recipient is None or recipient in o[1]]

    def uploads(self, user: str | None = None) -> list[tuple[str, str, int]]:
        """messages.send media uploads done: (user, uploadType, message bytes)."""
        with self.state.lock:
            return [u for u in self.state.upload_log if user is None or u[0] == user.lower()]

    def calls(self, api: str | None = None, user: str | None = None) -> int:
        return sum(
            1
            for _, name, who, _ in self.state.request_log
            if (api is None or name == api) and (user is None or who == user)
        )

    def max_units_per_s(self, user: str) -> int:
        return self.state.quota.max_window.get(user.lower(), 0)

    def units_used(self, user: str) -> int:
        return self.state.quota.total.get(user.lower(), 0)

    def subscribe_push(
        self, topic: str, endpoint: str, audience: str | None = None, name: str | None = None
    ) -> PushSubscription:
        sub = PushSubscription(
            name=name or "projects/sandbox-project/subscriptions/mailtriage-push",
            topic=topic,
            endpoint=endpoint,
            audience=audience or endpoint,
        )
        self.pusher.subscriptions.append(sub)
        return sub

    # -- faults ----------------------------------------------------------------------------

    def expire_history(self, address: str) -> None:
        """Every history id issued so far becomes invalid: history.list answers 404."""
        self.state.expire_history(address)

    def deny_delegation(self, address: str) -> None:
        """The token endpoint refuses `sub=address` with `unauthorized_client` (DWD not granted)."""
        self.state.deny_delegation(address)

    def inject(
        self, kind: str, count: int = 1, user: str | None = None, api: str | None = None
    ) -> None:
        """Fail the next `count` calls (optionally of `user` / to `api`, e.g. "messages.send")
        with `429`, `403-user` or `403-rate`."""
        self.state.inject(kind, count, user, api)

    def storm(self, rate: float, seed: int = 0) -> None:
        """Fail a `rate` share of calls at random with rate-limit errors (0 stops it)."""
        self.state.storm(rate, seed)

    def lose_response(
        self, api: str | None = None, mode: str = "drop", *, times: int = 1, user: str | None = None
    ) -> None:
        """Perform the next `times` calls to `api` (e.g. "messages.send"), then lose the answer:
        "drop" closes the connection mid-answer, "503"/"504" answer a gateway error."""
        self.state.writes.lose(api, mode, times=times, mailbox=user)

    def on_executed(self, api: str | None, callback: Callable[[Executed], None]) -> None:
        """Call `callback` right after each call to `api` changed the mailbox, before its
        answer is sent (e.g. to kill the client process then). None: every write."""
        self.state.writes.on_executed(api, callback)

    @property
    def executed(self) -> list[Executed]:
        """Every write performed so far, in order."""
        with self.state.writes.lock:
            return list(self.state.writes.log)
