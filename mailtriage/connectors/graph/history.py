"""The staff's own sorting in one Graph mailbox, read for `mailtriage learn` (read only).

Every folder path staff may sort into (the Inbox's subfolders as 'Triage/RH', like
`move_to`, then the other top-level folders and theirs), and the most recent messages of
one of them, read as intake reads them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from msgraph.generated.users.item.mail_folders.item.child_folders.child_folders_request_builder import (  # noqa: E501
    ChildFoldersRequestBuilder,
)
from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
    MessagesRequestBuilder,
)
from msgraph.generated.users.item.mail_folders.mail_folders_request_builder import (
    MailFoldersRequestBuilder,
)

from mailtriage.connectors.graph.calls import PREFER_IMMUTABLE, PREFER_TEXT, GraphCalls, cfg
from mailtriage.connectors.graph.convert import EXPAND_MARKER, SELECT, Json, to_message
from mailtriage.core.message import Message

log = logging.getLogger(__name__)


class GraphHistory:
    """Folder paths and samples of one mailbox; the folder index is read once per use."""

    def __init__(self, calls: GraphCalls) -> None:
        self.calls = calls
        self.address = calls.address
        self._index: dict[str, str] | None = None  # folder path → id

    async def _list_all(
        self, builder: Any, query: Any, prefer: Sequence[str] = (), limit: int = 10_000
    ) -> list[Json]:
        """A GET collection, following @odata.nextLink up to `limit` items."""
        items: list[Json] = []
        resp = await self.calls.raw(
            builder, builder.to_get_request_information(cfg(*prefer, query=query))
        )
        while True:
            items += [v for v in resp.get("value") or [] if isinstance(v, dict)]
            link = resp.get("@odata.nextLink")
            if not link or len(items) >= limit:
                return items[:limit]
            nxt = builder.with_url(link)
            resp = await self.calls.raw(nxt, nxt.to_get_request_information(cfg(*prefer)))

    async def _subfolders(self, folder_id: str | None) -> list[Json]:
        """Child folders of `folder_id` (None: the top-level folders)."""
        select = ["id", "displayName", "childFolderCount"]
        if folder_id is None:
            q: Any = MailFoldersRequestBuilder.MailFoldersRequestBuilderGetQueryParameters(
                top=100, select=select
            )
            builder: Any = self.calls.user.mail_folders
        else:
            q = ChildFoldersRequestBuilder.ChildFoldersRequestBuilderGetQueryParameters(
                top=100, select=select
            )
            builder = self.calls.user.mail_folders.by_mail_folder_id(folder_id).child_folders
        return await self._list_all(builder, q)

    async def _walk(self, folder_id: str, prefix: str, out: dict[str, str]) -> None:
        for f in await self._subfolders(folder_id):
            path = f"{prefix}{f.get('displayName') or ''}"
            if not f.get("id") or path.lower() in {p.lower() for p in out}:
                continue
            out[path] = str(f["id"])
            if f.get("childFolderCount"):
                await self._walk(str(f["id"]), path + "/", out)

    async def index(self) -> dict[str, str]:
        """Folder path → id: the Inbox's subfolders as 'Triage/RH' (like move_to), then
        the other top-level folders and theirs ('Archives/2024'); Inbox paths win."""
        inbox_builder = self.calls.user.mail_folders.by_mail_folder_id("inbox")
        inbox = await self.calls.raw(inbox_builder, inbox_builder.to_get_request_information())
        inbox_id = str(inbox.get("id") or "")
        out: dict[str, str] = {}
        await self._walk(inbox_id or "inbox", "", out)
        for f in await self._subfolders(None):
            name = str(f.get("displayName") or "")
            if not f.get("id") or f["id"] == inbox_id or name.lower() in {p.lower() for p in out}:
                continue
            out[name] = str(f["id"])
            if f.get("childFolderCount"):
                await self._walk(str(f["id"]), name + "/", out)
        self._index = out
        return out

    async def sample(self, location: str, limit: int) -> list[Message]:
        """Up to `limit` most recent messages of folder `location`, read as intake reads."""
        index = self._index if self._index is not None else {}
        if location not in index:
            index = await self.index()
        folder_id = index.get(location) or next(
            (v for k, v in index.items() if k.lower() == location.lower()), None
        )
        if folder_id is None or limit <= 0:
            return []
        q = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            top=min(limit, 100),
            orderby=["receivedDateTime desc"],
            select=SELECT,
            expand=[EXPAND_MARKER],
        )
        builder = self.calls.user.mail_folders.by_mail_folder_id(folder_id).messages
        out: list[Message] = []
        for gm in await self._list_all(builder, q, (PREFER_TEXT, PREFER_IMMUTABLE), limit):
            try:
                out.append(to_message(self.address, gm))
            except (ValueError, TypeError, AttributeError) as exc:
                log.warning("graph %s: skipped an unreadable message: %s", self.address, exc)
        return out
