"""The emulator's HTTP surface: one ASGI app that routes on the raw, percent-encoded path.

The SDK percent-encodes every path segment (`shared%40contoso.com`, `AAMk...%3D`) and
mixes `mailFolders('inbox')` with `mailFolders/inbox`, so routing is done on decoded
segments rather than with Starlette path templates.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from mailtriage.sandbox.faults import DroppedResponse, Executed, keep_raw_send
from mailtriage.sandbox.graph.state import (
    DeltaState,
    Folder,
    Mailbox,
    State,
    StoredMessage,
    Subscription,
    addr,
    html_to_text,
    message_id,
    new_id,
    now_iso,
    text_to_html,
)

# Maximum lifetime of an Outlook message subscription with basic notifications: 10,080
# minutes, under 7 days (learn.microsoft.com/graph/api/resources/subscription, "Subscription
# lifetime"). Longer requests are refused, as that page warns they will be. Notifications
# with resource data (1,440 minutes there) are not emulated: `includeResourceData` is refused.
MAX_SUBSCRIPTION_MINUTES = 10_080
DEFAULT_DELTA_PAGE = 10
_FN_SEGMENT = re.compile(r"^(\w+)\('(.*)'\)$")
# PS_INTERNET_HEADERS: string named properties in this set are internet headers
# ([MS-OXCMAIL] 2.1.3.2.4 "Arbitrary MIME Headers" on the way out, 2.2.3.2.29 "Generic
# Headers in PS_INTERNET_HEADERS" on the way in).
_HEADER_PROP = re.compile(
    r"^String\s+\{00020386-0000-0000-C000-000000000046\}\s+Name\s+(\S+)$", re.I
)


class GraphError(Exception):
    """An error answered in Graph's documented `{"error": {"code", "message"}}` shape."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": now_iso(),
                "request-id": str(uuid.uuid4()),
                "client-request-id": str(uuid.uuid4()),
            },
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _segments(raw_path: str) -> list[str]:
    out: list[str] = []
    for seg in raw_path.strip("/").split("/"):
        seg = unquote(seg)
        if seg.endswith("()"):
            seg = seg[:-2]
        m = _FN_SEGMENT.match(seg)
        if m:
            out.extend([m.group(1), m.group(2)])
        elif seg:
            out.append(seg)
    return out


def _ci(body: dict[str, Any], key: str, default: Any = None) -> Any:
    """Action bodies arrive PascalCase from the SDK; match keys case-insensitively."""
    low = key.lower()
    for k, v in body.items():
        if k.lower() == low:
            return v
    return default


