"""One mailbox's Gmail client: DWD credentials, quota, retries, over what mailboxes share.

google-api-python-client is synchronous (httplib2), so every call runs in a worker thread:
the process's Gmail pool (`shared.GmailShared`, `gmail.max_in_flight` threads, each with
its own kept-alive connections), not `asyncio.to_thread`'s pool, which the ledger uses and
which with many mailboxes could starve. A mailbox sends one request at a time; its quota
limiter paces it to Google's per-user quota. Retries are ours, not `num_retries`, so that
the limiter is charged for every attempt and the backoff can be zeroed in tests.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httplib2
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest, HttpRequest

from mailtriage.connectors.gmail.auth import (
    Delegation,
    authorized_http,
    delegation_from_settings,
    service_account_info,
    transport,
)
from mailtriage.connectors.gmail.errors import is_retryable, translate
from mailtriage.connectors.gmail.quota import COSTS, QuotaLimiter
from mailtriage.connectors.gmail.shared import GmailShared
from mailtriage.core.config import GmailSettings
from mailtriage.core.errors import ThrottledError
from mailtriage.core.metrics import THROTTLED

T = TypeVar("T")
Build = Callable[[Any], HttpRequest]  # users() resource -> request


def on_endpoint(request: HttpRequest, api_endpoint: str) -> HttpRequest:
    """`request` with the scheme of `api_endpoint`: for a media upload, google-api-python-
    client keeps the discovery document's `https` and swaps only the host for the endpoint
    (`discovery._fix_up_media_path_base_url`), so an `http://` endpoint (the emulator, a
    local proxy) would get a TLS handshake. Nothing changes for Google's own endpoint."""
    scheme = urlsplit(api_endpoint).scheme
    parts = urlsplit(request.uri)
    if scheme and parts.scheme != scheme:
        request.uri = urlunsplit(parts._replace(scheme=scheme))
    return request


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter: sleep random() * min(max, base * 2**attempt)."""

    max_retries: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 32.0

    def delay(self, attempt: int, hint: float | None = None) -> float:
        if self.base_delay_s <= 0:
            return 0.0
        cap = min(self.max_delay_s, self.base_delay_s * 2**attempt)
        return max(hint or 0.0, random.uniform(cap / 2, cap))


@dataclass
class ClientStats:
    """What a mailbox cost: API calls, HTTP round trips, quota units, retries."""

    calls: dict[str, int] = field(default_factory=dict)
    http_requests: int = 0
    units: int = 0
    retries: int = 0

    def count(self, api: str, n: int = 1) -> None:
        self.calls[api] = self.calls.get(api, 0) + n
        self.units += COSTS.get(api, 5) * n


class GmailClient:
    """Rate-limited, retrying access to one mailbox (`userId` = the mailbox address)."""

    def __init__(
        self,
        address: str,
        http: Any,
        *,
        api_endpoint: str,
        limiter: QuotaLimiter,
        retry: RetryPolicy,
        batch_size: int = 50,
        client_id: str | None = None,
        shared: GmailShared | None = None,
    ) -> None:
        self.address = address
        self.api_endpoint = api_endpoint if api_endpoint.endswith("/") else api_endpoint + "/"
        self.http = http
        self.limiter = limiter
        self.retry = retry
        self.batch_size = batch_size
        self.client_id = client_id
        self.stats = ClientStats()
        self._lock = threading.Lock()
        self._async_lock = asyncio.Lock()
        # Alone (tests, doctor), a mailbox gets a pool of its own: one thread.
        self.shared = shared or GmailShared(self.api_endpoint, httplib2.Http, max_in_flight=1)
        self.shared.attach()
        self._closed = False

    @classmethod
    def from_settings(
        cls,
        gmail: GmailSettings,
        address: str,
        delegation: Delegation | None = None,
        *,
        shared: GmailShared | None = None,
    ) -> GmailClient:
        if delegation is None:
            delegation = delegation_from_settings(gmail)
        shared = shared or shared_for(gmail, 1)
        return cls(
            address,
            authorized_http(gmail, address, delegation, http=shared.http),
            api_endpoint=gmail.api_endpoint,
            limiter=QuotaLimiter(gmail.quota_units_per_s),
            retry=RetryPolicy(gmail.max_retries, gmail.retry_base_delay_s, gmail.retry_max_delay_s),
            batch_size=gmail.batch_size,
            client_id=delegation.client_id if delegation else None,
            shared=shared,
        )

    def close(self) -> None:
        """Let go of the shared threads and connections (closed with the last mailbox)."""
        if not self._closed:
            self._closed = True
            self.shared.detach()

    @property
    def users(self) -> Any:
        return self.shared.users

    def _build(self, make: Build) -> HttpRequest:
        """A request built from the shared service, sent with this mailbox's credentials."""
        request = make(self.users)
        request.http = self.http
        return request

    def _run(self, fn: Callable[[], T]) -> T:
        with self._lock:
            self.stats.http_requests += 1
            return fn()

    async def _send(self, units: int, fn: Callable[[], T]) -> T:
        async with self._async_lock:
            await self.limiter.acquire(units)
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self.shared.executor, self._run, fn)
            finally:
                self.limiter.answered()  # Google counted the units by now (quota.py)

    async def call(self, api: str, make: Build) -> Any:
        """Execute one request (built by `make(users)`), with quota and retries."""
        attempt = 0
        while True:
            try:
                return await self._single(api, make)
            except Exception as exc:
                if is_retryable(exc, api) and attempt < self.retry.max_retries:
                    self.stats.retries += 1
                    THROTTLED.labels("gmail", self.address).inc()
                    await asyncio.sleep(self.retry.delay(attempt))
                    attempt += 1
                    continue
                raise translate(exc, self.address, self.client_id, api) from exc

    async def batch(self, api: str, makes: Sequence[Build]) -> list[Any]:
        """Run many requests of one kind in HTTP batches of at most `batch_size`.

        Returns one item per request, in order: the response, or a `core.errors` exception
        for that item. Throttled items are retried in a later batch.
        """
        results: list[Any] = [None] * len(makes)
        pending = list(range(len(makes)))
        attempt = 0
        cost = COSTS.get(api, 5)
        per_batch = max(1, min(self.batch_size, int(self.limiter.budget) // cost))
        while pending:
            retry: list[int] = []
            for start in range(0, len(pending), per_batch):
                chunk = pending[start : start + per_batch]
                outcome = await self._batch_once(api, [makes[i] for i in chunk])
                for index, (response, exc) in zip(chunk, outcome, strict=True):
                    if exc is None:
                        results[index] = response
                    elif is_retryable(exc) and attempt < self.retry.max_retries:
                        retry.append(index)
                    else:
                        results[index] = translate(exc, self.address, self.client_id)
            if retry:
                self.stats.retries += len(retry)
                THROTTLED.labels("gmail", self.address).inc(len(retry))
                await asyncio.sleep(self.retry.delay(attempt))
                attempt += 1
            pending = retry
        return results

    async def _batch_once(
        self, api: str, makes: Sequence[Build]
    ) -> list[tuple[Any, BaseException | None]]:
        if len(makes) == 1:  # a batch of one is just an extra envelope
            try:
                return [(await self._single(api, makes[0]), None)]
            except Exception as exc:
                return [(None, exc)]
        out: dict[str, tuple[Any, BaseException | None]] = {}

        def collect(request_id: str, response: Any, exception: BaseException | None) -> None:
            out[request_id] = (response, exception)

        batch = BatchHttpRequest(callback=collect, batch_uri=self.api_endpoint + "batch/gmail/v1")
        for i, make in enumerate(makes):
            batch.add(self._build(make), request_id=str(i))
        self.stats.count(api, len(makes))
        try:
            await self._send(COSTS.get(api, 5) * len(makes), lambda: batch.execute(http=self.http))
        except Exception as exc:  # the whole envelope failed: every item failed alike
            return [(None, exc)] * len(makes)
        missing = (None, ThrottledError("missing batch part", mailbox=self.address))
        return [out.get(str(i), missing) for i in range(len(makes))]

    async def _single(self, api: str, make: Build) -> Any:
        request = self._build(make)
        self.stats.count(api)
        return await self._send(COSTS.get(api, 5), lambda: request.execute(num_retries=0))


def shared_for(gmail: GmailSettings, mailboxes: int) -> GmailShared:
    """The threads and connections for `mailboxes` mailboxes: the process budget, or fewer
    when there are fewer mailboxes than that (a mailbox sends one request at a time)."""
    return GmailShared(
        gmail.api_endpoint,
        lambda: transport(gmail),
        max_in_flight=max(1, min(gmail.max_in_flight, mailboxes)),
    )


__all__ = [
    "ClientStats",
    "GmailClient",
    "HttpError",
    "RetryPolicy",
    "on_endpoint",
    "service_account_info",
    "shared_for",
]
