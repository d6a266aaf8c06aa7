"""Graph change notifications: subscriptions per mailbox and the webhook that receives them.

A notification never carries work: it only triggers a (coalesced) delta sync of its
mailbox, so push and schedule share one path and nothing is processed twice.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.subscription import Subscription
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mailtriage.connectors.graph.client import GraphClient, build_client
from mailtriage.connectors.graph.errors import map_graph_errors
from mailtriage.core.config import Settings, read_secret
from mailtriage.core.errors import ConfigError, MailtriageError, NotFoundError
from mailtriage.core.ports import StateStore
from mailtriage.core.webhook import BadBody, read_json

log = logging.getLogger(__name__)

Trigger = Callable[[str], Awaitable[None]]
HOOK_PATH = "/hooks/graph"
LIFECYCLE_PATH = "/hooks/graph/lifecycle"
SUB_KEY = "graph.subscription"
STATE_OWNER = "_graph"  # StateStore "mailbox" for tenant-wide values
CLIENT_STATE_KEY = "graph.client_state"
# Unknown subscription ids in notifications re-read the stored ones at most this often.
REREAD_S = 10.0


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GraphPush:
    """Subscriptions on each mailbox's Inbox (`created`) and the webhook routes."""

    provider = "graph"

    def __init__(
        self,
        settings: Settings,
        client: GraphClient,
        store: StateStore,
        *,
        mailboxes: list[str] | None = None,
        public_url: str | None = None,
        owns_client: bool = True,
    ) -> None:
        self.settings = settings
        self.client = client
        self.store = store
        self.mailboxes = [
            m.lower()
            for m in (
                mailboxes
                if mailboxes is not None
                else [m.address for m in settings.mailboxes if m.provider == "graph"]
            )
        ]
        base = (public_url or settings.runtime.public_url or "").rstrip("/")
        self.notification_url = base + HOOK_PATH
        self.lifecycle_url = base + LIFECYCLE_PATH
        self._owns_client = owns_client
        self._client_state: str | None = None
        self._by_sub: dict[str, str] = {}
        self._reread_after = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.errors: dict[str, str] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, store: StateStore, *, client: GraphClient | None = None
    ) -> GraphPush:
        owns = client is None
        return cls(settings, client or build_client(settings.graph), store, owns_client=owns)

    # -- client state ------------------------------------------------------------------

    async def client_state(self) -> str:
        """The shared secret echoed in every notification (env, else generated and stored)."""
        if self._client_state is None:
            env = self.settings.runtime.client_state_env
            secret = read_secret(env, None, what="runtime.client_state_env") if env else None
            value = secret.get_secret_value() if secret else None
            if not value:
                value = await self.store.get(STATE_OWNER, CLIENT_STATE_KEY)
            if not value:
                value = secrets.token_urlsafe(32)
                await self.store.put(STATE_OWNER, CLIENT_STATE_KEY, value)
            if len(value) > 128:
                raise ConfigError("runtime.client_state_env: Graph accepts at most 128 characters")
            self._client_state = value
        return self._client_state

    # -- subscriptions -----------------------------------------------------------------

    async def _stored(self, address: str) -> dict[str, str] | None:
        raw = await self.store.get(address, SUB_KEY)
        if not raw:
            return None
        data: dict[str, str] = json.loads(raw)
        self._by_sub[data["id"]] = address
        return data

    async def _save(self, address: str, sub_id: str, expires: datetime) -> None:
        self._by_sub[sub_id] = address
        record = {"id": sub_id, "expires": _iso(expires), "url": self.notification_url}
        await self.store.put(address, SUB_KEY, json.dumps(record))

    def _expiry(self) -> datetime:
        return datetime.now(UTC) + timedelta(minutes=self.settings.graph.subscription_minutes)

    async def create(self, address: str) -> str:
        """Create the Inbox subscription of `address` (Graph validates our URL first)."""
        if not self.notification_url.startswith(
            ("https://", "http://127.0.0.1", "http://localhost")
        ):
            raise ConfigError("runtime.public_url must be the https URL Graph can reach")
        expires = self._expiry()
        body = Subscription(
            change_type="created",
            notification_url=self.notification_url,
            lifecycle_notification_url=self.lifecycle_url,
            resource=f"users/{address}/mailFolders('inbox')/messages",
            expiration_date_time=expires,
            client_state=await self.client_state(),
        )
        cfg: RequestConfiguration[Any] = RequestConfiguration()
        cfg.headers.add("Prefer", 'IdType="ImmutableId"')
        with map_graph_errors(address):
            sub = await self.client.sdk.subscriptions.post(body, request_configuration=cfg)
        if sub is None or not sub.id:
            raise MailtriageError(f"graph {address}: subscription not created")
        await self._save(address, sub.id, sub.expiration_date_time or expires)
        log.info("graph %s: subscription %s created", address, sub.id)
        return sub.id

    async def renew(self, address: str) -> None:
        """Extend the subscription; recreate it when Graph no longer knows it."""
        stored = await self._stored(address)
        if stored is None:
            await self.create(address)
            return
        expires = self._expiry()
        try:
            with map_graph_errors(address):
                sub = await self.client.sdk.subscriptions.by_subscription_id(stored["id"]).patch(
                    Subscription(expiration_date_time=expires)
                )
        except NotFoundError:
            self._by_sub.pop(stored["id"], None)
            await self.create(address)
            return
        await self._save(
            address, stored["id"], (sub.expiration_date_time if sub else None) or expires
        )

    async def install(self) -> None:
        """Make sure every mailbox has a live subscription; one failing mailbox spares the rest."""
        await self._each(self._install_one)

    async def _install_one(self, address: str) -> None:
        stored = await self._stored(address)
        if stored is None:
            await self.create(address)
        elif await self._aimed_elsewhere(address, stored):
            # public_url or the webhook path changed: a renewal would keep notifications
            # going to the old address, so the subscription is moved instead.
            log.warning(
                "graph %s: subscription %s notifies %s; moving it to %s",
                address,
                stored["id"],
                stored.get("url") or "another URL",
                self.notification_url,
            )
            await self._delete(address, stored["id"])
            await self.store.put(address, SUB_KEY, None)
            await self.create(address)
        else:
            await self.renew(address)

    async def _aimed_elsewhere(self, address: str, stored: dict[str, str]) -> bool:
        """Does the stored subscription notify another URL than the configured one?

        Records written before the URL was stored are checked against Graph itself.
        """
        if "url" in stored:
            return stored["url"] != self.notification_url
        try:
            with map_graph_errors(address):
                sub = await self.client.sdk.subscriptions.by_subscription_id(stored["id"]).get()
        except NotFoundError:
            return False  # gone: the renewal recreates it at the configured URL
        return sub is not None and sub.notification_url != self.notification_url

    async def renew_due(self) -> None:
        """Renew subscriptions that expire within `graph.renew_before_minutes`."""
        limit = datetime.now(UTC) + timedelta(minutes=self.settings.graph.renew_before_minutes)

        async def one(address: str) -> None:
            stored = await self._stored(address)
            if stored is None:
                await self.create(address)
            elif datetime.fromisoformat(stored["expires"].replace("Z", "+00:00")) <= limit:
                await self.renew(address)

        await self._each(one)

    async def uninstall(self) -> None:
        """Delete this installation's subscriptions (stored ones and any aimed at our URL)."""

        async def one(address: str) -> None:
            stored = await self._stored(address)
            if stored is not None:
                await self._delete(address, stored["id"])
            await self.store.put(address, SUB_KEY, None)

        await self._each(one)
        with map_graph_errors(None):
            listed = await self.client.sdk.subscriptions.get()
        for sub in (listed.value if listed else None) or []:
            if sub.id and sub.notification_url == self.notification_url:
                await self._delete(None, sub.id)

    async def _delete(self, address: str | None, sub_id: str) -> None:
        try:
            with map_graph_errors(address):
                await self.client.sdk.subscriptions.by_subscription_id(sub_id).delete()
        except NotFoundError:
            pass
        self._by_sub.pop(sub_id, None)

    async def _each(self, fn: Callable[[str], Coroutine[Any, Any, None]]) -> None:
        failures: list[MailtriageError] = []
        for address in self.mailboxes:
            try:
                await fn(address)
                self.errors.pop(address, None)
            except MailtriageError as exc:
                self.errors[address] = str(exc)
                log.error("graph %s: subscription: %s", address, exc)
                failures.append(exc)
        if failures and len(failures) == len(self.mailboxes):
            raise failures[0]

    async def aclose(self) -> None:
        for task in list(self._tasks):
            await task
        if self._owns_client:
            await self.client.aclose()

    # -- webhook -----------------------------------------------------------------------

    def routes(self, trigger: Trigger) -> list[Route]:
        return webhook_routes(self, trigger)

    async def address_of(self, subscription_id: str) -> str | None:
        """The mailbox of a subscription; the stored ones are re-read at most every 10 s,
        so a body full of unknown ids costs no database read per item."""
        if subscription_id not in self._by_sub and time.monotonic() >= self._reread_after:
            self._reread_after = time.monotonic() + REREAD_S
            for address in self.mailboxes:
                await self._stored(address)
        return self._by_sub.get(subscription_id)

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run `work` after the response; keep a reference so it is not collected."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("graph webhook background task failed: %s", task.exception())


