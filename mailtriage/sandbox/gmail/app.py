"""The emulator's HTTP surface: Gmail REST paths, the multipart batch, token and certs.

Every Gmail call goes through `dispatch()`, so the batch endpoint runs its parts exactly as
if they had come one by one (auth, throttling and quota included).
"""

from __future__ import annotations

import email
import email.policy
import json
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mailtriage.sandbox.faults import DroppedResponse, Executed, keep_raw_send
from mailtriage.sandbox.gmail.iam import IamPolicy, refresh_grant, sign_jwt_endpoint
from mailtriage.sandbox.gmail.keys import PushSigner, ServiceAccountKey
from mailtriage.sandbox.gmail.state import (
    UNAUTHORIZED_CLIENT,
    GmailError,
    GmailState,
    b64url_decode,
)

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REFRESH_TOKEN = "refresh_token"
GOOGLE_TOKEN_AUD = "https://oauth2.googleapis.com/token"

Result = tuple[int, dict[str, Any] | None]
# API methods that change the mailbox: logged as `Executed`, hooks and after-faults apply.
WRITES = frozenset({"messages.send", "messages.modify", "messages.batchModify", "labels.create"})
# messages.send's media upload takes at most 35 MB (users.messages.send reference: "Maximum
# file size: 35MB"; discovery `mediaUpload.maxSize` 36700160) of `message/*`.
UPLOAD_MAX_BYTES = 36_700_160
# A JSON request body (the `raw` path) above this is refused with 413. No page documents
# the limit: 413 "Request Entity Too Large" is reported from about 5 MB (unknown, observed).
JSON_BODY_MAX_BYTES = 5 * 1024 * 1024


def too_large(limit: int) -> GmailError:
    """413 in Gmail's documented error shape (handle-errors); the reason is unknown."""
    return GmailError(
        413, f"Request payload size exceeds the limit: {limit} bytes.", "uploadTooLarge"
    )


class LostAnswer(Exception):
    """The request was executed; its answer is to be lost (`mode`: drop, 503 or 504)."""

    def __init__(self, mode: str) -> None:
        super().__init__(mode)
        self.mode = mode


def _one(query: dict[str, list[str]], name: str, default: str | None = None) -> str | None:
    values = query.get(name)
    return values[0] if values else default


