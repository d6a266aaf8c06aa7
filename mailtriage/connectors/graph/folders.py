"""Folders of one Graph mailbox: ids by path (created when missing), and idempotent moves.

Ids are resolved once per mailbox: cached in memory and in the StateStore, and resolved
under one lock per mailbox, so concurrent messages share one lookup (and creation) instead
of racing into 409s. A cached id that Graph answers 404 for (staff deleted the folder) is
forgotten and resolved again, once, by the move that met it. A move is not idempotent: `Prefer:
IdType="ImmutableId"` keeps a message's id across moves within the mailbox
(learn.microsoft.com/graph/outlook-immutable-id, "Lifetime of immutable IDs"), so a move
that may have happened is checked by reading the message's `parentFolderId` before it is
tried again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from msgraph.generated.models.mail_folder import MailFolder
from msgraph.generated.users.item.mail_folders.item.child_folders.child_folders_request_builder import (  # noqa: E501
    ChildFoldersRequestBuilder,
)
from msgraph.generated.users.item.messages.item.message_item_request_builder import (
    MessageItemRequestBuilder,
)
from msgraph.generated.users.item.messages.item.move.move_post_request_body import (
    MovePostRequestBody,
)

from mailtriage.connectors.graph.calls import PREFER_IMMUTABLE, GraphCalls, cfg
from mailtriage.core.errors import ConnectorError, NotFoundError, OutcomeUnknownError
from mailtriage.core.intents import Intent
from mailtriage.core.ports import StateStore

log = logging.getLogger(__name__)

# A category folder not found is looked up again after this long (staff may create it).
MISSING_FOLDER_TTL_S = 3600.0
# Moves tried per apply when answers are lost (each retry after a parentFolderId check).
MOVE_ATTEMPTS = 3


def _key(path: str) -> str:
    return path.strip("/").lower()


class GraphFolders:
    """Folder ids under the Inbox by path ('Triage/RH'), and moves into them."""

    def __init__(self, calls: GraphCalls, store: StateStore) -> None:
        self.calls = calls
        self.store = store
        self.address = calls.address
        self._ids: dict[str, str] = {}
        self._missing: dict[str, float] = {}  # folder path → when it was not found
        self._lock = asyncio.Lock()
        self._inbox: str | None = None

    def _store_key(self, path: str) -> str:
        return "graph.folder:" + _key(path)

    async def forget(self, path: str) -> None:
        self._ids.pop(_key(path), None)
        await self.store.put(self.address, self._store_key(path), None)

    async def folder_id(self, path: str) -> str:
        """The id of Inbox/<path>, creating missing folders; cached in memory and the store."""
        key = _key(path)
        if key in self._ids:
            return self._ids[key]
        async with self._lock:  # single flight: whoever waited finds the work done
            if key in self._ids:
                return self._ids[key]
            stored = await self.store.get(self.address, self._store_key(path))
            if stored:
                self._ids[key] = stored
                return stored
            parent = "inbox"
            for part in path.strip("/").split("/"):
                parent = await self._child_folder(parent, part)
            self._ids[key] = parent
            await self.store.put(self.address, self._store_key(path), parent)
            return parent

    async def find_folder_id(self, path: str) -> str | None:
        """The id of Inbox/<path> if it exists (never creates; misses are re-checked hourly)."""
        key = _key(path)
        if key in self._ids:
            return self._ids[key]
        stored = await self.store.get(self.address, self._store_key(path))
        if stored:
            self._ids[key] = stored
            return stored
        if time.monotonic() - self._missing.get(key, -MISSING_FOLDER_TTL_S) < MISSING_FOLDER_TTL_S:
            return None
        parent = "inbox"
        for part in path.strip("/").split("/"):
            child = await self._find_child(parent, part)
            if child is None:
                self._missing[key] = time.monotonic()
                return None
            parent = child
        self._ids[key] = parent
        await self.store.put(self.address, self._store_key(path), parent)
        return parent

    async def inbox_id(self) -> str:
        """The Inbox's own id (well-known names are not what `parentFolderId` holds)."""
        if self._inbox is None:
            builder = self.calls.user.mail_folders.by_mail_folder_id("inbox")
            got = await self.calls.raw(builder, builder.to_get_request_information())
            self._inbox = str(got.get("id") or "inbox")
        return self._inbox

    def _child_lookup(self, parent: str, name: str) -> tuple[Any, Any]:
        children = self.calls.user.mail_folders.by_mail_folder_id(parent).child_folders
        escaped = name.replace("'", "''")
        q = ChildFoldersRequestBuilder.ChildFoldersRequestBuilderGetQueryParameters(
            filter=f"displayName eq '{escaped}'", select=["id", "displayName"]
        )
        return children, children.to_get_request_information(cfg(query=q))

    async def _find_child(self, parent: str, name: str) -> str | None:
        children, lookup = self._child_lookup(parent, name)
        for f in (await self.calls.raw(children, lookup)).get("value") or []:
            if str(f.get("displayName") or "").lower() == name.lower() and f.get("id"):
                return str(f["id"])
        return None

    async def _child_folder(self, parent: str, name: str) -> str:
        found_id = await self._find_child(parent, name)
        if found_id is not None:
            return found_id
        children, lookup = self._child_lookup(parent, name)
        request = children.to_post_request_information(MailFolder(display_name=name))
        try:
            created = await self.calls.raw(children, request)
        except ConnectorError as exc:
            # 409: created meanwhile (or by our own request whose answer was lost).
            if "409" not in str(exc):
                raise
            found = (await self.calls.raw(children, lookup)).get("value") or []
            return str(next(f["id"] for f in found if f.get("id")))
        if not created.get("id"):
            raise ConnectorError(f"folder {name!r} was not created", mailbox=self.address)
        return str(created["id"])

    # -- moves ---------------------------------------------------------------------

    async def parent_of(self, msg_id: str) -> str | None:
        """The folder a message is in now (None when it is gone)."""
        q = MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters(
            select=["parentFolderId"]
        )
        builder = self.calls.msg(msg_id)
        try:
            got = await self.calls.raw(
                builder, builder.to_get_request_information(cfg(PREFER_IMMUTABLE, query=q))
            )
        except NotFoundError:
            return None
        return str(got.get("parentFolderId") or "") or None

    async def _already_moved(self, msg_id: str, path: str) -> bool:
        """True when the message needs no move: it is in the folder, or staff moved it.

        A message neither in the Inbox nor in the target was moved by someone after our
        earlier attempt (or by that attempt, then by staff): it is not moved back.
        """
        where = await self.parent_of(msg_id)
        if where is None:
            raise NotFoundError(f"message {msg_id} is gone", mailbox=self.address)
        if where == await self.folder_id(path):
            return True
        if where != await self.inbox_id():
            log.info("graph %s: %s left the Inbox already; not moved", self.address, msg_id)
            return True
        return False

    async def move(self, msg_id: str, path: str, intent: Intent) -> str | None:
        """Move a message to Inbox/<path>; returns its new id, if the id changed.

        When an earlier attempt may have moved it, and before retrying a move whose answer
        was lost, the message's current folder is read first (one GET).
        """
        if intent.earlier and await self._already_moved(msg_id, path):
            return None
        builder = self.calls.msg(msg_id).move

        def request(folder: str) -> Any:
            body = MovePostRequestBody(destination_id=folder)
            return builder.to_post_request_information(body, cfg(PREFER_IMMUTABLE))

        forgot = False
        for attempt in range(MOVE_ATTEMPTS):
            try:
                moved = await self.calls.write(
                    self.calls.raw(builder, request(await self.folder_id(path)))
                )
            except NotFoundError:
                if forgot:
                    raise
                # The cached folder may have been deleted by staff: resolve it again once.
                forgot = True
                await self.forget(path)
                continue
            except OutcomeUnknownError:
                # The same check as on a resume, before any retry of the move.
                if await self._already_moved(msg_id, path):
                    return None
                if attempt + 1 == MOVE_ATTEMPTS:
                    raise
                continue
            return str(moved["id"]) if moved.get("id") else None
        raise OutcomeUnknownError(f"move of {msg_id} not confirmed", mailbox=self.address)
