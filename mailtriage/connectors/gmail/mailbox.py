"""`GmailMailbox`: intake through history.list, native actions through labels and send.

Intake: the cursor is a Gmail `historyId` (decimal string) and only ever moves forward.
A first run starts from the profile's current historyId, or lists a backfill window. An
expired historyId (404) restarts from a bounded `messages.list` window; that listing is
paged through cursors of the form `list:<historyId>:<after epoch s>:<pageToken>`, and the
ledger's dedup (plus the processed label) keeps it from reprocessing anything.

Messages are fetched with `format=raw` in HTTP batches: the core's RFC 822 parser then
treats Gmail exactly like every other source (charsets, HTML, TNEF), and the raw bytes
are what a forward attaches, so a forwarded message costs no second fetch. The price is
that large attachments travel with the message, where `format=full` would only give
their attachmentId.

Memory: a raw message costs about five times its size while google-api-python-client
reads it (JSON, base64), so sizes are read first (`format=metadata`, 5 units, with the
headers a router needs). Only messages up to `runtime.max_message_mb` are downloaded, in
batches of at most `RAW_BATCH_BYTES`, and one batch above `LARGE_DOWNLOAD_BYTES` at a time
per process; a larger message is routed by its headers and subject (`Message.too_large`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from mailtriage.connectors.gmail.auth import Delegation
from mailtriage.connectors.gmail.client import GmailClient
from mailtriage.connectors.gmail.forwards import GmailForwards
from mailtriage.connectors.gmail.labels import LabelCache
from mailtriage.connectors.gmail.mime import parse_raw
from mailtriage.connectors.gmail.shared import GmailShared
from mailtriage.core.actions import Action, ActionPlan, Forward, Label, MarkRead, Move
from mailtriage.core.config import MailboxSettings, Settings
from mailtriage.core.decision import Decision
from mailtriage.core.errors import (
    AccessDeniedError,
    AuthError,
    ConnectorError,
    MessageParseError,
    NotFoundError,
    ThrottledError,
)
from mailtriage.core.extract import parse_head
from mailtriage.core.message import KEPT_HEADERS, Message
from mailtriage.core.ports import (
    NULL_JOURNAL,
    ActionResult,
    Change,
    ChangePage,
    Failure,
    Journal,
    StateStore,
)

log = logging.getLogger(__name__)
MB = 1024 * 1024
RAW_CACHE_BYTES = 64 * MB
# Raw downloads are batched up to this many bytes (by sizeEstimate)...
RAW_BATCH_BYTES = 8 * MB
# ...and a batch larger than this waits for any other such batch in the process.
LARGE_DOWNLOAD_BYTES = 4 * MB
# Headers read with the size: enough to route a message that is too large to download.
METADATA_HEADERS = [
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    *sorted(KEPT_HEADERS),
]
_LARGE_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


@asynccontextmanager
async def _download_slot(size: int) -> AsyncIterator[None]:
    """One large raw download at a time per process (per event loop)."""
    if size <= LARGE_DOWNLOAD_BYTES:
        yield
        return
    loop = asyncio.get_running_loop()
    gate = _LARGE_GATES.get(loop)
    if gate is None:
        gate = _LARGE_GATES[loop] = asyncio.Semaphore(1)
    async with gate:
        yield


def _size_groups(sized: Sequence[tuple[str, int]], limit: int) -> list[list[tuple[str, int]]]:
    """Consecutive ids grouped so that each group's sizes add up to at most `limit`
    (a single larger message forms a group of its own)."""
    groups: list[list[tuple[str, int]]] = []
    total = 0
    for item in sized:
        if not groups or total + item[1] > limit:
            groups.append([])
            total = 0
        groups[-1].append(item)
        total += item[1]
    return groups


_RAW_BYTES = re.compile(rb'"raw"\s*:\s*"([A-Za-z0-9_=-]*)"')
_RAW_TEXT = re.compile(r'"raw"\s*:\s*"([A-Za-z0-9_=-]*)"')
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_DECODE_CHUNK = 4 * 1024 * 1024  # a multiple of 4


def _raw_resource(_response: Any, content: bytes | str) -> dict[str, Any]:
    """A `format=raw` response with `raw` already decoded to bytes (`postproc` of the
    request, in place of google-api-python-client's JSON model).

    The base64url text is decoded straight from the response in 4 MB slices: no JSON string
    of it and no whole-text copy is built, so a 20 MB message costs about 3 times its size
    instead of 10. The other fields are parsed as JSON.
    """
    match = _RAW_BYTES.search(content) if isinstance(content, bytes) else _RAW_TEXT.search(content)
    if match is None:
        resource: dict[str, Any] = json.loads(content)
        return resource
    start, end = match.span(1)  # the value, without its quotes
    if isinstance(content, bytes):
        resource = json.loads(content[: start - 1] + b"null" + content[end + 1 :])
    else:
        resource = json.loads(content[: start - 1] + "null" + content[end + 1 :])
    resource["raw"] = _decode_b64url(content, start, end)
    return resource


def _decode_b64url(content: bytes | str, start: int, end: int) -> bytes:
    chunks = []
    for left in range(start, end, _DECODE_CHUNK):
        piece = content[left : min(end, left + _DECODE_CHUNK)]
        data = piece.encode("ascii") if isinstance(piece, str) else piece
        data = data.translate(_URLSAFE).rstrip(b"=")
        chunks.append(binascii.a2b_base64(data + b"=" * (-len(data) % 4)))
    return b"".join(chunks)


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class GmailMailbox:
    """One Google Workspace mailbox, impersonated through domain-wide delegation."""

    provider = "gmail"
    supports_push = True

    def __init__(
        self,
        address: str,
        client: GmailClient,
        store: StateStore,
        *,
        settings: Settings,
        backfill_days: float = 0,
    ) -> None:
        self.address = address
        self.client = client
        self.store = store
        self.settings = settings
        self.gmail = settings.gmail
        self.backfill_days = backfill_days
        self.labels = LabelCache(client, store)
        self.forwards = GmailForwards(client, address, mode=settings.gmail.forward_mode)
        self.max_message_bytes = int(settings.runtime.max_message_mb * MB)
        self._raw: OrderedDict[str, bytes] = OrderedDict()
        self._raw_bytes = 0
        self._marked: set[str] = set()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        mailbox: MailboxSettings,
        store: StateStore,
        *,
        client: GmailClient | None = None,
        delegation: Delegation | None = None,
        shared: GmailShared | None = None,
    ) -> GmailMailbox:
        """Build from configuration; `client`/`delegation` let tests inject them, `shared`
        is what the process's Gmail mailboxes share (threads, connections, the service)."""
        client = client or GmailClient.from_settings(
            settings.gmail, mailbox.address, delegation, shared=shared
        )
        return cls(
            mailbox.address,
            client,
            store,
            settings=settings,
            backfill_days=mailbox.backfill_days,
        )

    def describe(self, privacy: bool = True) -> str:
        user, _, domain = self.address.partition("@")
        return f"gmail://{user[:1]}…@{domain}" if privacy else f"gmail://{self.address}"

    # -- intake ----------------------------------------------------------------------------

    async def profile(self) -> dict[str, Any]:
        """users.getProfile: proves delegation and access; gives the current historyId."""
        result: dict[str, Any] = await self.client.call(
            "getProfile", lambda u: u.getProfile(userId=self.address)
        )
        return result

    async def changes(self, cursor: str | None) -> ChangePage:
        if cursor is None:
            return await self._first_run()
        if cursor.startswith("list:"):
            return await self._list_page(cursor)
        return await self._history_page(int(cursor))

    async def _first_run(self) -> ChangePage:
        history_id = (await self.profile())["historyId"]
        if self.backfill_days <= 0:
            return ChangePage(cursor=str(history_id))
        after = int(time.time() - self.backfill_days * 86_400)
        return await self._list_page(f"list:{history_id}:{after}:")

    async def _resync(self, start: int) -> ChangePage:
        """The stored historyId expired (404): list a bounded window, then resume history."""
        history_id = (await self.profile())["historyId"]
        after = int(time.time() - self.gmail.resync_days * 86_400)
        log.warning(
            "%s: historyId %s expired; resyncing the inbox of the last %s days",
            self.describe(),
            start,
            self.gmail.resync_days,
        )
        return await self._list_page(f"list:{history_id}:{after}:")

    async def _list_page(self, cursor: str) -> ChangePage:
        _, history_id, after, token = cursor.split(":", 3)
        try:
            listing = await self.client.call(
                "messages.list",
                lambda u: u.messages().list(
                    userId=self.address,
                    q=f"in:inbox after:{after}",
                    maxResults=self.gmail.page_size,
                    pageToken=token or None,
                ),
            )
        except ConnectorError as exc:
            if not token or isinstance(exc, (AccessDeniedError, AuthError, ThrottledError)):
                raise
            # A stale page token (e.g. after a long outage): list the window again from
            # the start; what was already recorded is recognised by the ledger.
            log.warning("%s: listing page token refused (%s); relisting", self.describe(), exc)
            return await self._list_page(f"list:{history_id}:{after}:")
        ids = [m["id"] for m in listing.get("messages", [])]
        page = await self._fetch(ids)
        next_token = listing.get("nextPageToken")
        page.cursor = f"list:{history_id}:{after}:{next_token}" if next_token else history_id
        page.more = bool(next_token)
        return page

    async def _history_page(self, start: int) -> ChangePage:
        """New inbox messages, and user labels added to messages (staff corrections).

        No `labelId=INBOX` filter: a staff move removes INBOX in the same change that adds
        the label, so the record would be filtered out; inbox arrivals are picked out here.
        """
        try:
            history = await self.client.call(
                "history.list",
                lambda u: u.history().list(
                    userId=self.address,
                    startHistoryId=str(start),
                    historyTypes=["messageAdded", "labelAdded"],
                    maxResults=self.gmail.page_size,
                ),
            )
        except NotFoundError:
            return await self._resync(start)
        ids: list[str] = []
        added_labels: list[tuple[str, str]] = []  # (message id, label id)
        last = start
        for record in history.get("history", []):
            last = max(last, int(record["id"]))
            for added in record.get("messagesAdded", []):
                msg = added.get("message", {})
                if "INBOX" in msg.get("labelIds", ["INBOX"]) and msg["id"] not in ids:
                    ids.append(msg["id"])
            for change in record.get("labelsAdded", []):
                msg = change.get("message", {})
                still = set(msg.get("labelIds") or [])
                added_labels += [
                    (msg["id"], lid)
                    for lid in change.get("labelIds", [])
                    if lid in still and not lid.isupper()  # user labels only
                ]
        page = await self._fetch(ids)
        page.moves = await self._label_moves(added_labels)
        if history.get("nextPageToken"):
            page.cursor, page.more = str(last), True
        else:
            page.cursor = str(max(start, last, int(history.get("historyId", start))))
        return page

    async def _label_moves(self, added: Sequence[tuple[str, str]]) -> list[Change]:
        """User labels added to messages, by name; the pipeline keeps those that mean
        another category than the one it chose (our own labels mean the same one)."""
        if not added:
            return []
        names = await self.labels.names()
        if any(lid not in names for _, lid in added):
            names = {v: k for k, v in (await self.labels.refresh()).items()}
        moves: list[Change] = []
        for mid, lid in dict.fromkeys(added):
            name = names.get(lid)
            if name and name != self.gmail.processed_label:
                moves.append(Change(provider_id=mid, location=name))
        return moves

    # -- history of the staff's own sorting (`mailtriage learn`) ------------------------------

    async def folders(self) -> list[str]:
        """The user labels (staff's sorting), mailtriage's hidden processed label excepted."""
        listing = await self.client.call(
            "labels.list", lambda u: u.labels().list(userId=self.address)
        )
        return sorted(
            str(lab["name"])
            for lab in listing.get("labels", [])
            if lab.get("type") == "user" and lab.get("name") != self.gmail.processed_label
        )

    async def sample(self, location: str, limit: int) -> list[Message]:
        """Up to `limit` most recent messages carrying label `location` (read only)."""
        ids_by_name = {v: k for k, v in (await self.labels.names()).items()}
        label_id = ids_by_name.get(location)
        if label_id is None or limit <= 0:
            return []
        ids: list[str] = []
        token: str | None = None
        while len(ids) < limit:
            listing = await self.client.call(
                "messages.list", self._list_label(label_id, min(500, limit - len(ids)), token)
            )
            ids += [m["id"] for m in listing.get("messages", [])]
            token = listing.get("nextPageToken")
            if not token:
                break
        ids = ids[:limit]
        if not ids:
            return []
        out: list[Message] = []
        for mid, result in await self._read(ids, inbox_only=False, remember=False):
            if isinstance(result, (AccessDeniedError, AuthError, ThrottledError)):
                raise result
            if isinstance(result, Message) and not result.too_large:
                out.append(result)  # a too-large one has no text to learn from
            elif isinstance(result, Failure):
                log.warning("%s: skipped an unreadable message: %s", self.describe(), mid)
        return out

    async def _fetch(self, ids: Sequence[str]) -> ChangePage:
        page = ChangePage()
        for mid, result in await self._read(ids):
            if isinstance(result, NotFoundError) or result is None:
                continue  # deleted since it arrived, or moved out of the inbox by someone
            if isinstance(result, (AccessDeniedError, AuthError, ThrottledError)):
                raise result  # mailbox-level: the page is retried whole, the cursor stays
            if isinstance(result, Message):
                page.messages.append(result)
            elif isinstance(result, Failure):
                page.failures.append(result)
            else:
                page.failures.append(Failure(provider_id=mid, reason=str(result)))
        return page

    async def fetch(self, provider_id: str) -> Message:
        """Read one message again (pipeline retries); NotFoundError when it is gone."""
        [(_, result)] = await self._read([provider_id], inbox_only=False)
        if isinstance(result, Message):
            return result
        if isinstance(result, Exception):
            raise result
        raise MessageParseError(result.reason if isinstance(result, Failure) else "unreadable")

    async def _read(
        self, ids: Sequence[str], *, inbox_only: bool = True, remember: bool = True
    ) -> list[tuple[str, Message | Failure | Exception | None]]:
        """Each id's outcome, in order: a Message, a Failure (unreadable), a core error for
        that id, or None (not in the inbox when `inbox_only`).

        Sizes and routing headers first; raw downloads only up to `max_message_bytes`.
        """
        if not ids:
            return []
        metas = await self.client.batch("messages.get", [self._get_meta(mid) for mid in ids])
        names = await self.labels.names()
        outcome: dict[str, Message | Failure | Exception | None] = {}
        wanted: list[tuple[str, int]] = []
        for mid, meta in zip(ids, metas, strict=True):
            if isinstance(meta, Exception):
                outcome[mid] = meta
            elif inbox_only and "INBOX" not in meta.get("labelIds", []):
                outcome[mid] = None
            elif int(meta.get("sizeEstimate") or 0) > self.max_message_bytes:
                outcome[mid] = self._from_metadata(mid, meta, names)
            else:
                wanted.append((mid, int(meta.get("sizeEstimate") or 0)))
        for group in _size_groups(wanted, RAW_BATCH_BYTES):
            group_ids = [mid for mid, _ in group]
            async with _download_slot(sum(size for _, size in group)):
                raws = await self.client.batch(
                    "messages.get", [self._get_raw(mid) for mid in group_ids]
                )
                for mid, resource in zip(group_ids, raws, strict=True):
                    outcome[mid] = (
                        resource
                        if isinstance(resource, Exception)
                        else self._to_message(mid, resource, names, remember=remember)
                    )
                del raws
        return [(mid, outcome[mid]) for mid in ids]

    def _from_metadata(self, mid: str, meta: dict[str, Any], names: dict[str, str]) -> Message:
        """A message over `max_message_bytes`: routed by its headers and subject only."""
        headers = (meta.get("payload") or {}).get("headers") or []
        block = "".join(f"{h.get('name')}: {h.get('value')}\r\n" for h in headers)
        size = int(meta.get("sizeEstimate") or 0)
        try:
            message = parse_head(
                block.encode("utf-8", "surrogateescape"),
                mailbox=self.address,
                provider_id=mid,
                size=size,
            )
        except MessageParseError:  # no usable header: still routed, by nothing but size
            message = Message(mailbox=self.address, provider_id=mid, size=size, too_large=True)
        log.warning(
            "%s: message %s is %.1f MB, over runtime.max_message_mb: routed by headers and subject",
            self.describe(),
            mid,
            size / MB,
        )
        self._label_flags(message, meta.get("labelIds", []), names)
        return message

    def _list_label(self, label_id: str, size: int, token: str | None) -> Callable[[Any], Any]:
        return lambda u: u.messages().list(
            userId=self.address, labelIds=[label_id], maxResults=size, pageToken=token
        )

    def _get_raw(self, message_id: str) -> Callable[[Any], Any]:
        def make(users: Any) -> Any:
            request = users.messages().get(userId=self.address, id=message_id, format="raw")
            request.postproc = _raw_resource
            return request

        return make

    def _get_meta(self, message_id: str) -> Callable[[Any], Any]:
        return lambda u: u.messages().get(
            userId=self.address,
            id=message_id,
            format="metadata",
            metadataHeaders=METADATA_HEADERS,
        )

    def _to_message(
        self, mid: str, resource: dict[str, Any], names: dict[str, str], *, remember: bool
    ) -> Message | Failure:
        """Parse a `format=raw` resource; its base64 text is dropped once decoded."""
        try:
            raw = resource.pop("raw")
            raw = raw if isinstance(raw, bytes) else _unb64url(raw)
            message = parse_raw(raw, mailbox=self.address, provider_id=mid)
        except MessageParseError as exc:
            return Failure(provider_id=mid, reason=exc.reason)
        except (KeyError, ValueError) as exc:
            return Failure(provider_id=mid, reason=f"unreadable raw message: {exc}")
        self._label_flags(message, resource.get("labelIds", []), names)
        if remember:
            self._remember(mid, raw)
        return message

    def _label_flags(self, message: Message, label_ids: list[str], names: dict[str, str]) -> None:
        label_names = [names.get(i, i) for i in label_ids]
        message.categories = [n for n in label_names if not n.isupper()]
        message.processed_marker = self.gmail.processed_label in label_names

    def _remember(self, mid: str, raw: bytes) -> None:
        self._raw[mid] = raw
        self._raw_bytes += len(raw)
        while self._raw_bytes > RAW_CACHE_BYTES and self._raw:
            _, old = self._raw.popitem(last=False)
            self._raw_bytes -= len(old)

    # -- actions ---------------------------------------------------------------------------

    async def apply(
        self, message: Message, plan: ActionPlan, journal: Journal | None = None
    ) -> Sequence[ActionResult]:
        """Apply in order; runs of label/move/mark-read become ONE messages.modify.

        Each result is journaled as soon as it is known. A forward that an earlier attempt
        may have sent is looked for first (see `forwards`); a modify group an earlier
        attempt may have applied reads the message's labels first and changes only what is
        missing, so a replay moves nothing back.
        """
        if plan.dry_run:
            return []
        journal = journal or NULL_JOURNAL
        results: list[ActionResult] = []
        actions = list(plan.actions)
        i = 0
        while i < len(actions):
            action = actions[i]
            if isinstance(action, Forward):
                try:
                    note = await self.forwards.forward(
                        message, action, journal.intent(i), self._original
                    )
                except ConnectorError as exc:
                    results.append(ActionResult(action, ok=False, error=str(exc)))
                    await journal.record(i, results[-1])
                    break
                results.append(ActionResult(action, ok=True, note=note))
                await journal.record(i, results[-1])
                i += 1
                continue
            start = i
            group: list[Action] = []
            while i < len(actions) and not isinstance(actions[i], Forward):
                group.append(actions[i])
                i += 1
            earlier = any(journal.intent(j).earlier for j in range(start, i))
            try:
                # The marker rides along when nothing follows: one call instead of two.
                await self._modify_group(
                    message, group, with_marker=i == len(actions), check=earlier
                )
            except ConnectorError as exc:
                results.append(ActionResult(group[0], ok=False, error=str(exc)))
                await journal.record(start, results[-1])
                break
            for j, a in enumerate(group, start):
                results.append(ActionResult(a, ok=True))
                await journal.record(j, results[-1])
        return results

    async def _labels_now(self, message_id: str) -> set[str]:
        """The label ids on a message now (format=minimal: no body)."""
        got = await self.client.call(
            "messages.get",
            lambda u: u.messages().get(userId=self.address, id=message_id, format="minimal"),
        )
        return set(got.get("labelIds") or [])

    async def _modify_group(
        self, message: Message, group: Sequence[Action], *, with_marker: bool, check: bool
    ) -> None:
        for attempt in (0, 1):
            add: list[str] = []
            remove: list[str] = []
            moved_to: str | None = None
            for action in group:
                if isinstance(action, Label):
                    add.append(await self.labels.id_for(action.name, action.color))
                elif isinstance(action, Move):
                    moved_to = await self.labels.id_for(action.folder)
                    add.append(moved_to)
                    remove.append("INBOX")
                elif isinstance(action, MarkRead):
                    remove.append("UNREAD")
            if with_marker:
                add.append(await self._processed_label())
            if check:
                now = await self._labels_now(message.provider_id)
                if moved_to and "INBOX" not in now and moved_to not in now:
                    # Out of the Inbox without our label: staff moved it; do not move it back.
                    add.remove(moved_to)
                add = [a for a in add if a not in now]
                remove = [r for r in remove if r in now]
            try:
                await self._modify(message.provider_id, add, remove)
            except ConnectorError as exc:
                if attempt == 0 and "Invalid label" in str(exc):
                    await self.labels.forget()  # a label was deleted: look ids up again
                    continue
                raise
            if with_marker:
                self._marked.add(message.provider_id)
            return

    async def _modify(self, message_id: str, add: list[str], remove: list[str]) -> None:
        add = list(dict.fromkeys(add))
        remove = [r for r in dict.fromkeys(remove) if r not in add]
        if not add and not remove:
            return
        await self.client.call(
            "messages.modify",
            lambda u: u.messages().modify(
                userId=self.address,
                id=message_id,
                body={"addLabelIds": add, "removeLabelIds": remove},
            ),
        )

    async def _processed_label(self) -> str:
        return await self.labels.id_for(self.gmail.processed_label, hidden=True)

    async def _original(self, message_id: str) -> bytes:
        """The raw original of a forward: kept from intake, or downloaded again (decoded in
        slices, see `_raw_resource`: the original of a large forward may be 35 MB)."""
        raw = self._raw.get(message_id)
        if raw is not None:
            return raw
        resource = await self.client.call("messages.get", self._get_raw(message_id))
        got = resource["raw"]
        return got if isinstance(got, bytes) else _unb64url(got)

    async def mark_processed(self, message: Message, decision: Decision) -> None:
        """Add the processed label, unless apply() already did it in its last modify."""
        if self.settings.is_dry_run(self.address):
            return
        if message.provider_id in self._marked:
            self._marked.discard(message.provider_id)
        else:
            await self._modify(message.provider_id, [await self._processed_label()], [])
        if self._raw.pop(message.provider_id, None) is not None:
            self._raw_bytes = sum(len(r) for r in self._raw.values())

    async def aclose(self) -> None:
        self.client.close()