def _body(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise GmailError(400, "Invalid JSON payload received.", "parseError") from None
    if not isinstance(data, dict):
        raise GmailError(400, "Invalid JSON payload received.", "parseError")
    return data


def _route(method: str, parts: list[str]) -> tuple[str, list[str]]:
    """Name the API method for `parts` (the path after /gmail/v1/users/{userId}/)."""
    key = (method, len(parts), parts[0] if parts else "")
    simple = {
        ("GET", 1, "profile"): "getProfile",
        ("GET", 1, "history"): "history.list",
        ("GET", 1, "labels"): "labels.list",
        ("POST", 1, "labels"): "labels.create",
        ("GET", 2, "labels"): "labels.get",
        ("DELETE", 2, "labels"): "labels.delete",
        ("GET", 1, "messages"): "messages.list",
        ("POST", 1, "watch"): "watch",
        ("POST", 1, "stop"): "stop",
    }
    if key in simple:
        return simple[key], parts[1:]
    if parts[:1] == ["messages"]:
        if method == "POST" and parts[1:] == ["send"]:
            return "messages.send", []
        if method == "POST" and parts[1:] == ["batchModify"]:
            return "messages.batchModify", []
        if method == "GET" and len(parts) == 2:
            return "messages.get", parts[1:]
        if method == "POST" and len(parts) == 3 and parts[2] == "modify":
            return "messages.modify", parts[1:2]
        if method == "GET" and len(parts) == 4 and parts[2] == "attachments":
            return "messages.attachments.get", [parts[1], parts[3]]
    raise GmailError(404, "Not Found", "notFound")


class GmailApi:
    """Turns (method, path, headers, body) into (status, JSON body) against the state."""

    def __init__(self, state: GmailState) -> None:
        self.state = state

    def dispatch(
        self,
        method: str,
        target: str,
        authorization: str | None,
        raw: bytes,
        *,
        direct: bool = True,
        media: bytes | None = None,
    ) -> Result:
        """Run one call. `media`: the message of an upload request (`raw` is then its
        metadata, if any)."""
        url = urlsplit(target)
        query = parse_qs(url.query)
        segments = url.path.split("/")
        if segments[:5] != ["", "gmail", "v1", "users", segments[4] if len(segments) > 4 else ""]:
            raise GmailError(404, "Not Found", "notFound")
        if len(segments) < 6:
            raise GmailError(404, "Not Found", "notFound")
        user_id = unquote(segments[4])
        api, args = _route(method, [unquote(s) for s in segments[5:]])
        if media is None and len(raw) > JSON_BODY_MAX_BYTES:
            raise too_large(JSON_BODY_MAX_BYTES)
        user = self.state.authenticate(authorization, user_id)
        try:
            self.state.admit(user, api)
            status, body = self._call(api, args, user, query, raw, media)
        except GmailError as exc:
            self.state.request_log.append((method, api, user, exc.code))
            raise
        self.state.request_log.append((method, api, user, status))
        if api in WRITES:
            mode = self.state.writes.executed(self._executed(api, user, args, body, raw))
            if mode is not None and direct:  # the batch endpoint answers its parts as they are
                raise LostAnswer(mode)
        return status, body

    def _executed(
        self, api: str, user: str, args: list[str], body: dict[str, Any] | None, raw: bytes
    ) -> Executed:
        detail: dict[str, Any] = {}
        target = args[0] if args else str((body or {}).get("id", ""))
        if api == "messages.send" and body:
            msg = self.state.message(user, str(body["id"]))
            parsed = msg.parsed()
            detail = {"message_id": str(parsed["Message-ID"] or ""), "to": str(parsed["To"] or "")}
        elif api == "messages.modify":
            asked = _body(raw).get("removeLabelIds") or []
            detail = {**self.state.last_change, "asked_remove": list(asked)}
        return Executed(api, user, target, detail=detail)

    def _call(
        self,
        api: str,
        args: list[str],
        user: str,
        query: dict[str, list[str]],
        raw: bytes,
        media: bytes | None = None,
    ) -> Result:
        s = self.state
        if api == "getProfile":
            return 200, s.profile(user)
        if api == "labels.list":
            return 200, s.labels_list(user)
        if api == "labels.get":
            return 200, s.label_get(user, args[0])
        if api == "labels.create":
            return 200, s.label_create(user, _body(raw))
        if api == "labels.delete":
            s.label_delete(user, args[0])
            return 204, None
        if api == "messages.list":
            return 200, s.messages_list(
                user,
                query.get("labelIds", []),
                _one(query, "q", "") or "",
                int(_one(query, "maxResults", "100") or 100),
                _one(query, "pageToken"),
            )
        if api == "messages.get":
            return 200, s.message_get(
                user,
                args[0],
                _one(query, "format", "full") or "full",
                query.get("metadataHeaders", []),
            )
        if api == "messages.attachments.get":
            return 200, s.attachment_get(user, args[0], args[1])
        if api == "messages.modify":
            body = _body(raw)
            msg = s.modify(
                user, args[0], body.get("addLabelIds", []), body.get("removeLabelIds", [])
            )
            return 200, {"id": msg.id, "threadId": msg.thread_id, "labelIds": sorted(msg.labels)}
        if api == "messages.batchModify":
            body = _body(raw)
            s.batch_modify(
                user,
                body.get("ids", []),
                body.get("addLabelIds", []),
                body.get("removeLabelIds", []),
            )
            return 204, None
        if api == "messages.send":
            if media is not None:
                msg = s.send(user, media)
                return 200, {
                    "id": msg.id,
                    "threadId": msg.thread_id,
                    "labelIds": sorted(msg.labels),
                }
            body = _body(raw)
            if not body.get("raw"):
                raise GmailError(
                    400,
                    "'raw' RFC822 payload message string or uploading message via /upload/* "
                    "URL required",
                    "badRequest",
                )
            msg = s.send(user, b64url_decode(body["raw"]))
            return 200, {"id": msg.id, "threadId": msg.thread_id, "labelIds": sorted(msg.labels)}
        if api == "history.list":
            start = _one(query, "startHistoryId")
            if not start or not start.isdigit():
                raise GmailError(400, "Missing startHistoryId", "invalidArgument")
            return 200, s.history_list(
                user,
                int(start),
                query.get("historyTypes", []),
                _one(query, "labelId"),
                int(_one(query, "maxResults", "100") or 100),
                _one(query, "pageToken"),
            )
        if api == "watch":
            return 200, s.watch(user, _body(raw))
        if api == "stop":
            s.stop(user)
            return 204, None
        raise GmailError(404, "Not Found", "notFound")

    def respond(
        self,
        method: str,
        target: str,
        authorization: str | None,
        raw: bytes,
        *,
        direct: bool = True,
        media: bytes | None = None,
    ) -> Result:
        """`dispatch()` with GmailError rendered as its status and JSON body."""
        try:
            return self.dispatch(method, target, authorization, raw, direct=direct, media=media)
        except GmailError as exc:
            return exc.code, exc.body()


def upload_parts(request_type: str, upload_type: str, body: bytes) -> tuple[bytes, bytes]:
    """(metadata JSON, media) of an upload request (guides/uploads: `uploadType=media` is
    the media alone, `multipart` a multipart/related body of the metadata then the media).
    Resumable uploads are not emulated (mailtriage does not use them)."""
    ctype, _, params = request_type.partition(";")
    ctype = ctype.strip().lower()
    if upload_type == "media":
        if not ctype.startswith("message/"):
            raise GmailError(
                400,
                f"Media type '{request_type}' is not supported. Valid media types: [message/*]",
                "badContent",
            )
        return b"", body
    if upload_type != "multipart" or ctype != "multipart/related":
        raise GmailError(400, f"Invalid upload type {upload_type!r}", "badRequest")
    boundary = ""
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip('"')
    delimiter = b"--" + boundary.encode()
    parts = [p for p in body.split(delimiter)[1:] if not p.startswith(b"--")]
    if not boundary or len(parts) != 2:
        raise GmailError(400, "Invalid multipart request", "badRequest")
    split = []
    for part in parts:  # each part sits between CRLF "--boundary" lines (RFC 2046 5.1.1)
        part = part.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, _, content = part.partition(b"\r\n\r\n")
        split.append((head.lower(), content))
    (_, meta), (media_head, media) = split
    if b"message/" not in media_head:
        raise GmailError(
            400, "Media type is not supported. Valid media types: [message/*]", "badContent"
        )
    return meta, media


def _json_response(status: int, body: dict[str, Any] | None) -> Response:
    if body is None:
        return Response(status_code=status)
    return JSONResponse(body, status_code=status)


_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _parse_batch(content_type: str, raw: bytes) -> list[tuple[str, str, str, str | None, bytes]]:
    """The parts of a multipart/mixed batch: (content id, method, target, auth, body)."""
    envelope = email.message_from_bytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw,
        policy=email.policy.compat32,
    )
    if not envelope.is_multipart():
        raise GmailError(400, "Invalid batch request", "badRequest")
    out = []
    parts: list[Any] = envelope.get_payload()  # type: ignore[assignment]
    for part in parts:
        content_id = str(part.get("Content-ID", "")).strip("<>")
        payload = part.get_payload(decode=False)
        text = payload if isinstance(payload, str) else ""
        head, _, body = text.replace("\r\n", "\n").partition("\n\n")
        lines = head.split("\n")
        method, target, *_ = lines[0].split(" ")
        auth = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "authorization":
                auth = value.strip()
        out.append((content_id, method, target, auth, body.encode()))
    return out


