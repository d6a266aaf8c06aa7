"""What the Gmail mailboxes of one process share: the API description, threads, connections.

Before, every mailbox built its own discovery service, its own worker thread and its own
httplib2 connection, and rebuilt `users().messages()` for every request (about 2 ms of CPU
each: google-api-python-client creates a method object for every method of a resource
each time one is built). Shared now, per process:

- one service built from the discovery document, with `users()` and the resources under
  it built once (`CachedResource`);
- one pool of worker threads, `gmail.max_in_flight` of them: the process's budget of
  requests in flight, whatever the number of mailboxes (google-api-python-client is
  synchronous);
- one httplib2 connection set per worker thread (`PooledHttp`), so connections are as many
  as the budget and stay open between requests, whichever mailbox sends.

Credentials stay per mailbox (domain-wide delegation gives a token per user): each
mailbox's `AuthorizedHttp` adds its token over the shared `PooledHttp`, and each request
built from the shared service is pointed at that mailbox's `AuthorizedHttp`. A mailbox
sends one request at a time (`GmailClient`), so no two threads ever use one mailbox's
credentials at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from googleapiclient.discovery import build

DEFAULT_IN_FLIGHT = 16


class CachedResource:
    """A discovery `Resource` whose nested resources are built once and then reused.

    `users().messages()` on a plain Resource builds a new Resource, with a method object
    per API method, every time. Requests are still built fresh (`.get(...)`).
    """

    def __init__(self, resource: Any) -> None:
        self._resource = resource
        self._nested: dict[str, CachedResource] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._resource, name)
        if not getattr(attr, "__is_resource__", False):
            return attr

        def nested() -> CachedResource:
            child = self._nested.get(name)
            if child is None:
                child = self._nested[name] = CachedResource(attr())
            return child

        return nested


class PooledHttp:
    """An httplib2 transport per thread, made by `factory` on first use in that thread.

    `httplib2.Http` is not thread-safe; giving each worker thread its own keeps one set of
    kept-alive connections per worker, shared by every mailbox that thread serves.
    """

    credentials = None  # it carries none: each mailbox's AuthorizedHttp adds its own

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._local = threading.local()
        self._made: list[Any] = []
        self._lock = threading.Lock()

    def _http(self) -> Any:
        http = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = self._factory()
            with self._lock:
                self._made.append(http)
        return http

    def request(self, *args: Any, **kwargs: Any) -> Any:
        return self._http().request(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # timeout, follow_redirects, connections...
        return getattr(self._http(), name)

    @property
    def made(self) -> int:
        """How many transports (connection sets) exist."""
        return len(self._made)

    def close(self) -> None:
        with self._lock:
            made, self._made = self._made, []
        for http in made:
            http.close()


class GmailShared:
    """The service, worker threads and connections of one process's Gmail mailboxes."""

    def __init__(
        self, api_endpoint: str, factory: Callable[[], Any], *, max_in_flight: int
    ) -> None:
        self.api_endpoint = api_endpoint if api_endpoint.endswith("/") else api_endpoint + "/"
        self.http = PooledHttp(factory)
        self.max_in_flight = max_in_flight
        self.executor = ThreadPoolExecutor(
            max_workers=max_in_flight, thread_name_prefix="mailtriage-gmail"
        )
        service = build(
            "gmail",
            "v1",
            http=self.http,
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": self.api_endpoint},
        )
        self.users = CachedResource(service.users())
        self._users = 0
        self._closed = False

    def attach(self) -> None:
        """One more mailbox uses this (closed when the last one detaches)."""
        self._users += 1

    def detach(self) -> None:
        self._users -= 1
        if self._users <= 0 and not self._closed:
            self._closed = True
            self.executor.shutdown(wait=False)
            self.http.close()


__all__ = ["DEFAULT_IN_FLIGHT", "CachedResource", "GmailShared", "PooledHttp"]
