"""The emulator's state: mailboxes, messages, labels, history, watches, tokens, quota.

Plain Python, no HTTP: the Starlette app in `app.py` translates requests into calls on
`GmailState` and `GmailError`s into Google's JSON error format. Every public method takes
the state lock, because tests seed and inspect from their own thread while uvicorn serves.
"""

from __future__ import annotations

import base64
import email
import email.parser
import email.policy
import itertools
import random
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Any, cast

from mailtriage.sandbox.faults import WriteHooks

SYSTEM_LABELS = (
    "INBOX",
    "SENT",
    "UNREAD",
    "STARRED",
    "IMPORTANT",
    "TRASH",
    "SPAM",
    "DRAFT",
    "CHAT",
    "CATEGORY_PERSONAL",
    "CATEGORY_SOCIAL",
    "CATEGORY_PROMOTIONS",
    "CATEGORY_UPDATES",
    "CATEGORY_FORUMS",
)
# System labels an API client may not add or remove.
FIXED_LABELS = frozenset({"SENT", "DRAFT", "CHAT"})

# LabelColor: "Only the following predefined set of color values are allowed" (discovery).
LABEL_PALETTE = frozenset(
    [
        "#000000",
        "#434343",
        "#666666",
        "#999999",
        "#cccccc",
        "#efefef",
        "#f3f3f3",
        "#ffffff",
        "#fb4c2f",
        "#ffad47",
        "#fad165",
        "#16a766",
        "#43d692",
        "#4a86e8",
        "#a479e2",
        "#f691b3",
        "#f6c5be",
        "#ffe6c7",
        "#fef1d1",
        "#b9e4d0",
        "#c6f3de",
        "#c9daf8",
        "#e4d7f5",
        "#fcdee8",
        "#efa093",
        "#ffd6a2",
        "#fce8b3",
        "#89d3b2",
        "#a0eac9",
        "#a4c2f4",
        "#d0bcf1",
        "#fbc8d9",
        "#e66550",
        "#ffbc6b",
        "#fcda83",
        "#44b984",
        "#68dfa9",
        "#6d9eeb",
        "#b694e8",
        "#f7a7c0",
        "#cc3a21",
        "#eaa041",
        "#f2c960",
        "#149e60",
        "#3dc789",
        "#3c78d8",
        "#8e63ce",
        "#e07798",
        "#ac2b16",
        "#cf8933",
        "#d5ae49",
        "#0b804b",
        "#2a9c68",
        "#285bac",
        "#653e9b",
        "#b65775",
        "#822111",
        "#a46a21",
        "#aa8831",
        "#076239",
        "#1a764d",
        "#1c4587",
        "#41236d",
        "#83334c",
        "#464646",
        "#e7e7e7",
        "#0d3472",
        "#b6cff5",
        "#0d3b44",
        "#98d7e4",
        "#3d188e",
        "#e3d7ff",
        "#711a36",
        "#fbd3e0",
        "#8a1c0a",
        "#f2b2a8",
        "#7a2e0b",
        "#ffc8af",
        "#7a4706",
        "#ffdeb5",
        "#594c05",
        "#fbe983",
        "#684e07",
        "#fdedc1",
        "#0b4f30",
        "#b3efd3",
        "#04502e",
        "#a2dcc1",
        "#c2c2c2",
        "#4986e7",
        "#2da2bb",
        "#b99aff",
        "#994a64",
        "#f691b2",
        "#ff7537",
        "#ffad46",
        "#662e37",
        "#ebdbde",
        "#cca6ac",
        "#094228",
        "#42d692",
        "#16a765",
    ]
)

# Quota units per method (developers.google.com/workspace/gmail/api/reference/quota).
COSTS: dict[str, int] = {
    "getProfile": 1,
    "history.list": 2,
    "labels.list": 1,
    "labels.get": 1,
    "labels.create": 5,
    "labels.delete": 5,
    "messages.list": 5,
    "messages.get": 5,
    "messages.attachments.get": 5,
    "messages.modify": 5,
    "messages.batchModify": 50,
    "messages.send": 100,
    "watch": 100,
    "stop": 1,
}

GMAIL_MODIFY = "https://www.googleapis.com/auth/gmail.modify"
FULL_SCOPE = "https://mail.google.com/"
UNAUTHORIZED_CLIENT = (
    "Client is unauthorized to retrieve access tokens using this method, or client not "
    "authorized for any of the scopes requested."
)
# Bodies larger than this (and every part with a filename) carry an attachmentId only.
INLINE_BODY_LIMIT = 16_384

