"""Building a `GraphServiceClient`: credentials, base URL, retry and the per-mailbox cap.

The SDK's own RetryHandler is switched off and replaced by `GraphTransport`, because:
- it falls back to a ≥3 s backoff when `Retry-After: 0` is sent and cannot be zeroed in tests;
- it honours any Retry-After below 180 s without a bound of our choosing;
- it sits above the transport, so a semaphore placed there would be held while it sleeps.
`GraphTransport` limits requests in flight per mailbox (Outlook allows 4) and retries
429/503/504 honouring Retry-After, sleeping *outside* the semaphore. A write that is not
idempotent (send, createForward, forward, move, a new message or subscription) is retried
here only on 429, which Graph documents as a refused request ("the requests fail",
learn.microsoft.com/graph/throttling); after a 503/504 it may have been done, so it goes
back to the connector, which looks for its evidence before trying again.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from kiota_abstractions.authentication import (
    AnonymousAuthenticationProvider,
    AuthenticationProvider,
)
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from mailtriage.connectors.graph.bounded import BoundedTransport
from mailtriage.core.config import GraphSettings, read_secret
from mailtriage.core.errors import ConfigError
from mailtriage.core.metrics import THROTTLED

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
RETRY_STATUSES = frozenset({429, 503, 504})
# Statuses after which a non-idempotent request is known not to have been processed.
REFUSED_STATUSES = frozenset({429})
# Transport failures after which a request may have been done (its answer is lost); a
# request that is safe to repeat is repeated up to LOST_ANSWER_RETRIES times.
_LOST_ANSWER = (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout)
LOST_ANSWER_RETRIES = 2
# POSTs that are safe to repeat: a second folder or master category create answers 409.
_IDEMPOTENT_POSTS = ("/childfolders", "/mailfolders", "/mastercategories")
_USER = re.compile(r"/users/([^/]+)", re.I)


@dataclass
class RetryPolicy:
    """How throttled requests are retried; tests set `delay_scale = 0`."""

    max_retries: int = 8
    base_delay_s: float = 0.5
    max_backoff_s: float = 30.0
    # A Retry-After above this is not waited for: the error surfaces as ThrottledError.
    max_retry_after_s: float = 120.0

    delay_scale = 1.0  # class attribute, shared: 0 in tests

    def delay(self, attempt: int, retry_after: str | None) -> float | None:
        """Seconds to wait before retry `attempt` (0-based); None means give up."""
        wait = parse_retry_after(retry_after)
        if wait is None:
            wait = min(self.base_delay_s * 2**attempt, self.max_backoff_s)
        elif wait > self.max_retry_after_s:
            return None
        return wait * RetryPolicy.delay_scale


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (delta-seconds or HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def mailbox_of(url: httpx.URL | str) -> str:
    """The mailbox a request targets ('/users/{id}/...'), '' for tenant-level calls."""
    path = urlsplit(str(url)).path
    m = _USER.search(path)
    return unquote(m.group(1)).lower() if m else ""


def is_idempotent(request: httpx.Request) -> bool:
    """Whether repeating `request` after a lost answer is harmless."""
    if request.method != "POST":
        return True  # GET, and PATCH/PUT/DELETE, which set state rather than add to it
    return urlsplit(str(request.url)).path.lower().rstrip("/").endswith(_IDEMPOTENT_POSTS)


class GraphTransport(httpx.AsyncBaseTransport):
    """Caps requests in flight per mailbox and retries throttled ones (Retry-After)."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        max_concurrency: int = 4,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport()
        self._limit = max_concurrency
        self._sems: dict[str, asyncio.Semaphore] = {}
        self.policy = policy or RetryPolicy()
        self.requests = 0
        self.retries = 0
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}

    def _sem(self, key: str) -> asyncio.Semaphore:
        sem = self._sems.get(key)
        if sem is None:
            sem = self._sems[key] = asyncio.Semaphore(self._limit)
        return sem

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = mailbox_of(request.url)
        retry_on = RETRY_STATUSES if is_idempotent(request) else REFUSED_STATUSES
        attempt = 0
        while True:
            async with self._sem(key):
                self.requests += 1
                n = self.in_flight[key] = self.in_flight.get(key, 0) + 1
                self.max_in_flight[key] = max(self.max_in_flight.get(key, 0), n)
                try:
                    response = await self._inner.handle_async_request(request)
                except _LOST_ANSWER:
                    # The answer of a request that is safe to repeat was lost: repeat it.
                    if not is_idempotent(request) or attempt >= LOST_ANSWER_RETRIES:
                        raise
                    attempt += 1
                    self.retries += 1
                    continue
                finally:
                    self.in_flight[key] -= 1
            if response.status_code not in retry_on or attempt >= self.policy.max_retries:
                return response
            delay = self.policy.delay(attempt, response.headers.get("retry-after"))
            if delay is None:
                return response
            await response.aread()
            await response.aclose()
            attempt += 1
            self.retries += 1
            THROTTLED.labels("graph", key).inc()
            if delay:
                await asyncio.sleep(delay)

    async def aclose(self) -> None:
        await self._inner.aclose()


