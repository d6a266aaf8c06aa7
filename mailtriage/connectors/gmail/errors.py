"""Translate google-api-python-client and google-auth errors into `core/errors.py`.

Which failures are worth retrying is decided here too: 429, 5xx, and 403 only when the
reason is `rateLimitExceeded` / `userRateLimitExceeded` (other 403s never heal by waiting).
A call that is not idempotent (`messages.send`) is retried only when Gmail refused it
(429 and the rate-limit 403s, developers.google.com/workspace/gmail/api/guides/handle-
errors); after a 5xx, a timeout or a dropped connection it may have been sent, and it
surfaces as `OutcomeUnknownError` for the connector to look for the sent copy first.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from google.auth.exceptions import RefreshError, TransportError
from googleapiclient.errors import HttpError

from mailtriage.core.errors import (
    AccessDeniedError,
    AuthError,
    ConnectorError,
    CursorExpiredError,
    NotFoundError,
    OutcomeUnknownError,
    ThrottledError,
)

# API methods whose repetition would repeat their effect.
NOT_IDEMPOTENT = frozenset({"messages.send", "drafts.send"})
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
GMAIL_MODIFY = "https://www.googleapis.com/auth/gmail.modify"


def delegation_fix(mailbox: str, client_id: str | None) -> str:
    """The admin-console steps that grant the service account access to `mailbox`."""
    who = f"client ID {client_id}" if client_id else "the service account's client ID"
    return (
        f"{mailbox}: the service account may not act on this mailbox. In the Google Admin "
        f"console open Security → Access and data control → API controls → Manage Domain Wide "
        f"Delegation, add {who} with scope {GMAIL_MODIFY}, and check that {mailbox} is a real "
        f"user mailbox (Google Groups and collaborative inboxes cannot be read through the "
        f"Gmail API)."
    )


def error_reason(exc: HttpError) -> str:
    """The first `errors[].reason` of a Google JSON error body ('' when absent)."""
    details: Any = getattr(exc, "error_details", None)
    if isinstance(details, list):
        for item in details:
            if isinstance(item, dict) and item.get("reason"):
                return str(item["reason"])
    try:
        body = json.loads(exc.content)
        return str(body["error"]["errors"][0]["reason"])
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def refused(exc: BaseException) -> bool:
    """Gmail said it did not process the request: throttled (429 or a rate-limit 403)."""
    if not isinstance(exc, HttpError):
        return False
    status = exc.status_code
    return status == 429 or (status == 403 and error_reason(exc) in RATE_LIMIT_REASONS)


def outcome_unknown(exc: BaseException) -> bool:
    """The request may have been processed: a 5xx, a 408, a timeout or a lost answer."""
    if isinstance(exc, HttpError):
        status = int(exc.status_code or 0)
        return status >= 500 or status == 408
    if isinstance(exc, TransportError):  # google-auth: the token, before any API call
        return False
    return isinstance(exc, (OSError, http.client.HTTPException))  # timeouts, resets, drops


def is_retryable(exc: BaseException, api: str | None = None) -> bool:
    """Throttling, server errors and dropped connections are retried; nothing else.

    For a call that is not idempotent, only a refusal is retried blindly.
    """
    if api in NOT_IDEMPOTENT:
        return refused(exc)
    if isinstance(exc, HttpError):
        status = exc.status_code
        if status == 429 or status >= 500:
            return True
        return status == 403 and error_reason(exc) in RATE_LIMIT_REASONS
    return isinstance(
        exc,
        (TransportError, socket.timeout, ConnectionError, TimeoutError, http.client.HTTPException),
    )


def retry_after(exc: BaseException) -> float | None:
    resp = getattr(exc, "resp", None)
    value = resp.get("retry-after") if resp is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def translate(
    exc: BaseException, mailbox: str, client_id: str | None = None, api: str | None = None
) -> Exception:
    """The `core.errors` exception for `exc`; callers `raise translate(...) from exc`."""
    if api in NOT_IDEMPOTENT and outcome_unknown(exc):
        return OutcomeUnknownError(
            f"{mailbox}: {api} may have been done: {exc!r}"[:500], mailbox=mailbox
        )
    if isinstance(exc, RefreshError):
        text = str(exc.args[0] if exc.args else exc)
        if "unauthorized_client" in text or ("invalid_grant" in text and "User" in text):
            return AccessDeniedError(delegation_fix(mailbox, client_id), mailbox=mailbox)
        return AuthError(f"{mailbox}: cannot obtain a Google access token: {text}", mailbox=mailbox)
    if isinstance(exc, HttpError):
        status, reason = exc.status_code, error_reason(exc)
        what = f"{mailbox}: Gmail API {status} {reason or ''} {exc.reason}".rstrip()
        if status == 429 or (status == 403 and reason in RATE_LIMIT_REASONS):
            return ThrottledError(what, mailbox=mailbox, retry_after_s=retry_after(exc))
        if status == 401:
            return AuthError(what, mailbox=mailbox)
        if status == 403:
            fix = delegation_fix(mailbox, client_id)
            return AccessDeniedError(f"{what}. {fix}", mailbox=mailbox)
        if status == 404:
            return NotFoundError(what, mailbox=mailbox)
        return ConnectorError(what, mailbox=mailbox)
    return ConnectorError(f"{mailbox}: Gmail request failed: {exc!r}", mailbox=mailbox)


def is_expired_cursor(exc: BaseException) -> bool:
    return isinstance(exc, (NotFoundError, CursorExpiredError)) or (
        isinstance(exc, HttpError) and exc.status_code == 404
    )
