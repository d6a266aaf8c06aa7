"""A stateful loopback emulator of the Microsoft Graph mail endpoints mailtriage uses.

    with GraphEmulator() as emu:
        emu.add_mailbox("contact@example.com")
        emu.deliver("contact@example.com", subject="Invoice", body="...", sender="a@b.fr")
        ...  # point GraphServiceClient at emu.base_url

Behaviour follows the documented wire format (see `docs/` in the reference notes): opaque
delta tokens with nextLink/deltaLink and `@removed`, move returning 201 with a new id (the
immutable id survives a move within the mailbox, as Graph documents), createForward /
PATCH / send delivering into emulator mailboxes and Sent Items, extended properties with
`$expand`/`$filter`, subscriptions whose notificationUrl is really validated and really
notified, injected 429/503 with Retry-After, the 4-concurrent-requests-per-mailbox
limit and the 10,000-requests-per-10-minutes one, per-mailbox permissions, and an Entra
client-credentials token endpoint. Writes can lose their answer after they are done
(`lose_response`), and a test can act right after a given kind of write (`on_executed`);
see `sandbox.faults`.
Deviations: plain http notification URLs are accepted (loopback), and the token
endpoint accepts any tenant.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from mailtriage.sandbox.faults import Executed
from mailtriage.sandbox.graph.routes import GraphApp
from mailtriage.sandbox.graph.state import (
    ALL_PERMISSIONS,
    Fault,
    Folder,
    LoggedRequest,
    Mailbox,
    State,
    StoredMessage,
    addr,
    message_id,
    new_id,
)
from mailtriage.sandbox.server import Running, ThreadedServer

__all__ = [
    "ALL_PERMISSIONS",
    "Executed",
    "GraphEmulator",
    "LoggedRequest",
    "StoredMessage",
    "ThreadedServer",
]


@dataclass
class SentNotification:
    url: str
    payload: dict[str, Any]
    status: int | None
    elapsed_s: float
    error: str = ""


class GraphEmulator(Running):
    """The emulator: a `State`, the ASGI app over it, a uvicorn thread and a notifier thread."""

    def __init__(self, tenant_id: str = "00000000-0000-0000-0000-0000000000t1") -> None:
        self.state = State(tenant_id)
        self.app = GraphApp(self.state, self._enqueue)
        self._server = ThreadedServer(self.app)
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self.notifications: list[SentNotification] = []
        self._worker: threading.Thread | None = None
        self._tls: ThreadedServer | None = None
        self._tls_dir: Any = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def base_url(self) -> str:
        """What GraphSettings.base_url should be set to."""
        return self._server.url + "/v1.0"

    def start(self) -> GraphEmulator:
        self._server.start()
        self._worker = threading.Thread(target=self._notify_loop, daemon=True)
        self._worker.start()
        return self

    def stop(self) -> None:
        self._queue.put(None)
        self._server.stop()
        if self._tls is not None:
            self._tls.stop()
            self._tls_dir.cleanup()
        if self._worker is not None:
            self._worker.join(timeout=5)

    # -- notifications -------------------------------------------------------------------

    def _enqueue(self, url: str, payload: dict[str, Any]) -> None:
        with self._cond:
            self._pending += 1
        self._queue.put((url, payload))

    def _notify_loop(self) -> None:
        with httpx.Client(timeout=3.0) as client:  # Graph publishes with a 3 s timeout
            while True:
                item = self._queue.get()
                if item is None:
                    return
                url, payload = item
                t0 = time.monotonic()
                try:
                    r = client.post(url, json=payload)
                    sent = SentNotification(url, payload, r.status_code, time.monotonic() - t0)
                except httpx.HTTPError as exc:
                    sent = SentNotification(url, payload, None, time.monotonic() - t0, str(exc))
                with self._cond:
                    self.notifications.append(sent)
                    self._pending -= 1
                    self._cond.notify_all()

    def wait_notifications(self, timeout: float = 5.0) -> None:
        """Block until every queued notification has been POSTed."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending == 0, timeout=timeout)

    def lifecycle(self, subscription_id: str, event: str) -> None:
        """Send a lifecycle notification (reauthorizationRequired, subscriptionRemoved, missed).

        `subscriptionRemoved` also deletes the subscription, as Graph has done by then.
        """
        with self.state.lock:
            sub = self.state.subscriptions[subscription_id]
            if event == "subscriptionRemoved":
                del self.state.subscriptions[subscription_id]
        self._enqueue(
            sub.lifecycle_url or sub.notification_url,
            {
                "value": [
                    {
                        "subscriptionId": sub.id,
                        "subscriptionExpirationDateTime": sub.expiration.isoformat(),
                        "tenantId": self.state.tenant_id,
                        "clientState": sub.client_state,
                        "lifecycleEvent": event,
                    }
                ]
            },
        )

    # -- seeding -------------------------------------------------------------------------

    def add_mailbox(
        self,
        address: str,
        *,
        display_name: str = "",
        permissions: set[str] | frozenset[str] | None = None,
        access_denied: bool = False,
    ) -> Mailbox:
        with self.state.lock:
            mb = self.state.add_mailbox(address, display_name)
            if permissions is not None:
                mb.permissions = set(permissions)
            mb.access_denied = access_denied
            return mb

    def mailbox(self, address: str) -> Mailbox:
        with self.state.lock:
            mb = self.state.mailbox(address)
        if mb is None:
            raise KeyError(address)
        return mb

    def deliver(
        self,
        to: str,
        *,
        subject: str,
        body: str,
        sender: str,
        sender_name: str = "",
        html: bool = False,
        reply_to: list[str] | None = None,
        cc: list[str] | None = None,
        headers: dict[str, str] | None = None,
        attachments: list[dict[str, Any]] | None = None,
        received: datetime | None = None,
        internet_message_id: str | None = None,
        folder: str | None = None,
    ) -> StoredMessage:
        """Deliver a message from outside into `to`'s Inbox (and notify subscribers).

        `folder` ('Inbox/Triage/RH', 'Archives') delivers it there instead, as if staff
        had sorted it long ago (the folder is created when missing).
        """
        with self.state.lock:
            mb = self.mailbox(to)
            target = self.ensure_folder(to, folder) if folder else mb.well_known("inbox")
            msg = StoredMessage(
                immutable_id=message_id(),
                rest_id=message_id(),
                folder_id=target.id,
                seq=0,
                subject=subject,
                body=body,
                body_type="html" if html else "text",
                sender=addr(sender, sender_name),
                to=[addr(to)],
                cc=[addr(c) for c in cc or []],
                reply_to=[addr(r) for r in reply_to or []],
                headers=[{"name": k, "value": v} for k, v in (headers or {}).items()],
                attachments=list(attachments or []),
                internet_message_id=internet_message_id
                or f"<{message_id()[6:20]}@{sender.rpartition('@')[2]}>",
            )
            if received is not None:
                msg.received = received.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return self.app.deliver(mb, msg)

    # -- what staff do in Outlook ------------------------------------------------------

    def ensure_folder(self, address: str, path: str) -> Folder:
        """The folder at `path` ('Inbox/Triage/RH', or top-level 'Archives/2024'),
        created with its parents when missing."""
        with self.state.lock:
            mb = self.mailbox(address)
            parent = mb.well_known("msgfolderroot")
            for name in [p for p in path.strip("/").split("/") if p]:
                found = next(
                    (
                        f
                        for f in mb.folders.values()
                        if f.parent_id == parent.id and f.display_name.lower() == name.lower()
                    ),
                    None,
                )
                if found is None:
                    found = Folder(new_id("AAMkAF"), name, parent.id)
                    mb.folders[found.id] = found
                parent = found
            return parent

    def move(self, address: str, ref: str, path: str) -> StoredMessage:
        """A staff move (drag and drop in Outlook) of message `ref` into folder `path`."""
        with self.state.lock:
            mb = self.mailbox(address)
            msg = mb.message(ref)
            if msg is None:
                raise KeyError(ref)
            self.state.move(mb, msg, self.ensure_folder(address, path))
            return copy.deepcopy(msg)

    def delete_folder(self, address: str, path: str) -> None:
        """Staff delete folder `path` (empty, with no subfolders) in Outlook: its id is gone."""
        with self.state.lock:
            mb = self.mailbox(address)
            folder = self.ensure_folder(address, path)
            if any(f.parent_id == folder.id for f in mb.folders.values()) or any(
                m.folder_id == folder.id for m in mb.messages.values()
            ):
                raise ValueError(f"folder {path!r} is not empty")
            del mb.folders[folder.id]

    # -- fault injection ---------------------------------------------------------------

    def inject(
        self,
        status: int = 429,
        *,
        times: int = 1,
        mailbox: str | None = None,
        method: str | None = None,
        path_contains: str | None = None,
        retry_after: float | None = 0,
        code: str | None = None,
        message: str | None = None,
        every: int = 1,
    ) -> None:
        """Make the next `times` matching requests fail with `status` (429/503/500...).

        `every=n` hits only every n-th matching request: a storm the client can get
        through, rather than an outage.
        """
        default = {
            429: ("TooManyRequests", "Too many requests, please retry later."),
            503: ("serviceNotAvailable", "The service is temporarily unavailable."),
        }.get(status, ("generalException", "Injected failure."))
        with self.state.lock:
            self.state.faults.append(
                Fault(
                    status,
                    code or default[0],
                    message or default[1],
                    times=times,
                    mailbox=mailbox.lower() if mailbox else None,
                    method=method,
                    path_contains=path_contains,
                    retry_after=retry_after,
                    every=every,
                )
            )

    def lose_response(
        self,
        kind: str | None = None,
        mode: str = "drop",
        *,
        times: int = 1,
        mailbox: str | None = None,
    ) -> None:
        """Perform the next `times` writes of `kind`, then lose the answer.

        `kind`: "send", "createForward", "forward", "move", "patch", "delete" (None: any
        write). `mode`: "drop" (the connection closes mid-answer), "503" or "504" (a gateway
        error for a request that was done). This is how real networks and gateways fail.
        """
        self.state.writes.lose(kind, mode, times=times, mailbox=mailbox)

    def on_executed(self, kind: str | None, callback: Callable[[Executed], None]) -> None:
        """Call `callback` right after each write of `kind` is done, before its answer is
        sent (e.g. to kill the client process at that moment). None: every write."""
        self.state.writes.on_executed(kind, callback)

    @property
    def executed(self) -> list[Executed]:
        """Every write performed so far, in order."""
        with self.state.writes.lock:
            return list(self.state.writes.log)

    def expire_delta_tokens(self, address: str | None = None) -> None:
        """Forget delta/skip tokens, so the next use gets 410 syncStateNotFound."""
        with self.state.lock:
            for tok, ds in list(self.state.delta_tokens.items()):
                if address is None or ds.mailbox == address.lower():
                    del self.state.delta_tokens[tok]

    def limit_mailbox_rate(self, requests: int, window_s: float) -> None:
        """Each mailbox answers 429 past `requests` in any `window_s` (Outlook: 10,000 per
        600 s, the default); tests shrink both to see pacing in seconds."""
        self.state.mailbox_rate = (requests, window_s)

    def set_latency(self, seconds: float) -> None:
        self.state.latency_s = seconds

    def require_auth(self, clients: dict[str, str]) -> None:
        """Demand a bearer token from the token endpoint (`clients`: client_id → secret)."""
        with self.state.lock:
            self.state.require_auth = True
            self.state.clients = dict(clients)

    def start_authority(self) -> tuple[str, str]:
        """Serve the Entra token endpoint over https too (azure-identity refuses http).

        Returns (authority URL, CA file): give them to ClientSecretCredential as
        `authority=` and `connection_verify=` (GraphSettings.authority_host/ca_bundle_file).
        """
        import tempfile

        from mailtriage.sandbox.server import self_signed_cert

        if self._tls is None:
            self._tls_dir = tempfile.TemporaryDirectory()
            cert, key = self_signed_cert(self._tls_dir.name)
            self._tls = ThreadedServer(self.app, certfile=cert, keyfile=key).start()
        assert self._tls.certfile is not None
        return self._tls.url, self._tls.certfile

    # -- inspection ----------------------------------------------------------------------

    def folder_messages(self, address: str, path: str = "Inbox") -> list[StoredMessage]:
        """Messages in a folder given as 'Inbox', 'Inbox/Triage/RH', 'Sent Items'..."""
        with self.state.lock:
            mb = self.mailbox(address)
            return [
                copy.deepcopy(m)
                for m in mb.messages.values()
                if mb.folder_path(m.folder_id).lower() == path.lower()
            ]

    def where(self, address: str, immutable_id: str) -> str | None:
        """The folder path of a message, or None when it is gone."""
        with self.state.lock:
            mb = self.mailbox(address)
            msg = mb.messages.get(immutable_id)
            return mb.folder_path(msg.folder_id) if msg else None

    def message(self, address: str, ref: str) -> StoredMessage | None:
        with self.state.lock:
            msg = self.mailbox(address).message(ref)
            return copy.deepcopy(msg) if msg else None

    def snapshot(self) -> dict[str, Any]:
        """Everything a client can change, for 'nothing changed' assertions."""
        with self.state.lock:
            return {
                a: {
                    "folders": sorted(
                        (f.display_name, f.parent_id or "") for f in mb.folders.values()
                    ),
                    "messages": sorted(
                        (
                            m.immutable_id,
                            m.folder_id,
                            tuple(m.categories),
                            m.is_read,
                            tuple(sorted(m.ext_props.items())),
                        )
                        for m in mb.messages.values()
                    ),
                    "master": copy.deepcopy(mb.master_categories),
                }
                for a, mb in self.state.mailboxes.items()
            }

    @property
    def requests(self) -> list[LoggedRequest]:
        with self.state.lock:
            return list(self.state.log)

    def count(
        self, method: str | None = None, contains: str | None = None, mailbox: str | None = None
    ) -> int:
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method)
            and (contains is None or contains.lower() in r.path.lower())
            and (mailbox is None or r.mailbox == mailbox.lower())
        )

    def max_inflight(self, address: str) -> int:
        return self.mailbox(address).max_inflight

    def subscriptions(self) -> list[dict[str, Any]]:
        from mailtriage.sandbox.graph.routes import render_subscription

        with self.state.lock:
            return [render_subscription(s) for s in self.state.subscriptions.values()]