ERROR_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class GmailError(Exception):
    """An API error, rendered by the app as Google's JSON error body."""

    def __init__(
        self, code: int, message: str, reason: str, domain: str = "global", **extra: str
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.extra = extra

    def body(self) -> dict[str, Any]:
        item = {"message": self.message, "domain": self.domain, "reason": self.reason}
        item.update(self.extra)
        err: dict[str, Any] = {"code": self.code, "message": self.message, "errors": [item]}
        if self.code in ERROR_STATUS:
            err["status"] = ERROR_STATUS[self.code]
        return {"error": err}


def rate_limit_error(kind: str) -> GmailError:
    """The documented throttling bodies: `429`, `403-user` or `403-rate`."""
    if kind == "429":
        return GmailError(429, "Too many requests", "rateLimitExceeded", "usageLimits")
    if kind == "403-user":
        return GmailError(403, "User Rate Limit Exceeded", "userRateLimitExceeded", "usageLimits")
    if kind == "403-rate":
        return GmailError(403, "Rate Limit Exceeded", "rateLimitExceeded", "usageLimits")
    raise ValueError(kind)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class StoredMessage:
    id: str
    thread_id: str
    raw: bytes
    labels: set[str]
    internal_date_ms: int
    history_id: int
    attachments: dict[str, bytes] = field(default_factory=dict)
    snippet: str | None = None
    _rfc822_id: str | None = None

    def rfc822_id(self) -> str:
        """The Message-ID header without angle brackets, lower case (headers parsed once)."""
        if self._rfc822_id is None:
            headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
                self.raw
            )
            self._rfc822_id = str(headers.get("Message-ID") or "").strip().strip("<>").lower()
        return self._rfc822_id

    def parsed(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def minimal(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "threadId": self.thread_id,
            "labelIds": sorted(self.labels),
            "historyId": str(self.history_id),
            "internalDate": str(self.internal_date_ms),
            "sizeEstimate": len(self.raw),
            "snippet": "",
        }


@dataclass
class HistoryRecord:
    id: int
    kind: str  # messageAdded | messageDeleted | labelAdded | labelRemoved
    message_id: str
    thread_id: str
    labels_after: frozenset[str]
    changed: tuple[str, ...] = ()

    def render(self) -> dict[str, Any]:
        msg = {"id": self.message_id, "threadId": self.thread_id}
        full = dict(msg, labelIds=sorted(self.labels_after))
        out: dict[str, Any] = {"id": str(self.id), "messages": [msg]}
        if self.kind == "messageAdded":
            out["messagesAdded"] = [{"message": full}]
        elif self.kind == "messageDeleted":
            out["messagesDeleted"] = [{"message": msg}]
        elif self.kind == "labelAdded":
            out["labelsAdded"] = [{"message": full, "labelIds": list(self.changed)}]
        else:
            out["labelsRemoved"] = [{"message": full, "labelIds": list(self.changed)}]
        return out


@dataclass
class Watch:
    topic: str
    label_ids: list[str]
    behavior: str
    expiration_ms: int
    history_id: int


@dataclass
class UserBox:
    address: str
    history_id: int
    history_floor: int = 0  # start ids below this are "expired" → 404
    messages: dict[str, StoredMessage] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[HistoryRecord] = field(default_factory=list)
    watch: Watch | None = None
    next_label: int = 1


class QuotaMeter:
    """Per-user quota units over a 1 s moving window; remembers the highest window seen."""

    def __init__(self, units_per_s: float) -> None:
        self.units_per_s = units_per_s
        self.events: dict[str, deque[tuple[float, int]]] = {}
        self.max_window: dict[str, int] = {}
        self.total: dict[str, int] = {}

    def window(self, user: str, now: float) -> int:
        q = self.events.setdefault(user, deque())
        while q and q[0][0] <= now - 1.0:
            q.popleft()
        return sum(units for _, units in q)

    def charge(self, user: str, units: int, *, enforce: bool) -> bool:
        """Record `units` now; False (nothing recorded) when over budget and enforcing."""
        now = time.monotonic()
        used = self.window(user, now)
        if enforce and used + units > self.units_per_s:
            return False
        self.events[user].append((now, units))
        self.max_window[user] = max(self.max_window.get(user, 0), used + units)
        self.total[user] = self.total.get(user, 0) + units
        return True


@dataclass
class Token:
    subject: str
    scopes: frozenset[str]
    expires: float


class GmailState:
    """Everything the emulator knows; the Python API tests use to seed and inspect it."""

    def __init__(
        self,
        *,
        quota_units_per_s: float = 250,
        enforce_quota: bool = True,
        quota_error: str = "429",
        require_auth: bool = True,
    ) -> None:
        self.lock = threading.RLock()
        self.users: dict[str, UserBox] = {}
        self.quota = QuotaMeter(quota_units_per_s)
        self.enforce_quota = enforce_quota
        self.quota_error = quota_error
        self.require_auth = require_auth
        self.tokens: dict[str, Token] = {}
        self.denied: set[str] = set()
        self.granted_scopes: set[str] = {GMAIL_MODIFY, FULL_SCOPE}
        self.outbound: list[tuple[str, list[str], bytes]] = []
        self.request_log: list[tuple[str, str, str, int]] = []  # method, api, user, status
        self.upload_log: list[tuple[str, str, int]] = []  # user, uploadType, media bytes
        self.injected: deque[tuple[str | None, str | None, str]] = deque()
        self.storm_rate = 0.0
        self._storm_rng = random.Random(0)
        self.rate_limited = 0
        self.writes = WriteHooks()  # executed writes, lost answers, kill hooks
        # Test knob for what no page documents: how soon a new message is searchable.
        # Searches (`q`) miss messages younger than this; label listings see them at once.
        self.search_lag_s = 0.0
        self.last_change: dict[str, Any] = {}  # labels the last modify really changed
        self.on_inbox: list[Any] = []  # callbacks(address, history_id) for the pusher
        self._ids = itertools.count(0x18C1F2A3B4C50000)
        self._next_history = itertools.count(4_000_000, 1_000_000)

    # -- seeding and inspection (Python API) ----------------------------------------------

    def add_user(self, address: str) -> UserBox:
        with self.lock:
            address = address.lower()
            if address not in self.users:
                box = UserBox(address=address, history_id=next(self._next_history))
                for name in SYSTEM_LABELS:
                    box.labels[name] = {
                        "id": name,
                        "name": name,
                        "type": "system",
                        "messageListVisibility": "hide",
                        "labelListVisibility": "labelHide",
                    }
                self.users[address] = box
            return self.users[address]

    def box(self, address: str) -> UserBox:
        with self.lock:
            try:
                return self.users[address.lower()]
            except KeyError:
                raise GmailError(400, "Invalid email or User ID", "invalidArgument") from None

    def deliver(
        self,
        address: str,
        raw: bytes,
        labels: Iterable[str] = ("INBOX", "UNREAD"),
        internal_date_ms: int | None = None,
    ) -> str:
        """Put a message into `address`'s mailbox as if it had just arrived."""
        with self.lock:
            box = self.box(address)
            mid = f"{next(self._ids):x}"
            box.history_id += 1
            msg = StoredMessage(
                id=mid,
                thread_id=mid,
                raw=raw,
                labels=set(labels),
                internal_date_ms=internal_date_ms or int(time.time() * 1000),
                history_id=box.history_id,
            )
            box.messages[mid] = msg
            box.history.append(
                HistoryRecord(box.history_id, "messageAdded", mid, mid, frozenset(msg.labels))
            )
            inbox_watch = box.watch is not None and _watched(box.watch, msg.labels)
            history_id = box.history_id
        if inbox_watch:
            for callback in self.on_inbox:
                callback(box.address, history_id)
        return mid

    def label_names(self, address: str, message_id: str) -> set[str]:
        with self.lock:
            box = self.box(address)
            return {box.labels[i]["name"] for i in box.messages[message_id].labels}

    def expire_history(self, address: str) -> None:
        """Make every history id older than the current one invalid (history.list → 404)."""
        with self.lock:
            box = self.box(address)
            box.history_floor = box.history_id

    def deny_delegation(self, address: str) -> None:
        with self.lock:
            self.denied.add(address.lower())

    def inject(
        self, kind: str, count: int = 1, user: str | None = None, api: str | None = None
    ) -> None:
        """Fail the next `count` calls (of `user`, to `api`, or any) with `kind`."""
        with self.lock:
            for _ in range(count):
                self.injected.append((user.lower() if user else None, api, kind))

    def storm(self, rate: float, seed: int = 0) -> None:
        """Fail a `rate` share of API calls at random with 429/403 rate-limit errors."""
        with self.lock:
            self.storm_rate = rate
            self._storm_rng = random.Random(seed)

    # -- auth ----------------------------------------------------------------------------

    def issue_token(self, subject: str, scopes: frozenset[str]) -> str:
        with self.lock:
            token = f"ya29.emu-{random.getrandbits(96):024x}"
            self.tokens[token] = Token(subject.lower(), scopes, time.time() + 3600)
            return token

    def authenticate(self, authorization: str | None, user_id: str) -> str:
        """The mailbox a call acts on; checks the bearer token against `userId`."""
        with self.lock:
            token = None
            if authorization and authorization.lower().startswith("bearer "):
                token = self.tokens.get(authorization[7:].strip())
            if token is None or token.expires < time.time():
                if self.require_auth or user_id == "me":
                    raise GmailError(
                        401,
                        "Invalid Credentials",
                        "authError",
                        locationType="header",
                        location="Authorization",
                    )
                address = user_id.lower()
            else:
                if not token.scopes & {GMAIL_MODIFY, FULL_SCOPE}:
                    raise GmailError(
                        403,
                        "Request had insufficient authentication scopes.",
                        "insufficientPermissions",
                    )
                address = token.subject
                if user_id not in ("me", address):
                    raise GmailError(403, f"Delegation denied for {address}", "forbidden")
            self.box(address)
            return address

    # -- throttling ------------------------------------------------------------------------

    def admit(self, user: str, api: str) -> None:
        """Injected errors, storms and the per-user quota, in that order."""
        with self.lock:
            for i, (who, which, kind) in enumerate(self.injected):
                if who in (None, user) and which in (None, api):
                    del self.injected[i]
                    self.rate_limited += 1
                    raise rate_limit_error(kind)
            if self.storm_rate and self._storm_rng.random() < self.storm_rate:
                self.rate_limited += 1
                raise rate_limit_error(self._storm_rng.choice(["429", "403-user", "403-rate"]))
            if not self.quota.charge(user, COSTS.get(api, 5), enforce=self.enforce_quota):
                self.rate_limited += 1
                raise rate_limit_error("429" if self.quota_error == "429" else "403-user")

    # -- labels ------------------------------------------------------------------------------

    def labels_list(self, user: str) -> dict[str, Any]:
        with self.lock:
            return {"labels": [dict(lab) for lab in self.box(user).labels.values()]}

    def label_get(self, user: str, label_id: str) -> dict[str, Any]:
        with self.lock:
            box = self.box(user)
            if label_id not in box.labels:
                raise GmailError(404, "Requested entity was not found.", "notFound")
            label = dict(box.labels[label_id])
            ids = [m for m in box.messages.values() if label_id in m.labels]
            label["messagesTotal"] = len(ids)
            label["messagesUnread"] = sum("UNREAD" in m.labels for m in ids)
            return label

    def label_create(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            box = self.box(user)
            name = str(body.get("name") or "").strip()
            if not name:
                raise GmailError(400, "Invalid label name", "invalidArgument")
            wanted = name.lower()
            for lab in box.labels.values():
                if lab["name"].lower() == wanted:
                    raise GmailError(409, "Label name exists or conflicts", "failedPrecondition")
            if len(box.labels) >= 10_000 + len(SYSTEM_LABELS):
                raise GmailError(400, "Too many labels", "invalidArgument")
            color = body.get("color")
            if color is not None:
                _check_color(color)
            label_id = f"Label_{box.next_label}"
            box.next_label += 1
            label = {
                "id": label_id,
                "name": name,
                "type": "user",
                "messageListVisibility": body.get("messageListVisibility", "show"),
                "labelListVisibility": body.get("labelListVisibility", "labelShow"),
            }
            if color is not None:
                label["color"] = {
                    "textColor": color["textColor"],
                    "backgroundColor": color["backgroundColor"],
                }
            box.labels[label_id] = label
            return dict(label)

    def label_delete(self, user: str, label_id: str) -> None:
        with self.lock:
            box = self.box(user)
            lab = box.labels.get(label_id)
            if lab is None:
                raise GmailError(404, "Requested entity was not found.", "notFound")
            if lab["type"] == "system":
                raise GmailError(400, "Invalid delete request", "invalidArgument")
            del box.labels[label_id]
            for msg in box.messages.values():
                msg.labels.discard(label_id)

    # -- messages --------------------------------------------------------------------------

    def message(self, user: str, message_id: str) -> StoredMessage:
        with self.lock:
            msg = self.box(user).messages.get(message_id)
            if msg is None:
                raise GmailError(404, "Requested entity was not found.", "notFound")
            return msg

    def messages_list(
        self,
        user: str,
        label_ids: list[str],
        q: str,
        max_results: int,
        page_token: str | None,
    ) -> dict[str, Any]:
        with self.lock:
            box = self.box(user)
            match = _query(q, box)
            unindexed = time.time() * 1000 - self.search_lag_s * 1000 if q else None
            found = [
                m
                for m in box.messages.values()
                if all(lab in m.labels for lab in label_ids)
                and match(m)
                and (unindexed is None or m.internal_date_ms <= unindexed)
            ]
            found.sort(key=lambda m: (m.internal_date_ms, m.id), reverse=True)
            start = _page_token(page_token)
            max_results = max(1, min(max_results, 500))
            page = found[start : start + max_results]
            out: dict[str, Any] = {"resultSizeEstimate": len(found)}
            if page:
                out["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
            if start + max_results < len(found):
                out["nextPageToken"] = str(start + max_results)
            return out

    def message_get(
        self, user: str, message_id: str, fmt: str, metadata_headers: list[str]
    ) -> dict[str, Any]:
        with self.lock:
            msg = self.message(user, message_id)
            out = msg.minimal()
            if msg.snippet is None:  # parsed once, then cached
                msg.snippet = _snippet(msg.parsed())
            out["snippet"] = msg.snippet
            if fmt == "raw":
                out["raw"] = b64url(msg.raw)
            elif fmt == "metadata":
                parsed = msg.parsed()
                wanted = {h.lower() for h in metadata_headers}
                headers = [
                    {"name": k, "value": str(v)}
                    for k, v in parsed.items()
                    if not wanted or k.lower() in wanted
                ]
                out["payload"] = {"mimeType": parsed.get_content_type(), "headers": headers}
            elif fmt == "full":
                out["payload"] = _payload(msg.parsed(), "", msg)
            elif fmt != "minimal":
                raise GmailError(400, f"Invalid value for format: {fmt}", "invalidParameter")
            return out

    def attachment_get(self, user: str, message_id: str, attachment_id: str) -> dict[str, Any]:
        with self.lock:
            msg = self.message(user, message_id)
            if not msg.attachments:
                _payload(msg.parsed(), "", msg)
            data = msg.attachments.get(attachment_id)
            if data is None:
                raise GmailError(400, "Invalid attachment token", "invalidArgument")
            return {"attachmentId": attachment_id, "size": len(data), "data": b64url(data)}

    def modify(
        self, user: str, message_id: str, add: list[str], remove: list[str]
    ) -> StoredMessage:
        with self.lock:
            box = self.box(user)
            msg = self.message(user, message_id)
            self._check_label_change(box, add, remove)
            added = [lab for lab in add if lab not in msg.labels]
            removed = [lab for lab in remove if lab in msg.labels and lab not in add]
            msg.labels |= set(added)
            msg.labels -= set(removed)
            self.last_change = {"added": added, "removed": removed}
            if added:
                box.history_id += 1
                box.history.append(
                    HistoryRecord(
                        box.history_id,
                        "labelAdded",
                        msg.id,
                        msg.thread_id,
                        frozenset(msg.labels),
                        tuple(added),
                    )
                )
            if removed:
                box.history_id += 1
                box.history.append(
                    HistoryRecord(
                        box.history_id,
                        "labelRemoved",
                        msg.id,
                        msg.thread_id,
                        frozenset(msg.labels),
                        tuple(removed),
                    )
                )
            return msg

    def batch_modify(self, user: str, ids: list[str], add: list[str], remove: list[str]) -> None:
        with self.lock:
            if len(ids) > 1000:
                raise GmailError(400, "Number of ids cannot exceed 1000", "invalidArgument")
            box = self.box(user)
            self._check_label_change(box, add, remove)
            for mid in ids:
                if mid in box.messages:
                    self.modify(user, mid, add, remove)

    @staticmethod
    def _check_label_change(box: UserBox, add: list[str], remove: list[str]) -> None:
        if len(add) > 100 or len(remove) > 100:
            raise GmailError(400, "Too many labels to add or remove", "invalidArgument")
        for lab in [*add, *remove]:
            if lab not in box.labels:
                raise GmailError(400, f"Invalid label: {lab}", "invalidArgument")
            if lab in FIXED_LABELS:
                raise GmailError(400, f"Invalid label: {lab}", "invalidArgument")

    def send(self, user: str, raw: bytes) -> StoredMessage:
        """Store the message as SENT and deliver it to recipients hosted here."""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        recipients = [
            a.lower()
            for _, a in getaddresses(
                [str(v) for h in ("to", "cc", "bcc") for v in parsed.get_all(h, [])]
            )
            if a
        ]
        if not recipients:
            raise GmailError(400, "Invalid To header", "invalidArgument")
        if "bcc" in parsed:
            del parsed["bcc"]
            raw = parsed.as_bytes()
        with self.lock:
            sent_id = self.deliver(user, raw, labels=("SENT",))
            external = []
            for rcpt in recipients:
                if rcpt in self.users:
                    self.deliver(rcpt, raw)
                else:
                    external.append(rcpt)
            if external:
                self.outbound.append((user, external, raw))
            return self.message(user, sent_id)

    # -- history, profile, watch -----------------------------------------------------------

    def profile(self, user: str) -> dict[str, Any]:
        with self.lock:
            box = self.box(user)
            return {
                "emailAddress": box.address,
                "messagesTotal": len(box.messages),
                "threadsTotal": len({m.thread_id for m in box.messages.values()}),
                "historyId": str(box.history_id),
            }

    def history_list(
        self,
        user: str,
        start: int,
        types: list[str],
        label_id: str | None,
        max_results: int,
        page_token: str | None,
    ) -> dict[str, Any]:
        with self.lock:
            box = self.box(user)
            if start < box.history_floor:
                raise GmailError(404, "Requested entity was not found.", "notFound")
            after = _page_token(page_token) if page_token else start
            max_results = max(1, min(max_results, 500))
            records = [
                r
                for r in box.history
                if r.id > after
                and (not types or r.kind in types)
                and (label_id is None or label_id in r.labels_after or label_id in r.changed)
            ]
            page = records[:max_results]
            out: dict[str, Any] = {"historyId": str(box.history_id)}
            if page:
                out["history"] = [r.render() for r in page]
            if len(records) > max_results:
                out["nextPageToken"] = str(page[-1].id)
            return out

    def watch(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            box = self.box(user)
            topic = str(body.get("topicName") or "")
            if not re.fullmatch(r"projects/[^/]+/topics/[^/]+", topic):
                raise GmailError(400, "Invalid topicName", "invalidArgument")
            expiration = int(time.time() * 1000) + 7 * 24 * 3600 * 1000
            box.watch = Watch(
                topic=topic,
                label_ids=list(body.get("labelIds") or []),
                behavior=str(
                    body.get("labelFilterBehavior") or body.get("labelFilterAction") or "include"
                ),
                expiration_ms=expiration,
                history_id=box.history_id,
            )
            return {"historyId": str(box.history_id), "expiration": str(expiration)}

    def stop(self, user: str) -> None:
        with self.lock:
            self.box(user).watch = None


def _page_token(token: str | None) -> int:
    if token and not token.isdigit():
        raise GmailError(400, "Invalid pageToken", "invalidArgument")
    return int(token or 0)


def _watched(watch: Watch, labels: set[str]) -> bool:
    """Whether a change to a message with `labels` is notified under `watch`."""
    if not watch.label_ids:
        return True
    hit = any(label in labels for label in watch.label_ids)
    return hit if watch.behavior.lower() == "include" else not hit


def _check_color(color: Any) -> None:
    if not isinstance(color, dict):
        raise GmailError(400, "Invalid label color", "invalidArgument")
    for key in ("textColor", "backgroundColor"):
        value = str(color.get(key) or "").lower()
        if value not in LABEL_PALETTE:
            raise GmailError(
                400,
                f"Label color {value or '(missing)'} is not on the allowed color palette.",
                "invalidArgument",
            )


def _payload(part: EmailMessage, part_id: str, msg: StoredMessage) -> dict[str, Any]:
    """A MessagePart: headers, base64url body data or attachmentId, sub-parts."""
    out: dict[str, Any] = {
        "partId": part_id,
        "mimeType": part.get_content_type(),
        "filename": part.get_filename() or "",
        "headers": [{"name": k, "value": str(v)} for k, v in part.items()],
    }
    if part.is_multipart():
        children = part.get_payload()
        assert isinstance(children, list)
        prefix = f"{part_id}." if part_id else ""
        out["body"] = {"size": 0}
        out["parts"] = [
            _payload(cast(EmailMessage, c), f"{prefix}{i}", msg) for i, c in enumerate(children)
        ]
        return out
    if part.get_content_type() == "message/rfc822":
        inner: Any = part.get_payload()
        data: bytes = inner[0].as_bytes() if isinstance(inner, list) else str(inner).encode()
    else:
        decoded: Any = part.get_payload(decode=True)
        data = decoded if isinstance(decoded, bytes) else b""
    if out["filename"] or len(data) > INLINE_BODY_LIMIT:
        att_id = "ANGjdJ" + b64url(f"{msg.id}:{part_id}".encode())
        msg.attachments[att_id] = data
        out["body"] = {"attachmentId": att_id, "size": len(data)}
    else:
        out["body"] = {"size": len(data), "data": b64url(data)}
    return out


def _snippet(parsed: EmailMessage) -> str:
    body = parsed.get_body(preferencelist=("plain",))
    if body is None:
        return ""
    try:
        text = str(body.get_content())
    except (LookupError, AssertionError):
        return ""
    return " ".join(text.split())[:200]


_UNITS = {"d": 86_400, "h": 3_600, "m": 2_592_000, "y": 31_536_000}


def _query(q: str, box: UserBox) -> Any:
    """A predicate for the search operators mailtriage uses.

    Supported: `after:`/`before:` (YYYY/MM/DD or epoch seconds), `newer_than:`/`older_than:`
    (Nd, Nh, Nm, Ny), `in:<label>`, `label:<name>`, `is:unread`, `rfc822msgid:`, and `-`
    negation.
    """
    import datetime as dt

    checks: list[Any] = []
    by_name = {
        lab["name"].lower().replace("/", "-").replace(" ", "-"): i for i, lab in box.labels.items()
    }
    for token in q.split():
        negate = token.startswith("-")
        op, _, value = token.lstrip("-").partition(":")
        op = op.lower()
        if op in ("after", "before"):
            if value.isdigit():
                ms = int(value) * 1000
            else:
                y, mo, d = (int(x) for x in re.split(r"[/-]", value))
                ms = int(dt.datetime(y, mo, d, tzinfo=dt.UTC).timestamp() * 1000)
            check = (
                (lambda m, ms=ms: m.internal_date_ms > ms)
                if op == "after"
                else (lambda m, ms=ms: m.internal_date_ms < ms)
            )
        elif op in ("newer_than", "older_than"):
            unit = value[-1:].lower()
            if unit not in _UNITS or not value[:-1].isdigit():
                raise GmailError(400, f"Invalid query: {token}", "invalidArgument")
            ms = int((time.time() - int(value[:-1]) * _UNITS[unit]) * 1000)
            check = (
                (lambda m, ms=ms: m.internal_date_ms > ms)
                if op == "newer_than"
                else (lambda m, ms=ms: m.internal_date_ms < ms)
            )
        elif op == "rfc822msgid":
            # "rfc822msgid: search for emails with a specific message-id header"
            # (support.google.com/mail/answer/7190). Angle brackets are ignored here.
            wanted = value.strip("<>").lower()
            check = lambda m, wanted=wanted: m.rfc822_id() == wanted  # noqa: E731
        elif op in ("in", "label", "is"):
            key = value.lower()
            if op == "is" and key == "unread":
                label = "UNREAD"
            elif key.upper() in SYSTEM_LABELS:
                label = key.upper()
            else:
                label = by_name.get(key, "__none__")
            check = lambda m, label=label: label in m.labels  # noqa: E731
        else:
            raise GmailError(400, f"Unsupported query operator: {token}", "invalidArgument")
        checks.append((negate, check))
    return lambda m: all(check(m) != negate for negate, check in checks)
