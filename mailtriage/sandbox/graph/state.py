"""In-memory state of the Graph emulator: mailboxes, folders, messages, delta logs, faults.

Everything here is plain data guarded by one lock; the HTTP layer (`routes.py`) and the
Python API (`GraphEmulator`) both go through it.
"""

from __future__ import annotations

import base64
import html
import re
import secrets
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mailtriage.sandbox.faults import WriteHooks

WELL_KNOWN = ("msgfolderroot", "inbox", "sentitems", "drafts", "deleteditems", "archive")
WELL_KNOWN_NAMES = {
    "msgfolderroot": "Top of Information Store",
    "inbox": "Inbox",
    "sentitems": "Sent Items",
    "drafts": "Drafts",
    "deleteditems": "Deleted Items",
    "archive": "Archive",
}
ALL_PERMISSIONS = frozenset({"Mail.ReadWrite", "Mail.Send", "MailboxSettings.ReadWrite"})


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id(prefix: str = "AAMkA") -> str:
    """Exchange-looking ids: base64 with '=' padding and '-'/'_' so clients must encode."""
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(33)).decode()


def message_id() -> str:
    """Message ids end in '=' like Exchange's, so the SDK sends them as '%3D'."""
    return new_id() + "AAA="


def addr(email: str, name: str = "") -> dict[str, Any]:
    return {"emailAddress": {"name": name or email, "address": email}}


def html_to_text(content: str) -> str:
    text = re.sub(r"(?is)<(script|style).*?</\1>", "", content)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", text)
    text = re.sub(r"<[^>]+>", "", text)
    return html.unescape(text).strip()


def text_to_html(content: str) -> str:
    return (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
        "</head><body><div>" + html.escape(content).replace("\n", "<br>") + "</div></body></html>"
    )


@dataclass
class Folder:
    id: str
    display_name: str
    parent_id: str | None
    well_known: str | None = None


@dataclass
class StoredMessage:
    """One message; `rest_id` changes on every move, `immutable_id` never does."""

    immutable_id: str
    rest_id: str
    folder_id: str
    seq: int
    arrived_seq: int = 0  # when it entered its folder (delta changeType=created)
    subject: str = ""
    body: str = ""
    body_type: str = "html"
    sender: dict[str, Any] | None = None
    to: list[dict[str, Any]] = field(default_factory=list)
    cc: list[dict[str, Any]] = field(default_factory=list)
    reply_to: list[dict[str, Any]] = field(default_factory=list)
    received: str = field(default_factory=now_iso)
    created: str = field(default_factory=now_iso)
    modified: str = field(default_factory=now_iso)
    internet_message_id: str = ""
    headers: list[dict[str, str]] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    is_read: bool = False
    is_draft: bool = False
    ext_props: dict[str, str] = field(default_factory=dict)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    conversation_id: str = field(default_factory=lambda: new_id("AAQkA"))
    change_key: str = field(default_factory=lambda: secrets.token_urlsafe(12))


@dataclass
class Tombstone:
    seq: int
    folder_id: str
    immutable_id: str
    rest_id: str


@dataclass
class Mailbox:
    address: str
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    display_name: str = ""
    folders: dict[str, Folder] = field(default_factory=dict)
    messages: dict[str, StoredMessage] = field(default_factory=dict)  # by immutable id
    tombstones: list[Tombstone] = field(default_factory=list)
    master_categories: list[dict[str, str]] = field(default_factory=list)
    permissions: set[str] = field(default_factory=lambda: set(ALL_PERMISSIONS))
    access_denied: bool = False
    inflight: int = 0
    max_inflight: int = 0
    rejected_concurrency: int = 0
    # When this mailbox's recent requests arrived (the 10,000-per-10-minutes limit).
    arrivals: deque[float] = field(default_factory=deque)
    rejected_rate: int = 0

    def over_rate(self, limit: int, window_s: float, now: float) -> float | None:
        """Count one request at `now`; None when within `limit` per `window_s`, else the
        seconds until the oldest counted request leaves the window (nothing counted)."""
        while self.arrivals and self.arrivals[0] <= now - window_s:
            self.arrivals.popleft()
        if len(self.arrivals) >= limit:
            self.rejected_rate += 1
            return self.arrivals[0] + window_s - now
        self.arrivals.append(now)
        return None

    def well_known(self, name: str) -> Folder:
        for f in self.folders.values():
            if f.well_known == name:
                return f
        raise KeyError(name)

    def folder(self, ref: str) -> Folder | None:
        """A folder by id or well-known name (case-insensitive, as Graph)."""
        if ref in self.folders:
            return self.folders[ref]
        low = ref.lower()
        for f in self.folders.values():
            if f.well_known == low:
                return f
        return None

    def message(self, ref: str) -> StoredMessage | None:
        if ref in self.messages:
            return self.messages[ref]
        for m in self.messages.values():
            if m.rest_id == ref:
                return m
        return None

    def folder_path(self, folder_id: str) -> str:
        """'Inbox/Triage/RH' style path, for assertions."""
        parts: list[str] = []
        f: Folder | None = self.folders.get(folder_id)
        while f is not None and f.well_known != "msgfolderroot":
            parts.append(f.display_name)
            f = self.folders.get(f.parent_id) if f.parent_id else None
        return "/".join(reversed(parts))


