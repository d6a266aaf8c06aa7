"""Structured JSON logs (structlog) that never carry bodies or secrets.

Events carry mailbox and message ids. A processor drops any field whose name says it could
hold message content or a credential, whatever a caller passes by mistake.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_FORBIDDEN = ("body", "text", "content", "secret", "password", "token", "api_key", "authorization")


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key != "event" and any(word in key.lower() for word in _FORBIDDEN):
            event[key] = "[redacted]"
    return event


class _Stderr:
    """Writes to whatever `sys.stderr` is at write time (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(*, json: bool = True, level: str = "INFO", stream: Any = None) -> None:
    """Send structlog and stdlib logging to `stream` (stderr) as JSON lines."""
    lvl = getattr(logging, level.upper(), logging.INFO)
    out = stream or _Stderr()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    # Library logs (stdlib logging) leave as the same JSON lines as mailtriage's own.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(lvl)
    for noisy in (
        "httpx",
        "httpcore",
        "uvicorn.access",
        "googleapiclient.discovery_cache",
        "azure",
        "apscheduler",
    ):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
