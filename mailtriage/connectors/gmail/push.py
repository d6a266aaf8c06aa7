"""Gmail push: `users.watch` management and the Pub/Sub push webhook.

The watch lasts 7 days; Google recommends calling watch daily, so `renew_due()` renews
any watch older than `gmail.watch_renew_s`. Its state (historyId, expiration, renewed_at)
lives in the StateStore under `gmail.watch`.

The webhook trusts a push only when its OIDC token verifies: RS256 signature against
Google's certs (URL configurable), issuer accounts.google.com, audience =
`gmail.push_audience`, email = `gmail.push_service_account` and email_verified. Then it
acknowledges at once and triggers the (coalesced) history sync of that mailbox in the
background: push and schedule share one path, and the push payload's historyId is only a
hint, never a cursor.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import google.auth.jwt
import httplib2

from mailtriage.connectors.gmail.mailbox import GmailMailbox
from mailtriage.core.config import GmailSettings
from mailtriage.core.errors import AccessDeniedError, AuthError, ConfigError
from mailtriage.core.webhook import MAX_BODY_BYTES, BadBody, read_json

log = logging.getLogger(__name__)
WATCH_KEY = "gmail.watch"
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
# An unknown key id refreshes Google's certs at most this often.
CERTS_REFRESH_MIN_S = 60.0
# Pub/Sub keeps unacknowledged messages 7 days by default and may deliver one more than
# once: message ids are remembered that long (at most DEDUP_MAX of them).
DEDUP_WINDOW_S = 7 * 86_400.0
DEDUP_MAX = 100_000


class GmailWatch:
    """users.watch / users.stop for one mailbox, state kept in the StateStore."""

    def __init__(self, mailbox: GmailMailbox, topic: str | None = None) -> None:
        self.mailbox = mailbox
        topic = topic or mailbox.gmail.pubsub_topic
        if not topic:
            raise ConfigError("gmail.pubsub_topic: needed for push (projects/<p>/topics/<t>)")
        self.topic = topic

    async def state(self) -> dict[str, Any] | None:
        raw = await self.mailbox.store.get(self.mailbox.address, WATCH_KEY)
        return json.loads(raw) if raw else None

    async def install(self) -> dict[str, Any]:
        """Start (or restart) the watch on INBOX; returns the stored state."""
        body = {"topicName": self.topic, "labelIds": ["INBOX"], "labelFilterBehavior": "INCLUDE"}
        response = await self.mailbox.client.call(
            "watch", lambda u: u.watch(userId=self.mailbox.address, body=body)
        )
        state = {
            "topic": self.topic,
            "audience": self.mailbox.gmail.push_audience,
            "historyId": str(response.get("historyId", "")),
            "expiration_ms": int(response["expiration"]),
            "renewed_at": time.time(),
        }
        await self.mailbox.store.put(self.mailbox.address, WATCH_KEY, json.dumps(state))
        return state

    async def moved(self) -> bool:
        """Did the topic or the push endpoint change since the watch was last installed?"""
        state = await self.state()
        return state is not None and (
            state.get("topic") != self.topic
            or state.get("audience", self.mailbox.gmail.push_audience)
            != self.mailbox.gmail.push_audience
        )

    async def renew_due(self, now: float | None = None) -> bool:
        """Renew when missing, moved, older than `watch_renew_s`, or within a day of expiry."""
        now = time.time() if now is None else now
        state = await self.state()
        due = (
            state is None
            or await self.moved()
            or now - float(state.get("renewed_at", 0)) >= self.mailbox.gmail.watch_renew_s
            or int(state.get("expiration_ms", 0)) <= (now + 86_400) * 1000
        )
        if due:
            await self.install()
        return due

    async def uninstall(self) -> None:
        await self.mailbox.client.call("stop", lambda u: u.stop(userId=self.mailbox.address))
        await self.mailbox.store.put(self.mailbox.address, WATCH_KEY, None)


class PushVerifier:
    """Verifies Pub/Sub push OIDC tokens; Google's certs are cached for their max-age.

    A token whose `kid` is not among the cached certs refreshes them (Google rotates its
    keys), but at most once per `refresh_min_s`: forged tokens with made-up key ids would
    otherwise cost one certificate download each.
    """

    def __init__(
        self,
        audience: str,
        service_account: str,
        certs_url: str = GOOGLE_CERTS_URL,
        *,
        timeout_s: float = 10.0,
        refresh_min_s: float = CERTS_REFRESH_MIN_S,
    ) -> None:
        self.audience = audience
        self.service_account = service_account.lower()
        self.certs_url = certs_url
        self.timeout_s = timeout_s
        self.refresh_min_s = refresh_min_s
        self._certs: dict[str, str] = {}
        self._expires = 0.0
        self._fetched_at = -float("inf")
        self._lock = threading.Lock()
        self.fetches = 0

    def _fetch_certs(self) -> dict[str, str]:
        self._fetched_at = time.monotonic()
        self.fetches += 1
        resp, content = httplib2.Http(timeout=self.timeout_s).request(self.certs_url, "GET")
        if resp.status != 200:
            raise ValueError(f"cannot fetch certs from {self.certs_url}: HTTP {resp.status}")
        max_age = 300
        for item in str(resp.get("cache-control", "")).split(","):
            name, _, value = item.strip().partition("=")
            if name == "max-age" and value.isdigit():
                max_age = int(value)
        self._certs = json.loads(content)
        self._expires = time.monotonic() + max_age
        return self._certs

    def certs(self, kid: str | None) -> dict[str, str]:
        with self._lock:  # verifications run in worker threads: one download at a time
            now = time.monotonic()
            if not self._certs or now > self._expires:
                return self._fetch_certs()
            unknown = bool(kid) and kid not in self._certs
            if unknown and now - self._fetched_at >= self.refresh_min_s:
                return self._fetch_certs()
            return self._certs

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or ValueError saying what is wrong."""
        header = google.auth.jwt.decode_header(token)  # type: ignore[no-untyped-call]
        claims: dict[str, Any] = google.auth.jwt.decode(  # type: ignore[no-untyped-call]
            token,
            certs=self.certs(header.get("kid")),
            audience=self.audience,
            clock_skew_in_seconds=10,
        )
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise ValueError(f"wrong issuer {claims.get('iss')!r}")
        if str(claims.get("email", "")).lower() != self.service_account:
            raise ValueError(f"unexpected push service account {claims.get('email')!r}")
        if claims.get("email_verified") is not True:
            raise ValueError("push service account email is not verified")
        return claims