def _split_top(value: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in value:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


@dataclass
class Prefs:
    text_body: bool | None = None
    immutable: bool = False
    page_size: int | None = None

    @classmethod
    def parse(cls, request: Request) -> Prefs:
        p = cls()
        for header in request.headers.getlist("prefer"):
            for item in header.split(","):
                item = item.strip()
                low = item.lower()
                if low.startswith("outlook.body-content-type="):
                    p.text_body = "text" in low.split("=", 1)[1]
                elif low.startswith("idtype="):
                    p.immutable = "immutableid" in low
                elif low.startswith("odata.maxpagesize="):
                    with contextlib.suppress(ValueError):
                        p.page_size = max(1, int(low.split("=", 1)[1]))
        return p

    def applied(self) -> dict[str, str]:
        vals = []
        if self.text_body is not None:
            vals.append(f'outlook.body-content-type="{"text" if self.text_body else "html"}"')
        if self.immutable:
            vals.append('IdType="ImmutableId"')
        if self.page_size:
            vals.append(f"odata.maxpagesize={self.page_size}")
        return {"Preference-Applied": ", ".join(vals)} if vals else {}


# -- filters ---------------------------------------------------------------------------

_EXT_ANY = re.compile(
    r"singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*\1/id eq '([^']*)'"
    r"(?:\s+and\s+\1/value\s+(eq|ne)\s+('([^']*)'|null))?\s*\)",
    re.I,
)
_RECEIVED = re.compile(r"receivedDateTime\s+(ge|gt)\s+([0-9T:\-.Z+]+)", re.I)
_IS_READ = re.compile(r"isRead\s+eq\s+(true|false)", re.I)
_DISPLAY = re.compile(r"displayName\s+eq\s+'((?:[^']|'')*)'", re.I)


def _parse_dt(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def message_matches(msg: StoredMessage, flt: str | None) -> bool:
    if not flt:
        return True
    for m in _EXT_ANY.finditer(flt):
        prop = {k.lower(): v for k, v in msg.ext_props.items()}.get(m.group(2).lower())
        op, literal = m.group(3), m.group(5)
        if op is None or (op == "ne" and m.group(4) == "null"):
            if prop is None:
                return False
        # "Filtering the value property of an extended property is case-insensitive"
        # (singlevaluelegacyextendedproperty-get).
        elif (op == "eq" and str(prop).lower() != str(literal).lower()) or (
            op == "ne" and str(prop).lower() == str(literal).lower()
        ):
            return False
    for m in _RECEIVED.finditer(flt):
        got, ref = _parse_dt(msg.received), _parse_dt(m.group(2))
        if (m.group(1).lower() == "ge" and got < ref) or (
            m.group(1).lower() == "gt" and got <= ref
        ):
            return False
    return all(msg.is_read == (m.group(1).lower() == "true") for m in _IS_READ.finditer(flt))


# -- representation --------------------------------------------------------------------


def render_message(
    mb: Mailbox,
    msg: StoredMessage,
    prefs: Prefs,
    select: list[str] | None = None,
    expand: str | None = None,
) -> dict[str, Any]:
    if prefs.text_body:
        body = {
            "contentType": "text",
            "content": html_to_text(msg.body) if msg.body_type == "html" else msg.body,
        }
    else:
        body = {
            "contentType": "html",
            "content": msg.body if msg.body_type == "html" else text_to_html(msg.body),
        }
    sender = msg.sender or addr(mb.address, mb.display_name)
    full: dict[str, Any] = {
        "@odata.etag": f'W/"{msg.change_key}"',
        "id": msg.immutable_id if prefs.immutable else msg.rest_id,
        "createdDateTime": msg.created,
        "lastModifiedDateTime": msg.modified,
        "changeKey": msg.change_key,
        "categories": list(msg.categories),
        "receivedDateTime": msg.received,
        "sentDateTime": msg.received,
        "hasAttachments": bool(msg.attachments),
        "internetMessageId": msg.internet_message_id,
        "subject": msg.subject,
        "bodyPreview": html_to_text(body["content"])[:255],
        "importance": "normal",
        "parentFolderId": msg.folder_id,
        "conversationId": msg.conversation_id,
        "isRead": msg.is_read,
        "isDraft": msg.is_draft,
        "inferenceClassification": "focused",
        "body": body,
        "sender": sender,
        "from": sender,
        "toRecipients": msg.to,
        "ccRecipients": msg.cc,
        "bccRecipients": [],
        "replyTo": msg.reply_to,
        "flag": {"flagStatus": "notFlagged"},
    }
    if select:
        wanted = {s.lower() for s in select}
        out = {k: v for k, v in full.items() if k.lower() in wanted or k in ("id", "@odata.etag")}
        if "internetmessageheaders" in wanted:
            out["internetMessageHeaders"] = copy.deepcopy(msg.headers)
    else:
        out = full
    for item in _split_top(expand or ""):
        name, _, opts = item.partition("(")
        name = name.strip().lower()
        if name == "singlevalueextendedproperties":
            m = re.search(r"id eq '([^']*)'", opts, re.I)
            props = [
                {"id": k, "value": v}
                for k, v in msg.ext_props.items()
                if m is None or k.lower() == m.group(1).lower()
            ]
            if props:
                out["singleValueExtendedProperties"] = props
        elif name == "attachments":
            out["attachments"] = [
                {
                    "@odata.type": "#microsoft.graph.fileAttachment",
                    "id": f"AAMkAtt{i}=",
                    "name": a["name"],
                    "contentType": a.get("contentType", "application/octet-stream"),
                    "size": a.get("size", 0),
                    "isInline": False,
                }
                for i, a in enumerate(msg.attachments)
            ]
    return out


def render_folder(mb: Mailbox, f: Folder) -> dict[str, Any]:
    children = [c for c in mb.folders.values() if c.parent_id == f.id]
    items = [m for m in mb.messages.values() if m.folder_id == f.id]
    return {
        "id": f.id,
        "displayName": f.display_name,
        "parentFolderId": f.parent_id,
        "childFolderCount": len(children),
        "unreadItemCount": sum(1 for m in items if not m.is_read),
        "totalItemCount": len(items),
        "isHidden": False,
    }


def render_subscription(s: Subscription) -> dict[str, Any]:
    return {
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
        "id": s.id,
        "resource": s.resource,
        "applicationId": "00000000-0000-0000-0000-00000000a11c",
        "changeType": s.change_type,
        "clientState": s.client_state,
        "notificationUrl": s.notification_url,
        "notificationQueryOptions": None,
        "notificationContentType": None,
        "lifecycleNotificationUrl": s.lifecycle_url,
        "expirationDateTime": s.expiration.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
        "creatorId": s.creator,
        "includeResourceData": None,
        "latestSupportedTlsVersion": "v1_2",
        "encryptionCertificate": None,
        "encryptionCertificateId": None,
        "notificationUrlAppId": None,
    }


# -- the app ---------------------------------------------------------------------------

Notifier = Callable[[str, dict[str, Any]], None]


class GraphApp:
    """ASGI app over a `State`. `notify(url, payload)` posts change notifications."""

    def __init__(self, state: State, notify: Notifier) -> None:
        self.state = state
        self.notify = notify
        self.delta_expired = (
            410,
            "syncStateNotFound",
            "The sync state is not found; resyncRequired.",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        keep_raw_send(scope, send)
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    # -- plumbing ------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        raw = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        raw = raw.split("?", 1)[0]
        segs = _segments(raw)
        method = request.method
        body_bytes = await request.body()
        if len(segs) >= 3 and segs[1:] == ["oauth2", "v2.0", "token"]:
            return self.token(segs[0], body_bytes)
        if len(segs) >= 2 and segs[-2:] == [".well-known", "openid-configuration"]:
            return self.openid(request, segs[0])
        if segs[:3] == ["common", "discovery", "instance"]:
            return self.instance_discovery(request)
        if not segs or segs[0] not in ("v1.0", "beta"):
            return error_response(404, "BadRequest", f"Resource not found for the segment '{raw}'.")
        segs = segs[1:]
        st = self.state
        mb: Mailbox | None = None
        if len(segs) >= 2 and segs[0].lower() == "users":
            with st.lock:
                mb = st.mailbox(segs[1])
        counted = False
        status = 500
        try:
            if st.require_auth:
                auth = request.headers.get("authorization", "")
                token = auth[7:] if auth.lower().startswith("bearer ") else ""
                if not token:
                    raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
                if token not in st.tokens:
                    raise GraphError(
                        401,
                        "InvalidAuthenticationToken",
                        "Access token validation failure. Invalid audience.",
                    )
            if mb is not None:
                with st.lock:
                    wait = mb.over_rate(*st.mailbox_rate, time.monotonic())
                if wait is not None:
                    raise GraphError(
                        429,
                        "TooManyRequests",
                        "Too many requests to this mailbox; retry after the Retry-After time.",
                        {"Retry-After": f"{max(1, math.ceil(wait))}"},
                    )
                with st.lock:
                    mb.inflight += 1
                    counted = True
                    mb.max_inflight = max(mb.max_inflight, mb.inflight)
                    over = mb.inflight > st.concurrency_limit
                    if over:
                        mb.rejected_concurrency += 1
                if over:
                    raise GraphError(
                        429,
                        "ApplicationThrottled",
                        "Application is over its MailboxConcurrency limit.",
                        {"Retry-After": "0"},
                    )
            if st.latency_s:
                await asyncio.sleep(st.latency_s)
            with st.lock:
                fault = st.take_fault(method, raw, mb.address if mb else None)
            if fault is not None:
                hdrs = {}
                if fault.retry_after is not None:
                    hdrs["Retry-After"] = f"{fault.retry_after:g}"
                raise GraphError(fault.status, fault.code, fault.message, hdrs)
            if mb is not None and mb.access_denied:
                raise GraphError(
                    403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
                )
            query = dict(parse_qsl(request.url.query, keep_blank_values=True))
            body: Any = json.loads(body_bytes) if body_bytes else {}
            prefs = Prefs.parse(request)
            response = await self.dispatch(request, method, segs, mb, query, body, prefs)
            done = request.scope.get("mt.executed")
            if isinstance(done, Executed) and response.status_code < 400:
                response = self._after(done) or response
        except GraphError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.headers)
        except json.JSONDecodeError:
            response = error_response(400, "BadRequest", "Unable to read JSON request payload.")
        finally:
            if counted and mb is not None:
                with st.lock:
                    mb.inflight -= 1
        status = response.status_code
        with st.lock:
            try:
                logged_body = json.loads(body_bytes) if body_bytes else None
            except ValueError:
                logged_body = body_bytes.decode("utf-8", "replace")
            from mailtriage.sandbox.graph.state import LoggedRequest

            st.log.append(
                LoggedRequest(
                    method,
                    "/" + "/".join(segs),
                    request.url.query,
                    status,
                    mb.address if mb else None,
                    dict(request.headers),
                    logged_body,
                )
            )
        return response

    def _after(self, done: Executed) -> Response | None:
        """Hooks and after-faults for a performed write (see `sandbox.faults`).

        Emulator choice, not a documented Graph behaviour: the write stands and the answer
        is lost (dropped connection) or replaced by the 503/504 a gateway may give.
        """
        mode = self.state.writes.executed(done)
        if mode in ("drop", "truncate"):
            return DroppedResponse(truncate=mode == "truncate")  # type: ignore[return-value]
        if mode == "503":
            return error_response(
                503, "serviceNotAvailable", "The service is temporarily unavailable."
            )
        if mode == "504":
            return error_response(504, "UnknownError", "Gateway timeout.")
        return None

    def _executed(
        self, request: Request, kind: str, mb: Mailbox, msg: StoredMessage, **detail: Any
    ) -> None:
        request.scope["mt.executed"] = Executed(kind, mb.address, msg.immutable_id, detail=detail)

    async def dispatch(
        self,
        request: Request,
        method: str,
        segs: list[str],
        mb: Mailbox | None,
        query: dict[str, str],
        body: Any,
        prefs: Prefs,
    ) -> Response:
        head = segs[0].lower() if segs else ""
        if head == "subscriptions":
            return await self.subscriptions(request, method, segs[1:], body, prefs)
        if head != "users" or len(segs) < 2:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{head}'.")
        if mb is None:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{segs[1]}' is invalid.")
        rest = [s for s in segs[2:]]
        low = [s.lower() for s in rest]
        with self.state.lock:
            if not rest and method == "GET":
                return JSONResponse(
                    {
                        "id": mb.user_id,
                        "mail": mb.address,
                        "userPrincipalName": mb.address,
                        "displayName": mb.display_name,
                    }
                )
            if low[:2] == ["outlook", "mastercategories"]:
                return self.master_categories(method, mb, body)
            if low[:1] == ["mailfolders"]:
                return self.folders(request, method, mb, rest[1:], query, body, prefs)
            if low[:1] == ["messages"]:
                return self.messages(request, method, mb, rest[1:], query, body, prefs)
        raise GraphError(400, "BadRequest", f"Unsupported path {'/'.join(segs)}")

    # -- token endpoint (Entra client credentials) ----------------------------------

    def token(self, tenant: str, body: bytes) -> Response:
        form = dict(parse_qsl(body.decode()))
        st = self.state
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        cid, secret = form.get("client_id", ""), form.get("client_secret", "")
        with st.lock:
            known = st.clients.get(cid)
            if known is None or known != secret:
                return JSONResponse(
                    {
                        "error": "invalid_client",
                        "error_description": "AADSTS7000215: Invalid client secret provided.",
                        "error_codes": [7000215],
                    },
                    status_code=401,
                )
            token = "emu-" + secrets.token_urlsafe(24)
            st.tokens.add(token)
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            }
        )

    def openid(self, request: Request, tenant: str) -> Response:
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
                "issuer": f"{base}/{tenant}/v2.0",
                "device_authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/{tenant}/oauth2/v2.0/logout",
            }
        )

    def instance_discovery(self, request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "tenant_discovery_endpoint": f"{base}/common/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [],
            }
        )

    # -- master categories ------------------------------------------------------------

    def master_categories(self, method: str, mb: Mailbox, body: dict[str, Any]) -> Response:
        if "MailboxSettings.ReadWrite" not in mb.permissions:
            raise GraphError(
                403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
            )
        if method == "GET":
            return JSONResponse({"value": copy.deepcopy(mb.master_categories)})
        if method == "POST":
            name = _ci(body, "displayName")
            if not name:
                raise GraphError(400, "ErrorInvalidRequest", "displayName is required.")
            if any(c["displayName"].lower() == name.lower() for c in mb.master_categories):
                raise GraphError(
                    409, "ErrorDuplicateCategory", f"A category named '{name}' already exists."
                )
            cat = {
                "id": str(uuid.uuid4()),
                "displayName": name,
                "color": _ci(body, "color") or "none",
            }
            mb.master_categories.append(cat)
            return JSONResponse(cat, status_code=201)
        raise GraphError(405, "ErrorInvalidRequest", "Method not allowed.")

    # -- folders ------------------------------------------------------------------

    def folders(
        self,
        request: Request,
        method: str,
        mb: Mailbox,
        rest: list[str],
        query: dict[str, str],
        body: Any,
        prefs: Prefs,
    ) -> Response:
        if not rest:
            parent = mb.well_known("msgfolderroot")
            return self._child_folders(method, mb, parent, query, body)
        folder = mb.folder(rest[0])
        if folder is None:
            raise GraphError(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        tail = [s.lower() for s in rest[1:]]
        if not tail:
            if method == "GET":
                return JSONResponse(render_folder(mb, folder))
            raise GraphError(405, "ErrorInvalidRequest", "Method not allowed.")
        if tail[0] == "childfolders":
            return self._child_folders(method, mb, folder, query, body)
        if tail == ["messages", "delta"]:
            return self.delta(request, mb, folder, query, prefs)
        if tail == ["messages"] and method == "GET":
            msgs = [m for m in mb.messages.values() if m.folder_id == folder.id]
            return self._list(mb, msgs, query, prefs)
        raise GraphError(400, "BadRequest", "Unsupported mailFolders path.")

    def _child_folders(
        self, method: str, mb: Mailbox, parent: Folder, query: dict[str, str], body: Any
    ) -> Response:
        if method == "GET":
            kids = [f for f in mb.folders.values() if f.parent_id == parent.id]
            m = _DISPLAY.search(query.get("$filter", ""))
            if m:
                want = m.group(1).replace("''", "'").lower()
                kids = [f for f in kids if f.display_name.lower() == want]
            return JSONResponse({"value": [render_folder(mb, f) for f in kids]})
        if method == "POST":
            if "Mail.ReadWrite" not in mb.permissions:
                raise GraphError(
                    403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
                )
            name = (_ci(body, "displayName") or "").strip()
            if not name:
                raise GraphError(400, "ErrorInvalidRequest", "displayName is required.")
            for f in mb.folders.values():
                if f.parent_id == parent.id and f.display_name.lower() == name.lower():
                    raise GraphError(
                        409, "ErrorFolderExists", "A folder with the specified name already exists."
                    )
            f = Folder(new_id("AAMkAF"), name, parent.id)
            mb.folders[f.id] = f
            return JSONResponse(render_folder(mb, f), status_code=201)
        raise GraphError(405, "ErrorInvalidRequest", "Method not allowed.")

    def _list(
        self, mb: Mailbox, msgs: list[StoredMessage], query: dict[str, str], prefs: Prefs
    ) -> Response:
        flt = query.get("$filter")
        msgs = [m for m in msgs if message_matches(m, flt)]
        msgs.sort(key=lambda m: m.received, reverse=True)
        top = int(query.get("$top", "10"))
        select = query["$select"].split(",") if query.get("$select") else None
        value = [render_message(mb, m, prefs, select, query.get("$expand")) for m in msgs[:top]]
        return JSONResponse({"value": value}, headers=prefs.applied())

    # -- delta ---------------------------------------------------------------------

    def delta(
        self, request: Request, mb: Mailbox, folder: Folder, query: dict[str, str], prefs: Prefs
    ) -> Response:
        st = self.state
        token = query.get("$deltatoken") or query.get("$skiptoken")
        if token:
            ds = st.delta_tokens.get(token)
            if ds is None or ds.mailbox != mb.address or ds.folder_id != folder.id:
                status, code, message = self.delta_expired
                raise GraphError(status, code, message)
            if ds.upto_seq is None:  # a deltaLink: new round up to now
                ds = DeltaState(**{**ds.__dict__, "upto_seq": getattr(st, "_seq", 0)})
        else:
            flt = query.get("$filter", "")
            m = _RECEIVED.search(flt)
            ds = DeltaState(
                mailbox=mb.address,
                folder_id=folder.id,
                since_seq=0,
                upto_seq=getattr(st, "_seq", 0),
                after_seq=0,
                select=query["$select"].split(",") if query.get("$select") else None,
                expand=query.get("$expand"),
                received_ge=m.group(2) if m else None,
                initial=True,
                change_type=query.get("changeType", "").lower() or None,
            )
        lo, hi = max(ds.since_seq, ds.after_seq), ds.upto_seq or 0
        items: list[tuple[int, Any]] = []
        created_only = ds.change_type == "created"
        for msg in mb.messages.values():
            seq = msg.arrived_seq if created_only else msg.seq
            if msg.folder_id != folder.id or not (lo < seq <= hi):
                continue
            if (
                ds.initial
                and ds.received_ge
                and _parse_dt(msg.received) < _parse_dt(ds.received_ge)
            ):
                continue
            items.append((seq, msg))
        if not ds.initial and ds.change_type in (None, "deleted"):
            items += [
                (t.seq, t) for t in mb.tombstones if t.folder_id == folder.id and lo < t.seq <= hi
            ]
        items.sort(key=lambda x: x[0])
        size = prefs.page_size or DEFAULT_DELTA_PAGE
        page, remaining = items[:size], items[size:]
        value = []
        for _, it in page:
            if isinstance(it, StoredMessage):
                value.append(render_message(mb, it, prefs, ds.select, ds.expand))
            else:
                value.append(
                    {
                        "@odata.type": "#microsoft.graph.message",
                        "id": it.immutable_id if prefs.immutable else it.rest_id,
                        "@removed": {"reason": "deleted"},
                    }
                )
        base = (
            f"{str(request.base_url).rstrip('/')}/v1.0/users/{quote(mb.address)}"
            f"/mailFolders('{folder.id}')/messages/delta()"
        )
        new_token = secrets.token_urlsafe(32)
        out: dict[str, Any] = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(message)",
            "value": value,
        }
        if remaining:
            st.delta_tokens[new_token] = DeltaState(**{**ds.__dict__, "after_seq": page[-1][0]})
            out["@odata.nextLink"] = f"{base}?$skiptoken={new_token}"
        else:
            st.delta_tokens[new_token] = DeltaState(
                **{
                    **ds.__dict__,
                    "since_seq": hi,
                    "after_seq": hi,
                    "upto_seq": None,
                    "initial": False,
                }
            )
            out["@odata.deltaLink"] = f"{base}?$deltatoken={new_token}"
        return JSONResponse(out, headers=prefs.applied())

    # -- messages ------------------------------------------------------------------

    def messages(
        self,
        request: Request,
        method: str,
        mb: Mailbox,
        rest: list[str],
        query: dict[str, str],
        body: Any,
        prefs: Prefs,
    ) -> Response:
        if not rest:
            if method == "GET":
                return self._list(mb, list(mb.messages.values()), query, prefs)
            raise GraphError(405, "ErrorInvalidRequest", "Method not allowed.")
        msg = mb.message(rest[0])
        if msg is None:
            raise GraphError(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        action = rest[1].lower() if len(rest) > 1 else ""
        select = query["$select"].split(",") if query.get("$select") else None
        if not action:
            if method == "GET":
                return JSONResponse(
                    render_message(mb, msg, prefs, select, query.get("$expand")),
                    headers=prefs.applied(),
                )
            if method == "PATCH":
                self._need(mb, "Mail.ReadWrite")
                self._patch(mb, msg, body)
                self._executed(request, "patch", mb, msg, keys=sorted(body))
                return JSONResponse(render_message(mb, msg, prefs), headers=prefs.applied())
            if method == "DELETE":
                self._need(mb, "Mail.ReadWrite")
                self.state.remove(mb, msg)
                self._executed(request, "delete", mb, msg, draft=msg.is_draft)
                return Response(status_code=204)
        if action == "attachments" and method == "GET":
            full = render_message(mb, msg, prefs, ["id"], "attachments")["attachments"]
            if select:
                keep = {s.lower() for s in select} | {"id", "@odata.type"}
                full = [{k: v for k, v in a.items() if k.lower() in keep} for a in full]
            return JSONResponse({"value": full})
        if method != "POST":
            raise GraphError(405, "ErrorInvalidRequest", "Method not allowed.")
        if action == "move":
            self._need(mb, "Mail.ReadWrite")
            dest = mb.folder(str(_ci(body, "destinationId", "")))
            if dest is None:
                raise GraphError(
                    404,
                    "ErrorItemNotFound",
                    "The specified folder could not be found in the store.",
                )
            source = msg.folder_id
            self.state.move(mb, msg, dest)
            self._executed(request, "move", mb, msg, source=source, destination=dest.id)
            return JSONResponse(render_message(mb, msg, prefs), status_code=201)
        if action == "createforward":
            self._need(mb, "Mail.ReadWrite")
            draft = self._create_forward(mb, msg, body)
            self._executed(request, "createForward", mb, draft, original=msg.immutable_id)
            return JSONResponse(render_message(mb, draft, prefs), status_code=201)
        if action == "forward":
            self._need(mb, "Mail.Send")
            draft = self._create_forward(mb, msg, body)
            self._send(mb, draft)
            self._executed(request, "forward", mb, draft, original=msg.immutable_id)
            return Response(status_code=202)
        if action == "send":
            self._need(mb, "Mail.Send")
            if not msg.is_draft:
                raise GraphError(400, "ErrorInvalidOperation", "Only drafts can be sent.")
            self._send(mb, msg)
            self._executed(request, "send", mb, msg)
            return Response(status_code=202)
        raise GraphError(400, "BadRequest", f"Unsupported action {action}")

    def _need(self, mb: Mailbox, permission: str) -> None:
        if permission not in mb.permissions:
            raise GraphError(
                403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
            )

    def _patch(
        self, mb: Mailbox, msg: StoredMessage, body: dict[str, Any], *, creating: bool = False
    ) -> None:
        """Update writable properties (message-update's table); `creating` for a new draft."""
        for key, value in body.items():
            k = key.lower()
            if k.startswith("@odata"):
                continue
            if k == "categories":
                msg.categories = list(value or [])
            elif k == "isread":
                msg.is_read = bool(value)
            elif k == "subject":
                msg.subject = value or ""
            elif k == "torecipients":
                msg.to = list(value or [])
            elif k == "ccrecipients":
                msg.cc = list(value or [])
            elif k == "replyto":
                msg.reply_to = list(value or [])
            elif k == "body":
                msg.body = _ci(value, "content", "")
                msg.body_type = (_ci(value, "contentType", "html") or "html").lower()
            elif k == "internetmessageheaders":
                # "Add custom headers only when creating a message" (resources/message);
                # message-update does not list internetMessageHeaders among the updatable
                # properties. The error code Graph answers with is unknown.
                if not creating:
                    raise GraphError(
                        400,
                        "ErrorInvalidPropertyUpdate",
                        "internetMessageHeaders can only be set when the message is created.",
                    )
                for h in value or []:
                    name = _ci(h, "name", "")
                    if not name.lower().startswith("x-"):
                        raise GraphError(
                            400,
                            "InvalidInternetMessageHeader",
                            f"The internet message header name '{name}' "
                            "should start with 'x-' or 'X-'.",
                        )
                msg.headers = [
                    {"name": _ci(h, "name"), "value": _ci(h, "value", "")} for h in value or []
                ]
            elif k == "singlevalueextendedproperties":
                for prop in value or []:
                    msg.ext_props[_ci(prop, "id")] = _ci(prop, "value")
            elif k in ("bccrecipients", "isdeliveryreceiptrequested", "isreadreceiptrequested"):
                pass  # writable (message-update), not modelled
            elif k == "flag":
                pass
            else:
                raise GraphError(
                    400,
                    "RequestBodyRead",
                    f"The property '{key}' does not exist on type 'microsoft.graph.message'.",
                )
        self.state.touch(mb, msg)

    def _create_forward(
        self, mb: Mailbox, msg: StoredMessage, body: dict[str, Any]
    ) -> StoredMessage:
        """A forward draft of `msg`, with the `message` parameter's properties applied.

        message-createforward (v1.0) and message-forward: "Specify either a comment or the
        body property of the message parameter" and "either the toRecipients parameter or
        the toRecipients property of the message parameter. Specifying both or specifying
        neither will return an HTTP 400 Bad Request error"; `message` carries "any
        writeable properties" (beta page; e.g. replyTo, extended properties). Unknown: the
        error codes of those 400s, and whether internetMessageHeaders (settable "only when
        creating a message") is accepted there; this emulator accepts x- headers.
        """
        comment = _ci(body, "comment")
        message = _ci(body, "message") or {}
        if not isinstance(message, dict):
            raise GraphError(400, "BadRequest", "message must be an object.")
        top_to = _ci(body, "toRecipients")
        if bool(top_to) == bool(_ci(message, "toRecipients")):
            raise GraphError(
                400,
                "ErrorInvalidRecipients",
                "Specify either the toRecipients parameter or message.toRecipients.",
            )
        if comment and _ci(message, "body"):
            raise GraphError(
                400, "ErrorInvalidRequest", "Specify either comment or message.body, not both."
            )
        sender = msg.sender or addr(mb.address)
        original = msg.body if msg.body_type == "html" else text_to_html(msg.body)
        quoted = (
            f"<div>{text_to_html(comment or '')}</div><hr><div><b>From:</b> "
            f"{sender['emailAddress']['address']}<br><b>Subject:</b> {msg.subject}</div>{original}"
        )
        draft = StoredMessage(
            immutable_id=message_id(),
            rest_id=message_id(),
            folder_id=mb.well_known("drafts").id,
            seq=self.state.next_seq(),
            subject="FW: " + msg.subject,
            body=quoted,
            body_type="html",
            sender=addr(mb.address, mb.display_name),
            to=list(top_to or []),
            is_draft=True,
            is_read=True,
            attachments=copy.deepcopy(msg.attachments),
            conversation_id=msg.conversation_id,
        )
        writable = {k: v for k, v in message.items() if not k.lower().startswith("@odata")}
        self._patch(mb, draft, writable, creating=True)
        mb.messages[draft.immutable_id] = draft
        return draft

    def _send(self, mb: Mailbox, draft: StoredMessage) -> None:
        if not draft.to and not draft.cc:
            raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient isn't valid.")
        draft.is_draft = False
        draft.internet_message_id = f"<{secrets.token_hex(12)}@emulator.mailtriage>"
        self.state.move(mb, draft, mb.well_known("sentitems"))
        # The MIME writer turns PS_INTERNET_HEADERS properties into headers ([MS-OXCMAIL]
        # 2.1.3.2.4); other named properties stay on the sender's copy only.
        headers = copy.deepcopy(draft.headers)
        for prop_id, value in draft.ext_props.items():
            m = _HEADER_PROP.match(prop_id)
            if (
                m
                and value is not None
                and not any(h["name"].lower() == m.group(1).lower() for h in headers)
            ):
                headers.append({"name": m.group(1), "value": str(value)})
        for rcpt in draft.to + draft.cc:
            target = self.state.mailbox(rcpt["emailAddress"]["address"])
            if target is None:
                continue
            self.deliver(
                target,
                StoredMessage(
                    immutable_id=message_id(),
                    rest_id=message_id(),
                    folder_id=target.well_known("inbox").id,
                    seq=0,
                    subject=draft.subject,
                    body=draft.body,
                    body_type=draft.body_type,
                    sender=addr(mb.address, mb.display_name),
                    to=copy.deepcopy(draft.to),
                    cc=copy.deepcopy(draft.cc),
                    reply_to=copy.deepcopy(draft.reply_to),
                    internet_message_id=draft.internet_message_id,
                    headers=copy.deepcopy(headers),
                    attachments=copy.deepcopy(draft.attachments),
                    # The MIME reader keeps x- headers as PS_INTERNET_HEADERS properties
                    # ([MS-OXCMAIL] 2.2.3.2.29, a SHOULD).
                    ext_props={
                        f"String {{00020386-0000-0000-C000-000000000046}} Name {h['name']}": h[
                            "value"
                        ]
                        for h in headers
                        if h["name"].lower().startswith("x-")
                    },
                ),
            )

    def deliver(self, mb: Mailbox, msg: StoredMessage) -> StoredMessage:
        """Put a message in a folder and notify matching subscriptions (lock held)."""
        msg.seq = msg.arrived_seq = self.state.next_seq()
        mb.messages[msg.immutable_id] = msg
        inbox = mb.well_known("inbox")
        for sub in self.state.subscriptions.values():
            if sub.mailbox != mb.address or "created" not in sub.change_type:
                continue
            if sub.folder is not None and (mb.folder(sub.folder) or inbox).id != msg.folder_id:
                continue
            mid = msg.immutable_id if sub.immutable else msg.rest_id
            self.notify(
                sub.notification_url,
                {
                    "value": [
                        {
                            "id": secrets.token_urlsafe(8),
                            "subscriptionId": sub.id,
                            "subscriptionExpirationDateTime": sub.expiration.isoformat(),
                            "clientState": sub.client_state,
                            "changeType": "created",
                            "resource": f"Users/{mb.user_id}/Messages/{mid}",
                            "tenantId": self.state.tenant_id,
                            "resourceData": {
                                "@odata.type": "#Microsoft.Graph.Message",
                                "@odata.id": f"Users/{mb.user_id}/Messages/{mid}",
                                "@odata.etag": f'W/"{msg.change_key}"',
                                "id": mid,
                            },
                        }
                    ]
                },
            )
        return msg

    # -- subscriptions -------------------------------------------------------------

    async def subscriptions(
        self, request: Request, method: str, rest: list[str], body: Any, prefs: Prefs
    ) -> Response:
        st = self.state
        if not rest:
            if method == "GET":
                with st.lock:
                    return JSONResponse(
                        {"value": [render_subscription(s) for s in st.subscriptions.values()]}
                    )
            if method == "POST":
                return await self._create_subscription(body, prefs)
            raise GraphError(405, "ErrorInvalidRequest", "Method not allowed.")
        with st.lock:
            sub = st.subscriptions.get(rest[0])
            if sub is None:
                raise GraphError(
                    404, "ResourceNotFound", f"The object was not found: subscription '{rest[0]}'."
                )
            if len(rest) > 1 and rest[1].lower() == "reauthorize" and method == "POST":
                return Response(status_code=204)
            if method == "GET":
                return JSONResponse(render_subscription(sub))
            if method == "PATCH":
                sub.expiration = self._expiration(_ci(body, "expirationDateTime"))
                return JSONResponse(render_subscription(sub))
            if method == "DELETE":
                del st.subscriptions[sub.id]
                return Response(status_code=204)
        raise GraphError(405, "ErrorInvalidRequest", "Method not allowed.")

    def _expiration(self, value: str | None) -> datetime:
        if not value:
            raise GraphError(400, "InvalidRequest", "expirationDateTime is required.")
        try:
            exp = _parse_dt(value)
        except ValueError:
            raise GraphError(
                400, "InvalidRequest", f"Invalid expirationDateTime '{value}'."
            ) from None
        if exp.tzinfo is None:
            exp = exp.replace(tzinfo=UTC)
        now = datetime.now(UTC)
        if exp <= now:
            raise GraphError(
                400, "InvalidRequest", "Subscription expiration must be in the future."
            )
        if exp > now + timedelta(minutes=MAX_SUBSCRIPTION_MINUTES, seconds=60):
            raise GraphError(
                400,
                "InvalidRequest",
                f"Subscription expiration can only be {MAX_SUBSCRIPTION_MINUTES} minutes "
                "in the future.",
            )
        return exp

    async def _create_subscription(self, body: dict[str, Any], prefs: Prefs) -> Response:
        st = self.state
        resource = _ci(body, "resource", "")
        m = re.match(
            r"^/?users/([^/]+)(?:/mailFolders(?:\('([^']+)'\)|/([^/]+)))?/messages$",
            unquote(resource),
            re.I,
        )
        if not m:
            raise GraphError(400, "InvalidRequest", f"Resource '{resource}' is not supported.")
        url = _ci(body, "notificationUrl", "")
        lifecycle = _ci(body, "lifecycleNotificationUrl")
        change_type = _ci(body, "changeType", "")
        if not url or not change_type:
            raise GraphError(400, "InvalidRequest", "notificationUrl and changeType are required.")
        with st.lock:
            mb = st.mailbox(m.group(1))
            if mb is None:
                raise GraphError(
                    404, "ErrorInvalidUser", f"The requested user '{m.group(1)}' is invalid."
                )
            if mb.access_denied:
                raise GraphError(
                    403,
                    "ExtensionError",
                    "Operation: Create; Exception: [Status Code: Forbidden; "
                    "Reason: Access is denied.]",
                )
            if _ci(body, "includeResourceData"):
                raise GraphError(
                    400, "InvalidRequest", "includeResourceData is not emulated (basic only)."
                )
            exp = self._expiration(_ci(body, "expirationDateTime"))
        for target in [url] + ([lifecycle] if lifecycle else []):
            await self._validate_endpoint(target)
        sub = Subscription(
            id=str(uuid.uuid4()),
            resource=resource,
            mailbox=mb.address,
            folder=m.group(2) or m.group(3),
            change_type=change_type,
            notification_url=url,
            lifecycle_url=lifecycle,
            client_state=_ci(body, "clientState"),
            expiration=exp,
            immutable=prefs.immutable,
        )
        with st.lock:
            st.subscriptions[sub.id] = sub
        return JSONResponse(render_subscription(sub), status_code=201)

    async def _validate_endpoint(self, url: str) -> None:
        """Graph's handshake: POST ?validationToken=..., expect 200 text/plain echo in 10 s."""
        token = (
            "Validation: Testing client application reachability for subscription "
            f"Request-Id: {uuid.uuid4()} <&>"
        )
        sep = "&" if "?" in url else "?"
        failed = GraphError(
            400,
            "InvalidRequest",
            "Subscription validation request failed. "
            "Response must exactly match validationToken query parameter.",
        )
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                r = await client.post(
                    url + sep + urlencode({"validationToken": token}),
                    headers={"Content-Type": "text/plain; charset=utf-8"},
                )
        except httpx.HTTPError:
            raise GraphError(
                400,
                "InvalidRequest",
                "Subscription validation request failed. "
                "Notification endpoint must respond with 200 OK to validation request.",
            ) from None
        if r.status_code != 200 or not r.headers.get("content-type", "").startswith("text/plain"):
            raise failed
        if r.text != token:
            raise failed