@dataclass
class DeltaState:
    """What an opaque delta/skip token stands for (server-side, so tokens are revocable)."""

    mailbox: str
    folder_id: str
    since_seq: int
    upto_seq: int | None
    after_seq: int
    select: list[str] | None
    expand: str | None
    received_ge: str | None
    initial: bool
    change_type: str | None = None  # delta's custom changeType option


@dataclass
class Fault:
    """An injected error: the next `times` matching requests get `status`."""

    status: int
    code: str
    message: str
    times: int = 1
    mailbox: str | None = None
    method: str | None = None
    path_contains: str | None = None
    retry_after: float | None = None
    every: int = 1  # hit every n-th matching request (a storm rather than an outage)
    seen: int = 0


@dataclass
class Subscription:
    id: str
    resource: str
    mailbox: str
    folder: str | None
    change_type: str
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: datetime
    immutable: bool
    creator: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: str
    status: int
    mailbox: str | None
    headers: dict[str, str]
    body: Any = None


class State:
    """All emulator state plus the lock that guards it."""

    def __init__(self, tenant_id: str) -> None:
        self.lock = threading.RLock()
        self.tenant_id = tenant_id
        self.mailboxes: dict[str, Mailbox] = {}
        self.delta_tokens: dict[str, DeltaState] = {}
        self.faults: list[Fault] = []
        self.subscriptions: dict[str, Subscription] = {}
        self.log: list[LoggedRequest] = []
        self.concurrency_limit = 4
        # Outlook: 10,000 API requests in a 10-minute period per app ID and mailbox.
        self.mailbox_rate: tuple[int, float] = (10_000, 600.0)
        self.latency_s = 0.0
        self.require_auth = False
        self.clients: dict[str, str] = {}  # client_id -> secret (token endpoint)
        self.tokens: set[str] = set()
        self.app_permissions_denied: set[str] = set()
        self.writes = WriteHooks()  # executed writes, lost answers, kill hooks

    def mailbox(self, ref: str) -> Mailbox | None:
        ref = ref.lower()
        if ref in self.mailboxes:
            return self.mailboxes[ref]
        for mb in self.mailboxes.values():
            if mb.user_id == ref:
                return mb
        return None

    def add_mailbox(self, address: str, display_name: str = "") -> Mailbox:
        address = address.lower()
        mb = Mailbox(address=address, display_name=display_name or address)
        root = Folder(new_id("AAMkAF"), WELL_KNOWN_NAMES["msgfolderroot"], None, "msgfolderroot")
        mb.folders[root.id] = root
        for wk in WELL_KNOWN[1:]:
            f = Folder(new_id("AAMkAF"), WELL_KNOWN_NAMES[wk], root.id, wk)
            mb.folders[f.id] = f
        self.mailboxes[address] = mb
        return mb

    def next_seq(self) -> int:
        self._seq = getattr(self, "_seq", 0) + 1
        return self._seq

    def touch(self, mb: Mailbox, msg: StoredMessage) -> None:
        msg.seq = self.next_seq()
        msg.modified = now_iso()
        msg.change_key = secrets.token_urlsafe(12)

    def remove(self, mb: Mailbox, msg: StoredMessage) -> None:
        mb.tombstones.append(
            Tombstone(self.next_seq(), msg.folder_id, msg.immutable_id, msg.rest_id)
        )
        mb.messages.pop(msg.immutable_id, None)

    def move(self, mb: Mailbox, msg: StoredMessage, folder: Folder) -> StoredMessage:
        """Graph's move: a new copy in the destination (new rest id), original removed."""
        mb.tombstones.append(
            Tombstone(self.next_seq(), msg.folder_id, msg.immutable_id, msg.rest_id)
        )
        msg.folder_id = folder.id
        msg.rest_id = message_id()
        self.touch(mb, msg)
        msg.arrived_seq = msg.seq
        return msg

    def take_fault(self, method: str, path: str, mailbox: str | None) -> Fault | None:
        for f in self.faults:
            if f.times <= 0:
                continue
            if f.mailbox and f.mailbox != mailbox:
                continue
            if f.method and f.method.upper() != method:
                continue
            if f.path_contains and f.path_contains not in path:
                continue
            f.seen += 1
            if f.seen % f.every:
                continue
            f.times -= 1
            return f
        return None