class SeenMessages:
    """Pub/Sub message ids already acted on, for the subscription's retention window."""

    def __init__(self, window_s: float = DEDUP_WINDOW_S, limit: int = DEDUP_MAX) -> None:
        self.window_s = window_s
        self.limit = limit
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_time(self, message_id: str, now: float | None = None) -> bool:
        """True the first time `message_id` is offered (within the window), then False."""
        now = time.monotonic() if now is None else now
        while self._seen and (
            len(self._seen) >= self.limit or next(iter(self._seen.values())) < now - self.window_s
        ):
            self._seen.popitem(last=False)
        if message_id in self._seen:
            return False
        self._seen[message_id] = now
        return True


def decode_push(body: Any) -> tuple[str, int | None]:
    """(emailAddress, historyId) from a Pub/Sub push body; ValueError when malformed."""
    try:
        data = body["message"]["data"]
        payload = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
        address = str(payload["emailAddress"]).lower()
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a Gmail push message: {exc}") from None
    history = payload.get("historyId")
    return address, int(history) if str(history or "").isdigit() else None


def webhook_routes(
    gmail: GmailSettings,
    trigger: Callable[[str], Awaitable[None]],
    *,
    addresses: Iterable[str],
    path: str = "/hooks/gmail",
    verifier: PushVerifier | None = None,
) -> list[Any]:
    """The Starlette route receiving Pub/Sub pushes for the configured Gmail mailboxes."""
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    if verifier is None:
        if not gmail.push_audience or not gmail.push_service_account:
            raise ConfigError(
                "gmail.push_audience and gmail.push_service_account are needed to verify pushes"
            )
        verifier = PushVerifier(
            gmail.push_audience, gmail.push_service_account, gmail.certs_url or GOOGLE_CERTS_URL
        )
    known = {a.lower() for a in addresses}
    tasks: set[asyncio.Future[None]] = set()
    seen = SeenMessages()

    async def receive(request: Request) -> Response:
        declared = request.headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return BadBody(413, f"body larger than {MAX_BODY_BYTES} bytes").response()
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return PlainTextResponse("missing bearer token", status_code=401)
        try:
            await asyncio.to_thread(verifier.verify, auth[7:].strip())
        except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
            log.warning("gmail push rejected: %s", exc)
            return PlainTextResponse("invalid token", status_code=403)
        try:
            body = await read_json(request)
            address, history_id = decode_push(body)
        except BadBody as exc:
            if exc.status == 413:
                return exc.response()
            log.warning("gmail push ignored: %s", exc)  # acknowledged: redelivery won't fix it
            return Response(status_code=204)
        except ValueError as exc:
            log.warning("gmail push ignored: %s", exc)
            return Response(status_code=204)
        if address not in known:
            log.warning("gmail push for an unconfigured mailbox ignored")
            return Response(status_code=204)
        message_id = str(body["message"].get("messageId") or "")
        if message_id and not seen.first_time(message_id):
            log.debug("gmail push %s delivered again: acknowledged, nothing to do", message_id)
            return Response(status_code=204)
        task = asyncio.ensure_future(trigger(address))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        log.debug("gmail push for %s (historyId %s) acknowledged", address, history_id)
        return Response(status_code=204)

    return [Route(path, receive, methods=["POST"])]


