"""The IAM Credentials `signJwt` method and the refresh-token grant, for key-less delegation.

`signJwt` signs a caller-supplied JWT claims set with the service account's key, which the
emulator already holds (Google would use a Google-managed key; either way the token
endpoint verifies the signature). The caller authenticates with its own access token
and must hold roles/iam.serviceAccountTokenCreator on the service account.

Pages followed (see `mailtriage/sandbox/README.md` for the table):
https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/signJwt
and, for error bodies, https://cloud.google.com/apis/design/errors.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailtriage.sandbox.gmail.keys import ServiceAccountKey
from mailtriage.sandbox.gmail.state import GmailState

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
IAM_SCOPES = frozenset({CLOUD_PLATFORM, "https://www.googleapis.com/auth/iam"})
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
# "it must be an integer timestamp that is not in the past and no more than 12 hours in
# the future" (signJwt, payload field).
MAX_EXP_S = 12 * 3600


@dataclass
class IamPolicy:
    """Who may sign as the service account, and the refresh tokens of known principals."""

    token_creators: set[str] = field(default_factory=set)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token → principal
    sign_calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def grant_token_creator(self, principal: str) -> None:
        with self.lock:
            self.token_creators.add(principal.lower())

    def revoke_token_creator(self, principal: str) -> None:
        with self.lock:
            self.token_creators.discard(principal.lower())


def google_error(code: int, status: str, message: str, **info: Any) -> JSONResponse:
    """Google's v2 error body `{"error": {"code", "message", "status", "details"?}}`."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if info:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", **info}]
    return JSONResponse({"error": error}, status_code=code)


def _denied(permission: str) -> JSONResponse:
    # With the `-` wildcard, an unknown account is 403 too, not 404 (signJwt page, `name`).
    return google_error(
        403,
        "PERMISSION_DENIED",
        f"Permission '{permission}' denied on resource (or it may not exist).",
        reason="IAM_PERMISSION_DENIED",
        domain="iam.googleapis.com",
        metadata={"permission": permission},
    )


def _check_payload(raw: str) -> dict[str, Any] | str:
    """The claims set, or what is wrong with it."""
    try:
        claims = json.loads(raw)
    except ValueError:
        return "payload is not a valid JSON object"
    if not isinstance(claims, dict):
        return "payload is not a valid JSON object"
    exp = claims.get("exp")
    if exp is not None:
        now = time.time()
        if not isinstance(exp, int) or isinstance(exp, bool):
            return "exp must be an integer timestamp"
        if exp < now:
            return "exp is in the past"
        if exp > now + MAX_EXP_S:
            return "exp is more than 12 hours in the future"
    return claims


def sign_jwt_endpoint(state: GmailState, account: ServiceAccountKey, policy: IamPolicy) -> Any:
    """POST /v1/projects/{project}/serviceAccounts/{email}:signJwt → {keyId, signedJwt}."""

    async def sign_jwt(request: Request) -> Response:
        project = request.path_params["project"]
        name, _, method = str(request.path_params["rest"]).rpartition(":")
        if method != "signJwt":
            return google_error(404, "NOT_FOUND", "Method not found.")
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        with state.lock:
            token = state.tokens.get(bearer)
        if token is None or token.expires < time.time():
            return google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            )
        if not token.scopes & IAM_SCOPES:
            return google_error(
                403,
                "PERMISSION_DENIED",
                "Request had insufficient authentication scopes.",
                reason="ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                domain="googleapis.com",
            )
        if project != "-":
            return google_error(
                400,
                "INVALID_ARGUMENT",
                "The project in the resource name must be the '-' wildcard.",
            )
        with policy.lock:
            allowed = token.subject in policy.token_creators
        if name.lower() not in (account.client_email, account.client_id) or not allowed:
            return _denied("iam.serviceAccounts.signJwt")
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if not isinstance(body, dict) or not isinstance(body.get("payload"), str):
            return google_error(400, "INVALID_ARGUMENT", "payload is required.")
        if body.get("delegates"):
            # Delegation chains are not emulated: refuse rather than pretend.
            return google_error(400, "INVALID_ARGUMENT", "delegates are not supported here.")
        claims = _check_payload(body["payload"])
        if isinstance(claims, str):
            return google_error(400, "INVALID_ARGUMENT", claims)
        signed = jwt.encode(
            claims, account.key, algorithm="RS256", headers={"kid": account.key_id, "typ": "JWT"}
        )
        with policy.lock:
            policy.sign_calls += 1
        return JSONResponse({"keyId": account.key_id, "signedJwt": signed})

    return sign_jwt


def refresh_grant(state: GmailState, policy: IamPolicy, form: dict[str, str]) -> Response:
    """`grant_type=refresh_token`: an access token for an application-default user."""
    with policy.lock:
        principal = policy.refresh_tokens.get(form.get("refresh_token", ""))
    if principal is None or not form.get("client_id"):
        return JSONResponse(
            {"error": "invalid_grant", "error_description": "Bad Request"}, status_code=400
        )
    scopes = frozenset((form.get("scope") or CLOUD_PLATFORM).split())
    access = state.issue_token(principal, scopes)
    return JSONResponse(
        {
            "access_token": access,
            "expires_in": 3599,
            "scope": " ".join(sorted(scopes)),
            "token_type": "Bearer",
        }
    )
