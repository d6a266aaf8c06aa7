"""Translate msgraph-sdk / azure-identity / httpx failures into `mailtriage.core.errors`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from kiota_abstractions.api_error import APIError

from mailtriage.connectors.graph.transport import parse_retry_after
from mailtriage.core.errors import (
    AccessDeniedError,
    AuthError,
    ConnectorError,
    CursorExpiredError,
    NotFoundError,
    ThrottledError,
)

CURSOR_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})
ACCESS_CODES = frozenset(
    {"erroraccessdenied", "accessdenied", "extensionerror", "authorization_requestdenied"}
)


def access_fix(mailbox: str) -> str:
    return (
        f"Microsoft 365 denied the mailtriage app access to mailbox {mailbox}. Fix: add it to "
        "the app's RBAC for Applications management scope (manifest/m365/scope-mailboxes.ps1, "
        "New-ManagementScope / New-ManagementRoleAssignment) and check with "
        f"Test-ServicePrincipalAuthorization -Identity <app id> -Resource {mailbox}"
    )


def error_code(exc: APIError) -> str:
    """The Graph error code of an ODataError ('' when the body had none)."""
    err = getattr(exc, "error", None)
    return str(getattr(err, "code", "") or "")


def error_message(exc: APIError) -> str:
    err = getattr(exc, "error", None)
    return str(getattr(err, "message", "") or exc.message or exc)


# httpx's timeout phases, and what running out of each means.
_TIMEOUT_PHASE = {
    httpx.ConnectTimeout: ("connect", "no connection"),
    httpx.ReadTimeout: ("read", "no answer"),
    httpx.WriteTimeout: ("write", "request not sent"),
    httpx.PoolTimeout: ("pool", "no free connection"),
}


def describe(exc: BaseException) -> str:
    """`ReadTimeout: no answer within 30 s (GET /v1.0/users/…/delta)`: the exception's type,
    then its text, its cause's, or for a timeout (httpx gives none) the limit it hit."""
    text = str(exc).strip()
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, httpx.TimeoutException) and (not text or text == type(exc).__name__):
        text = _timeout_text(exc)
    elif not text and cause is not None and str(cause).strip():
        text = f"{type(cause).__name__}: {cause}"
    return f"{type(exc).__name__}: {text or 'no detail'}"


def _timeout_text(exc: httpx.TimeoutException) -> str:
    try:
        request = exc.request
    except RuntimeError:  # raised outside a request
        return "timed out"
    phase, what = _TIMEOUT_PHASE.get(type(exc), ("read", "no answer"))
    limit = (request.extensions.get("timeout") or {}).get(phase)
    within = f"{what} within {limit:g} s" if limit else "timed out"
    return f"{within} ({request.method} {request.url.path})"


def translate(exc: BaseException, mailbox: str | None) -> ConnectorError:
    """The core error for one SDK/transport/auth exception."""
    where = f" (mailbox {mailbox})" if mailbox else ""
    if isinstance(exc, APIError):
        status = exc.response_status_code or 0
        code = error_code(exc)
        low = code.lower()
        text = f"Graph {status} {code}: {error_message(exc)}{where}"
        if status == 401 or low in {"invalidauthenticationtoken", "unauthenticated"}:
            return AuthError(
                text + ". Check graph.tenant_id, client_id and the secret/certificate.",
                mailbox=mailbox,
            )
        if status == 403 and low in ACCESS_CODES:
            return AccessDeniedError(access_fix(mailbox or "?") + f" [{code}]", mailbox=mailbox)
        if status in (429, 503, 504):
            headers = exc.response_headers or {}
            ra = None
            for k, v in dict(headers).items():
                if str(k).lower() == "retry-after":
                    ra = parse_retry_after(v if isinstance(v, str) else ",".join(v))
            return ThrottledError(text, mailbox=mailbox, retry_after_s=ra)
        if status == 410 or low in CURSOR_CODES:
            return CursorExpiredError(text, mailbox=mailbox)
        if status == 404:
            return NotFoundError(text, mailbox=mailbox)
        return ConnectorError(text, mailbox=mailbox)
    try:
        from azure.core.exceptions import ClientAuthenticationError
    except ImportError:  # pragma: no cover
        ClientAuthenticationError = ()  # type: ignore[assignment,misc]
    if isinstance(exc, ClientAuthenticationError):
        return AuthError(
            "Could not obtain a Microsoft Graph token: check graph.tenant_id, client_id and "
            f"the client secret/certificate ({type(exc).__name__})",
            mailbox=mailbox,
        )
    if isinstance(exc, httpx.HTTPError):
        # httpx's timeouts often have no text at all: the type is what says what happened.
        return ConnectorError(f"Graph transport error{where}: {describe(exc)}", mailbox=mailbox)
    return ConnectorError(f"Graph call failed{where}: {type(exc).__name__}: {exc}", mailbox=mailbox)


# Transport failures after which the request may have reached Graph. A failure to connect
# (ConnectError, ConnectTimeout, PoolTimeout) means it was never sent.
_MAYBE_SENT = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


def outcome_unknown(exc: BaseException) -> bool:
    """Whether a failed write may have been done: a lost answer, a timeout or a 5xx.

    Only 429 says the request was refused ("the requests fail", learn.microsoft.com/graph/
    throttling); a 503 or 504 says nothing of the kind (learn.microsoft.com/graph/errors),
    so the write is looked for before it is tried again.
    """
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, APIError):
            status = cause.response_status_code or 0
            return status >= 500 or status == 408
        if isinstance(cause, _MAYBE_SENT):
            return True
        if isinstance(cause, httpx.HTTPError):
            return False
        cause = cause.__cause__
    return False


@contextmanager
def map_graph_errors(mailbox: str | None) -> Iterator[None]:
    """`with map_graph_errors(addr): ...` raises core errors, chained to the original."""
    try:
        yield
    except ConnectorError:
        raise
    except (APIError, httpx.HTTPError) as exc:
        raise translate(exc, mailbox) from exc
    except Exception as exc:
        if type(exc).__module__.startswith(("azure.", "msal")):
            raise translate(exc, mailbox) from exc
        raise
