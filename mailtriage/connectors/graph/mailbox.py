"""`GraphMailbox`: one shared Microsoft 365 mailbox through msgraph-sdk (app-only).

Intake is a delta query on the Inbox (created items only, `$select` of what the core
needs, text bodies, immutable ids); the deltaLink is the cursor. Actions are native
(`actions`): forwards set entirely at creation and sent once (`forwards`), Outlook
categories (`categories`), isRead and a named extended property as the durable "processed"
marker in one PATCH, and folder moves (`folders`). The staff's own sorting, read for
`learn`, is in `history`; request plumbing in `calls`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from msgraph.generated.users.item.messages.item.attachments.attachments_request_builder import (
    AttachmentsRequestBuilder,
)

from mailtriage.connectors.graph.actions import GraphActions
from mailtriage.connectors.graph.calls import PREFER_IMMUTABLE, PREFER_TEXT, GraphCalls
from mailtriage.connectors.graph.calls import cfg as _cfg
from mailtriage.connectors.graph.categories import MasterCategories
from mailtriage.connectors.graph.client import GraphClient, build_client
from mailtriage.connectors.graph.convert import (
    EXPAND_MARKER,
    SELECT,
    Json,
    attachments_of,
    has_marker,
    is_removed,
    to_message,
)
from mailtriage.connectors.graph.folders import GraphFolders
from mailtriage.connectors.graph.forwards import GraphForwards
from mailtriage.connectors.graph.history import GraphHistory
from mailtriage.core import planner
from mailtriage.core.actions import ActionPlan
from mailtriage.core.config import MailboxSettings, Settings
from mailtriage.core.decision import Decision
from mailtriage.core.errors import (
    AccessDeniedError,
    AuthError,
    ConnectorError,
    CursorExpiredError,
    MessageParseError,
    NotFoundError,
)
from mailtriage.core.message import Attachment, Message
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

# Pages followed per category folder and sync when tracking staff moves.
MOVE_PAGES_MAX = 10


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GraphMailbox:
    """A shared mailbox at Microsoft 365; implements `mailtriage.core.ports.Mailbox`."""

    provider = "graph"
    supports_push = True

    def __init__(
        self,
        address: str,
        client: GraphClient,
        store: StateStore,
        settings: Settings,
        *,
        mailbox_settings: MailboxSettings | None = None,
        owns_client: bool = True,
    ) -> None:
        self.address = address.lower()
        self.client = client
        self.store = store
        self.settings = settings
        self.mailbox_settings = mailbox_settings or settings.mailbox(self.address)
        self._owns_client = owns_client
        self.calls = GraphCalls(client, self.address)
        self.mail_folders = GraphFolders(self.calls, store)
        self.categories = MasterCategories(self.calls)
        self.forwards = GraphForwards(self.calls, grace_s=settings.graph.sent_copy_grace_s)
        self.actions = GraphActions(self.calls, self.mail_folders, self.categories, self.forwards)
        self.history = GraphHistory(self.calls)
        # Category-folder delta links read but not yet saved: saved at the next `changes()`
        # call, i.e. once the pipeline has recorded the moves (a crash replays them).
        self._pending_links: dict[str, str] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        mailbox: MailboxSettings,
        store: StateStore,
        *,
        client: GraphClient | None = None,
        credential: Any = None,
    ) -> GraphMailbox:
        """Build from configuration; pass `client` to share one GraphClient across mailboxes."""
        owns = client is None
        if client is None:
            client = build_client(settings.graph, credential=credential)
        return cls(
            mailbox.address, client, store, settings, mailbox_settings=mailbox, owns_client=owns
        )

    def __repr__(self) -> str:
        return f"GraphMailbox({self.address!r})"

    @property
    def _user(self) -> Any:
        return self.calls.user

    def _msg(self, message_id: str) -> Any:
        return self.calls.msg(message_id)

    @property
    def dry_run(self) -> bool:
        return self.settings.is_dry_run(self.address)

    # -- intake --------------------------------------------------------------------

    def _delta_url(self, since: datetime) -> str:
        params = [
            ("changeType", "created"),
            ("$select", ",".join(SELECT)),
            ("$expand", EXPAND_MARKER),
            ("$filter", f"receivedDateTime ge {_iso(since)}"),
        ]
        query = "&".join(f"{k}={quote(v, safe=',')}" for k, v in params)
        return (
            f"{self.client.base_url}/users/{quote(self.address)}"
            f"/mailFolders('inbox')/messages/delta()?{query}"
        )

    def _first_start(self) -> datetime:
        days = self.mailbox_settings.backfill_days if self.mailbox_settings else 0
        return datetime.now(UTC) - timedelta(days=days)

    async def _raw(self, builder: Any, info: Any) -> Json:
        """Send an SDK-built GET and return the JSON body (no SDK model deserialisation)."""
        return await self.calls.raw(builder, info)

    async def _delta(self, url: str) -> Json:
        cfg = _cfg(
            PREFER_TEXT, PREFER_IMMUTABLE, f"odata.maxpagesize={self.settings.graph.page_size}"
        )
        builder = self._user.mail_folders.by_mail_folder_id("inbox").messages.delta.with_url(url)
        return await self._raw(builder, builder.to_get_request_information(cfg))

    async def changes(self, cursor: str | None) -> ChangePage:
        """One delta page. `cursor` is a nextLink/deltaLink; None starts per backfill_days.

        An expired or invalid token restarts from `graph.resync_window_hours` ago: the
        ledger (and the processed marker) make sure nothing is handled twice.
        """
        for key, link in self._pending_links.items():
            await self.store.put(self.address, key, link)
        self._pending_links.clear()
        url = cursor or self._delta_url(self._first_start())
        try:
            resp = await self._delta(url)
        except CursorExpiredError as exc:
            if cursor is None:
                raise
            hours = self.settings.graph.resync_window_hours
            log.warning(
                "graph %s: delta token expired (%s); resync from %sh ago", self.address, exc, hours
            )
            resp = await self._delta(self._delta_url(datetime.now(UTC) - timedelta(hours=hours)))
        items = [
            gm for gm in resp.get("value") or [] if isinstance(gm, dict) and not is_removed(gm)
        ]
        atts = await asyncio.gather(*(self._attachments(gm) for gm in items))
        page = ChangePage()
        for gm, att in zip(items, atts, strict=True):
            try:
                page.messages.append(to_message(self.address, gm, att))
            except (ValueError, TypeError, AttributeError) as exc:
                page.failures.append(
                    Failure(
                        provider_id=str(gm.get("id") or "?"),
                        reason=f"unreadable Graph message: {exc}",
                        internet_message_id=gm.get("internetMessageId"),
                        subject=str(gm.get("subject") or ""),
                    )
                )
        next_link = resp.get("@odata.nextLink")
        page.cursor = next_link or resp.get("@odata.deltaLink") or cursor
        page.more = bool(next_link)
        if not page.more:
            page.moves = await self._staff_moves()
        return page

    # -- staff moves into category folders (corrections) ---------------------------

    def _tracked_folders(self) -> list[str]:
        """Folders whose arrivals are category decisions: move_to paths and folder_map."""
        paths = [c.actions.move_to for c in self.settings.categories_for(self.address)]
        if self.mailbox_settings is not None:
            paths += list(self.mailbox_settings.folder_map)
        return list(dict.fromkeys(p.strip("/") for p in paths if p and p.strip("/")))

    def _moves_key(self, path: str) -> str:
        return "graph.moves:" + path.strip("/").lower()

    def _moves_url(self, folder_id: str) -> str:
        params = [
            ("changeType", "created"),
            ("$select", "id,internetMessageId"),
            ("$filter", f"receivedDateTime ge {_iso(datetime.now(UTC))}"),
        ]
        query = "&".join(f"{k}={quote(v, safe=',')}" for k, v in params)
        return (
            f"{self.client.base_url}/users/{quote(self.address)}"
            f"/mailFolders/{quote(folder_id)}/messages/delta()?{query}"
        )

    async def _staff_moves(self) -> list[Change]:
        """Messages that arrived in a category folder since the last sync.

        One created-only delta per existing category folder and sync, cursor per folder in
        the StateStore (first run: from now), saved at the next call once the pipeline has
        recorded these moves. Our own moves arrive there too and map to the category
        already recorded, so the pipeline ignores them. A failure here is logged and never
        holds up intake.
        """
        moves: list[Change] = []
        for path in self._tracked_folders():
            try:
                moves += await self._folder_arrivals(path)
            except (AuthError, AccessDeniedError):
                raise
            except ConnectorError as exc:
                log.warning("graph %s: staff moves in %r unread: %s", self.address, path, exc)
        return moves

    async def _folder_arrivals(self, path: str) -> list[Change]:
        key = self._moves_key(path)
        folder = await self.mail_folders.find_folder_id(path)
        if folder is None:
            return []
        url = await self.store.get(self.address, key)
        first = url is None
        out: list[Change] = []
        for _ in range(MOVE_PAGES_MAX):
            try:
                resp = await self._delta(url or self._moves_url(folder))
            except CursorExpiredError:
                resp = await self._delta(self._moves_url(folder))
                first = True
            except NotFoundError:  # the folder was deleted: start over when it is back
                await self.mail_folders.forget(path)
                await self.store.put(self.address, key, None)
                return out
            for gm in resp.get("value") or []:
                if isinstance(gm, dict) and gm.get("id") and not is_removed(gm) and not first:
                    out.append(
                        Change(
                            provider_id=str(gm["id"]),
                            location=path,
                            internet_message_id=gm.get("internetMessageId"),
                        )
                    )
            url = resp.get("@odata.nextLink") or resp.get("@odata.deltaLink") or url
            if url:
                self._pending_links[key] = url
            if not resp.get("@odata.nextLink"):
                break
        return out

    # -- history of the staff's own sorting (`mailtriage learn`) --------------------

    async def folders(self) -> list[str]:
        """Every mail folder path staff may sort into (read only)."""
        return sorted(await self.history.index(), key=str.lower)

    async def sample(self, location: str, limit: int) -> list[Message]:
        """Up to `limit` most recent messages of folder `location`, read as intake reads."""
        return await self.history.sample(location, limit)

    async def fetch(self, provider_id: str) -> Message:
        """Read one message again (pipeline retries); NotFoundError when it is gone."""
        from msgraph.generated.users.item.messages.item.message_item_request_builder import (
            MessageItemRequestBuilder,
        )

        q = MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters(
            select=SELECT, expand=[EXPAND_MARKER]
        )
        builder = self._msg(provider_id)
        gm = await self._raw(
            builder,
            builder.to_get_request_information(_cfg(PREFER_TEXT, PREFER_IMMUTABLE, query=q)),
        )
        try:
            return to_message(self.address, gm, await self._attachments(gm))
        except (ValueError, TypeError, AttributeError) as exc:
            raise MessageParseError(f"unreadable Graph message: {exc}") from exc

    async def _attachments(self, gm: Json) -> list[Attachment]:
        """Attachment names/types/sizes (never content); one GET, only when there are some."""
        if not gm.get("hasAttachments") or not gm.get("id") or has_marker(gm):
            return []
        q = AttachmentsRequestBuilder.AttachmentsRequestBuilderGetQueryParameters(
            select=["name", "contentType", "size", "isInline"]
        )
        builder = self._msg(str(gm["id"])).attachments
        try:
            data = await self._raw(builder, builder.to_get_request_information(_cfg(query=q)))
        except ConnectorError as exc:  # a hint only: never lose the message for it
            log.warning("graph %s: attachment list unavailable: %s", self.address, exc)
            return []
        return attachments_of(data.get("value"))

    # -- actions -------------------------------------------------------------------

    async def apply(
        self, message: Message, plan: ActionPlan, journal: Journal | None = None
    ) -> Sequence[ActionResult]:
        """Apply the plan in order, journaling each result; stop at the first failure.

        Auth errors propagate. Forwards and moves whose intent says an earlier attempt may
        have done them are looked for first (see `forwards`, `folders`); see `actions` for
        how few requests a plan costs.
        """
        if plan.dry_run or self.dry_run:
            return [ActionResult(a, ok=False, error="dry run: not applied") for a in plan.actions]
        return await self.actions.apply(message, plan, journal or NULL_JOURNAL)

    async def folder_id(self, path: str) -> str:
        """The id of Inbox/<path>, creating missing folders (see `folders`)."""
        return await self.mail_folders.folder_id(path)

    async def mark_processed(self, message: Message, decision: Decision) -> None:
        """Set the MailtriageProcessed extended property (survives a lost ledger), unless
        the plan's own PATCH set it already."""
        if self.dry_run:
            return
        await self.actions.mark(message, planner.marker(decision))

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()