def lost_answer(lost: LostAnswer) -> Response:
    """Emulator fault, not a documented Gmail behaviour: the call was done and its answer is
    lost (connection dropped) or replaced by a gateway's 503/504."""
    if lost.mode in ("drop", "truncate"):
        return DroppedResponse(truncate=lost.mode == "truncate")  # type: ignore[return-value]
    code = int(lost.mode)
    err = GmailError(code, "The service is currently unavailable.", "backendError")
    return _json_response(code, err.body())


def build_app(
    state: GmailState,
    service_account: ServiceAccountKey,
    signer: PushSigner,
    token_url: Callable[[], str],
    iam: IamPolicy | None = None,
) -> ASGIApp:
    """The Starlette app serving Gmail, the batch endpoint, token grants, signJwt and certs."""
    api = GmailApi(state)
    iam = iam or IamPolicy()

    async def gmail(request: Request) -> Response:
        target = request.url.path + ("?" + request.url.query if request.url.query else "")
        raw = await request.body()
        try:
            status, body = api.respond(
                request.method, target, request.headers.get("authorization"), raw
            )
        except LostAnswer as lost:
            return lost_answer(lost)
        return _json_response(status, body)

    async def upload(request: Request) -> Response:
        """The media upload URI of messages.send (`/upload` + the method's path)."""
        path = request.url.path.removeprefix("/upload")
        target = path + ("?" + request.url.query if request.url.query else "")
        raw = await request.body()
        upload_type = request.query_params.get("uploadType", "")
        try:
            if len(raw) > UPLOAD_MAX_BYTES:
                raise too_large(UPLOAD_MAX_BYTES)
            meta, media = upload_parts(request.headers.get("content-type", ""), upload_type, raw)
            if len(media) > UPLOAD_MAX_BYTES:
                raise too_large(UPLOAD_MAX_BYTES)
            if not path.endswith("/messages/send"):
                raise GmailError(404, "Not Found", "notFound")
        except GmailError as exc:
            return _json_response(exc.code, exc.body())

        def sent() -> None:
            with state.lock:
                user = unquote(path.split("/")[4])
                state.upload_log.append((user.lower(), upload_type, len(media)))

        try:
            status, body = api.respond(
                "POST", target, request.headers.get("authorization"), meta, media=media
            )
        except LostAnswer as lost:  # sent, and its answer lost
            sent()
            return lost_answer(lost)
        if status < 300:
            sent()
        return _json_response(status, body)

    async def batch(request: Request) -> Response:
        raw = await request.body()
        outer_auth = request.headers.get("authorization")
        try:
            parts = _parse_batch(request.headers.get("content-type", ""), raw)
        except GmailError as exc:
            return _json_response(exc.code, exc.body())
        if len(parts) > 100:
            err = GmailError(400, "Too many requests in batch (max 100)", "badRequest")
            return _json_response(400, err.body())
        boundary = f"batch_{uuid.uuid4().hex}"
        chunks = []
        for content_id, method, target, auth, body in parts:
            status, result = api.respond(method, target, auth or outer_auth, body, direct=False)
            inner = f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            payload = ""
            if result is not None:
                payload = json.dumps(result)
                inner += "Content-Type: application/json; charset=UTF-8\r\n"
            inner += f"Content-Length: {len(payload.encode())}\r\n\r\n{payload}"
            chunks.append(
                f"--{boundary}\r\nContent-Type: application/http\r\n"
                f"Content-ID: <response-{content_id}>\r\n\r\n{inner}\r\n"
            )
        text = "".join(chunks) + f"--{boundary}--\r\n"
        return Response(text, media_type=f"multipart/mixed; boundary={boundary}")

    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") == REFRESH_TOKEN:
            return refresh_grant(state, iam, form)
        if form.get("grant_type") != JWT_BEARER:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        try:
            claims = jwt.decode(
                str(form.get("assertion", "")),
                service_account.public_pem(),
                algorithms=["RS256"],
                audience=[GOOGLE_TOKEN_AUD, token_url()],
                issuer=service_account.client_email,
            )
        except jwt.PyJWTError as exc:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": f"Invalid JWT Signature. {exc}"},
                status_code=400,
            )
        subject = str(claims.get("sub") or "").lower()
        scopes = frozenset(str(claims.get("scope", "")).split())
        if subject and (subject in state.denied or not scopes <= state.granted_scopes):
            return JSONResponse(
                {"error": "unauthorized_client", "error_description": UNAUTHORIZED_CLIENT},
                status_code=401,
            )
        if subject and subject not in state.users:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "Invalid email or User ID"},
                status_code=400,
            )
        access = state.issue_token(subject or service_account.client_email, scopes)
        return JSONResponse({"access_token": access, "expires_in": 3599, "token_type": "Bearer"})

    async def certs(request: Request) -> Response:
        return JSONResponse(signer.certs(), headers={"Cache-Control": "public, max-age=3600"})

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "time": time.time()})

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    app = Starlette(
        routes=[
            Route("/batch/gmail/v1", batch, methods=["POST"]),
            Route("/token", token, methods=["POST"]),
            Route(
                "/v1/projects/{project}/serviceAccounts/{rest}",
                sign_jwt_endpoint(state, service_account, iam),
                methods=["POST"],
            ),
            Route("/oauth2/v1/certs", certs, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/gmail/v1/{rest:path}", gmail, methods=methods),
            Route("/upload/gmail/v1/{rest:path}", upload, methods=["POST"]),
        ]
    )

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        keep_raw_send(scope, send)  # before Starlette wraps it (see sandbox.faults)
        await app(scope, receive, send)

    return asgi
