"""Fault injection shared by the emulators: lost answers and hooks on executed writes.

Real networks and gateways fail after the server has done the work: the connection drops
before the answer arrives, or a gateway answers 503/504 for a request the backend
completed. `Executed` records every write an emulator performed; `WriteHooks` lets a test
act at that moment (kill the client process, before the answer leaves); `DroppedResponse`
closes the connection instead of answering ("drop": not one byte of the answer, which
httplib2 takes for a stale connection and silently repeats; "truncate": the status line
and part of the body).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send


class ConnectionDropped(Exception):
    """Raised inside the ASGI app to make uvicorn close the connection mid-answer."""


RAW_SEND = "mt.raw_send"


def keep_raw_send(scope: Scope, send: Send) -> None:
    """Remember uvicorn's own `send` (before any middleware wraps it) for `DroppedResponse`."""
    scope[RAW_SEND] = send


def _abort(scope: Scope) -> bool:
    """Reset the client's TCP connection now (uvicorn's cycle holds the transport)."""
    cycle = getattr(scope.get(RAW_SEND), "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        return False
    transport.abort()
    return True


class DroppedResponse:
    """No answer: the connection closes (`truncate`: after a partial answer).

    For "drop" the TCP connection is aborted before any byte of the answer (httpx:
    RemoteProtocolError "Server disconnected"; http.client: RemoteDisconnected). For
    "truncate" uvicorn closes the transport when the app fails after the response has
    started: the client gets a cut body (httpx: RemoteProtocolError; http.client:
    IncompleteRead).
    """

    status_code = 200

    def __init__(self, truncate: bool = False) -> None:
        self.truncate = truncate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.truncate and _abort(scope):
            raise ConnectionDropped("connection reset after the request was executed")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"512")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"', "more_body": True})
        raise ConnectionDropped("connection dropped after the request was executed")


class _QuietDrops(logging.Filter):
    """Keep uvicorn's log free of the tracebacks of deliberate drops, and of clients that
    were killed mid-request (chaos tests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from starlette.requests import ClientDisconnect

        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, ConnectionDropped | ClientDisconnect):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


@dataclass(frozen=True, slots=True)
class Executed:
    """One write an emulator performed: its kind, mailbox, target and what changed."""

    kind: str  # "send", "createForward", "move", "patch", "delete" / "messages.send", ...
    mailbox: str
    target: str  # the message acted on (Graph immutable id, Gmail message id)
    at: float = field(default_factory=time.monotonic)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class AfterFault:
    """Perform the next `times` matching writes, then answer `mode` instead of the result."""

    kind: str | None
    mode: str  # "drop", "truncate", "503" or "504"
    times: int = 1
    mailbox: str | None = None


class WriteHooks:
    """Executed writes, after-faults and callbacks, shared by one emulator's threads."""

    MODES = ("drop", "truncate", "503", "504")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[Executed] = []
        self.faults: list[AfterFault] = []
        self.callbacks: list[tuple[str | None, Callable[[Executed], None]]] = []

    def lose(
        self,
        kind: str | None = None,
        mode: str = "drop",
        *,
        times: int = 1,
        mailbox: str | None = None,
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}")
        with self.lock:
            self.faults.append(AfterFault(kind, mode, times, mailbox.lower() if mailbox else None))

    def on_executed(self, kind: str | None, callback: Callable[[Executed], None]) -> None:
        """Call `callback(executed)` after each write of `kind` (None: every write)."""
        with self.lock:
            self.callbacks.append((kind, callback))

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.callbacks.clear()

    def executed(self, record: Executed) -> str | None:
        """Log a performed write, run the callbacks; the after-fault mode to answer, if any."""
        with self.lock:
            self.log.append(record)
            callbacks = [cb for k, cb in self.callbacks if k in (None, record.kind)]
            mode = None
            for f in self.faults:
                if (
                    f.times > 0
                    and f.kind in (None, record.kind)
                    and f.mailbox
                    in (
                        None,
                        record.mailbox,
                    )
                ):
                    f.times -= 1
                    mode = f.mode
                    break
        for callback in callbacks:
            callback(record)
        return mode

    def count(self, kind: str, target: str | None = None) -> int:
        with self.lock:
            return sum(
                1 for e in self.log if e.kind == kind and (target is None or e.target == target)
            )