def _validation(request: Request) -> Response | None:
    """Answer Graph's handshake: the decoded token, as text/plain, 200."""
    token = request.query_params.get("validationToken")
    if token is None:
        return None
    # text/plain is never rendered as HTML, so echoing the opaque token is safe; the
    # nosniff header stops browsers from guessing otherwise.
    return PlainTextResponse(token, headers={"X-Content-Type-Options": "nosniff"})


async def _notifications(request: Request) -> list[dict[str, Any]] | None:
    """The notification items; BadBody when the body is too large or not JSON."""
    body = await read_json(request)
    value = body.get("value") if isinstance(body, dict) else None
    return [n for n in value if isinstance(n, dict)] if isinstance(value, list) else None


def webhook_routes(push: GraphPush, trigger: Trigger) -> list[Route]:
    """`POST /hooks/graph` (changes) and `POST /hooks/graph/lifecycle` (lifecycle events)."""

    async def accept(items: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        """The items with the right clientState and a known subscription, with their mailbox.

        Rejections are summarised in one log line per request, whatever their number.
        """
        expected = (await push.client_state()).encode()
        accepted: list[tuple[str, dict[str, Any]]] = []
        wrong_state = unknown = 0
        for n in items:
            got = str(n.get("clientState") or "").encode()
            if not hmac.compare_digest(got, expected):
                wrong_state += 1
                continue
            address = await push.address_of(str(n.get("subscriptionId") or ""))
            if address is None:
                unknown += 1
            else:
                accepted.append((address, n))
        if wrong_state or unknown:
            log.warning(
                "graph webhook: %d of %d notifications rejected "
                "(%d with a wrong clientState, %d for an unknown subscription)",
                wrong_state + unknown,
                len(items),
                wrong_state,
                unknown,
            )
        return accepted

    def endpoint(act: Callable[[list[tuple[str, dict[str, Any]]]], None]) -> Any:
        """Handshake, bounded parse, check clientState, hand the valid items to `act`, 202."""

        async def handle(request: Request) -> Response:
            handshake = _validation(request)
            if handshake is not None:
                return handshake
            try:
                items = await _notifications(request)
            except BadBody as exc:
                return exc.response()
            if items is None:
                return PlainTextResponse("bad notification body", status_code=400)
            accepted = await accept(items)
            if items and not accepted:
                return PlainTextResponse("rejected", status_code=403)
            act(accepted)
            return Response(status_code=202)

        return handle

    def on_changes(accepted: list[tuple[str, dict[str, Any]]]) -> None:
        for address in dict.fromkeys(a for a, _ in accepted):  # one sync per mailbox
            push.spawn(trigger(address))

    def on_lifecycle(accepted: list[tuple[str, dict[str, Any]]]) -> None:
        for address, n in accepted:
            event = str(n.get("lifecycleEvent") or "")
            push.spawn(_lifecycle(push, trigger, address, event))

    changes, lifecycle = endpoint(on_changes), endpoint(on_lifecycle)

    return [
        Route(HOOK_PATH, changes, methods=["POST"]),
        Route(LIFECYCLE_PATH, lifecycle, methods=["POST"]),
    ]


async def _lifecycle(push: GraphPush, trigger: Trigger, address: str, event: str) -> None:
    """reauthorizationRequired → renew; subscriptionRemoved → recreate + sync; missed → sync."""
    log.info("graph %s: lifecycle event %s", address, event)
    if event == "reauthorizationRequired":
        await push.renew(address)
    elif event == "subscriptionRemoved":
        stored = await push._stored(address)
        if stored is not None:
            push._by_sub.pop(stored["id"], None)
        await push.create(address)
        await trigger(address)
    elif event == "missed":
        await trigger(address)
    else:
        log.warning("graph %s: unknown lifecycle event %r", address, event)