class GmailPush:
    """The `PushChannel` for every Gmail mailbox: one watch each, one webhook for all."""

    provider = "gmail"

    def __init__(self, gmail: GmailSettings, mailboxes: Iterable[GmailMailbox]) -> None:
        self.gmail = gmail
        self.mailboxes = list(mailboxes)
        self.watches = [GmailWatch(m) for m in self.mailboxes]

    def routes(self, trigger: Callable[[str], Awaitable[None]]) -> list[Any]:
        return webhook_routes(self.gmail, trigger, addresses=[m.address for m in self.mailboxes])

    async def _each(self, what: str, fn: Callable[[GmailWatch], Awaitable[Any]]) -> None:
        """Run `fn` on every watch; a mailbox refused by Google is logged and skipped."""
        for watch in self.watches:
            try:
                await fn(watch)
            except (AccessDeniedError, AuthError) as exc:
                log.error("gmail %s skipped for %s: %s", what, watch.mailbox.describe(), exc)

    async def install(self) -> None:
        """(Re)start every watch; a changed topic or endpoint is re-aimed and reported.

        The watch names only the topic: where Pub/Sub delivers is the push subscription's
        endpoint, which the Google Cloud admin sets (manifest/google/INSTALL.md).
        """
        for watch in self.watches:
            if await watch.moved():
                state = await watch.state() or {}
                log.warning(
                    "gmail %s: push moved from %s (%s) to %s (%s); point the Pub/Sub push "
                    "subscription at the new endpoint: gcloud pubsub subscriptions "
                    "modify-push-config SUBSCRIPTION --push-endpoint=%s",
                    watch.mailbox.describe(),
                    state.get("audience"),
                    state.get("topic"),
                    self.gmail.push_audience,
                    watch.topic,
                    self.gmail.push_audience,
                )
        await self._each("watch", lambda w: w.install())

    async def renew_due(self) -> None:
        await self._each("watch renewal", lambda w: w.renew_due())

    async def uninstall(self) -> None:
        await self._each("stop", lambda w: w.uninstall())