class StaticTokenCredential:
    """A TokenCredential returning a fixed token (sandbox only: `graph.anonymous`)."""

    def __init__(self, token: str = "sandbox-token") -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)


def build_credential(settings: GraphSettings) -> Any:
    """An async azure-identity credential from the settings (secret or certificate).

    azure-identity refuses a non-https `authority`: the emulator serves its token endpoint
    over https with a throwaway certificate (`GraphEmulator.start_authority()`), trusted
    through `graph.ca_bundle_file`.
    """
    from azure.identity.aio import CertificateCredential, ClientSecretCredential

    if not settings.tenant_id or not settings.client_id:
        raise ConfigError("graph.tenant_id and graph.client_id are required")
    kwargs: dict[str, Any] = {}
    if settings.authority_host:
        kwargs["authority"] = settings.authority_host
        host = urlsplit(settings.authority_host).hostname or settings.authority_host
        if not host.startswith("login."):  # not a Microsoft cloud: no instance discovery
            kwargs["disable_instance_discovery"] = True
    if settings.ca_bundle_file:
        kwargs["connection_verify"] = settings.ca_bundle_file
    secret = read_secret(
        settings.client_secret_env, settings.client_secret_file, what="graph.client_secret_env"
    )
    if secret is not None:
        return ClientSecretCredential(
            settings.tenant_id, settings.client_id, secret.get_secret_value(), **kwargs
        )
    if settings.certificate_file:
        password = read_secret(
            settings.certificate_password_env, None, what="graph.certificate_password_env"
        )
        path = Path(settings.certificate_file).expanduser()
        try:
            return CertificateCredential(
                settings.tenant_id,
                settings.client_id,
                str(path),
                password=password.get_secret_value() if password else None,
                **kwargs,
            )
        except OSError as exc:
            raise ConfigError(
                f"graph.certificate_file: cannot read {path}: {exc.strerror}"
            ) from None
        except ValueError:  # azure-identity's text may quote the file: not repeated
            raise ConfigError(
                f"graph.certificate_file: {path} is not a PEM or PKCS12 certificate with its "
                "private key (or graph.certificate_password_env is wrong)"
            ) from None
    raise ConfigError(
        "graph: give client_secret_env, client_secret_file or certificate_file "
        "(app-only credentials of the Entra app)"
    )


@dataclass
class GraphClient:
    """The SDK client plus what mailtriage needs around it (transport stats, closing)."""

    sdk: GraphServiceClient
    http: httpx.AsyncClient
    transport: GraphTransport
    base_url: str
    credential: Any = None

    async def aclose(self) -> None:
        await self.http.aclose()
        close = getattr(self.credential, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result


def build_client(
    settings: GraphSettings,
    *,
    credential: Any = None,
    inner_transport: httpx.AsyncBaseTransport | None = None,
    policy: RetryPolicy | None = None,
) -> GraphClient:
    """A GraphServiceClient on `settings.base_url` with the SDK's middleware minus its retry.

    `adapter.base_url` is set explicitly: without it the SDK requests `/v1.0//users/...`.
    """
    base = settings.base_url.rstrip("/")
    # Message reads have their long JSON strings (bodies) cut as they stream: bounded.py.
    bounded = BoundedTransport(inner_transport or httpx.AsyncHTTPTransport())
    transport = GraphTransport(bounded, max_concurrency=settings.max_concurrency, policy=policy)
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(base_url=base, transport=transport, timeout=settings.timeout_s),
        options={RetryHandlerOption.get_key(): RetryHandlerOption(max_retries=0)},
    )
    if credential is None and not settings.anonymous:
        credential = build_credential(settings)
    auth: AuthenticationProvider
    if credential is None:
        auth = AnonymousAuthenticationProvider()
    else:
        host = urlsplit(base).hostname or ""
        auth = AzureIdentityAuthenticationProvider(
            credential, scopes=[GRAPH_SCOPE], allowed_hosts=[host]
        )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = base
    return GraphClient(
        GraphServiceClient(request_adapter=adapter), http, transport, base, credential
    )
