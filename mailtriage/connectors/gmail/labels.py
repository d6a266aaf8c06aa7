"""Gmail labels by name: find or create (parents first, with colours), ids cached in state.

Config colours are Outlook-style presets (`preset0`..`preset24`, shared with Graph) or a
Gmail palette colour `#rrggbb` (optionally `#background/#text`); Gmail only accepts colours
from its fixed palette, so presets map to the nearest palette entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from mailtriage.connectors.gmail.client import GmailClient
from mailtriage.core.errors import ConnectorError
from mailtriage.core.ports import StateStore

log = logging.getLogger(__name__)
STATE_KEY = "gmail.labels"

# Outlook preset → Gmail palette background, text (dark presets get white text).
PRESET_COLOURS: dict[str, tuple[str, str]] = {
    "preset0": ("#fb4c2f", "#ffffff"),  # red
    "preset1": ("#ffad47", "#000000"),  # orange
    "preset2": ("#a46a21", "#ffffff"),  # brown
    "preset3": ("#fad165", "#000000"),  # yellow
    "preset4": ("#16a766", "#ffffff"),  # green
    "preset5": ("#2da2bb", "#ffffff"),  # teal
    "preset6": ("#aa8831", "#ffffff"),  # olive
    "preset7": ("#4a86e8", "#ffffff"),  # blue
    "preset8": ("#a479e2", "#ffffff"),  # purple
    "preset9": ("#e07798", "#ffffff"),  # cranberry
    "preset10": ("#999999", "#000000"),  # steel
    "preset11": ("#666666", "#ffffff"),  # dark steel
    "preset12": ("#cccccc", "#000000"),  # gray
    "preset13": ("#434343", "#ffffff"),  # dark gray
    "preset14": ("#000000", "#ffffff"),  # black
    "preset15": ("#ac2b16", "#ffffff"),  # dark red
    "preset16": ("#cf8933", "#ffffff"),  # dark orange
    "preset17": ("#7a2e0b", "#ffffff"),  # dark brown
    "preset18": ("#d5ae49", "#000000"),  # dark yellow
    "preset19": ("#0b804b", "#ffffff"),  # dark green
    "preset20": ("#0d3b44", "#ffffff"),  # dark teal
    "preset21": ("#594c05", "#ffffff"),  # dark olive
    "preset22": ("#1c4587", "#ffffff"),  # dark blue
    "preset23": ("#41236d", "#ffffff"),  # dark purple
    "preset24": ("#83334c", "#ffffff"),  # dark cranberry
}


def label_colour(colour: str | None) -> dict[str, str] | None:
    """Gmail's `{"backgroundColor", "textColor"}` for a configured colour, None if unknown."""
    if not colour:
        return None
    key = colour.strip().lower()
    if key in PRESET_COLOURS:
        background, text = PRESET_COLOURS[key]
    elif key.startswith("#"):
        background, _, text = key.partition("/")
        text = text or "#000000"
    else:
        log.warning("gmail: label colour %r is not a preset or #rrggbb; ignored", colour)
        return None
    return {"backgroundColor": background, "textColor": text}


class LabelCache:
    """Label name → id for one mailbox; the mapping survives restarts in the StateStore."""

    def __init__(self, client: GmailClient, store: StateStore) -> None:
        self.client = client
        self.store = store
        self._ids: dict[str, str] | None = None
        self._listed = False
        self._lock = asyncio.Lock()  # the pipeline acts on several messages at once

    async def _load(self) -> dict[str, str]:
        if self._ids is None:
            raw = await self.store.get(self.client.address, STATE_KEY)
            self._ids = json.loads(raw) if raw else {}
        return self._ids

    async def _save(self) -> None:
        await self.store.put(self.client.address, STATE_KEY, json.dumps(self._ids, sort_keys=True))

    async def refresh(self) -> dict[str, str]:
        """Re-read every label from Gmail (after a stale id or a name conflict)."""
        listing = await self.client.call(
            "labels.list", lambda u: u.labels().list(userId=self.client.address)
        )
        self._ids = {lab["name"]: lab["id"] for lab in listing.get("labels", [])}
        self._listed = True
        await self._save()
        return self._ids

    async def names(self) -> dict[str, str]:
        """Label id → name (listing once per process)."""
        ids = await self.refresh() if not self._listed else await self._load()
        return {v: k for k, v in ids.items()}

    async def id_for(self, name: str, colour: str | None = None, *, hidden: bool = False) -> str:
        """The id of label `name`, creating it (and its parents, for a/b/c) when missing."""
        ids = await self._load()
        if name in ids:
            return ids[name]
        async with self._lock:
            return await self._find_or_create(name, colour, hidden=hidden)

    async def _find_or_create(self, name: str, colour: str | None, *, hidden: bool) -> str:
        ids = await self._load()
        if name in ids:
            return ids[name]
        if not self._listed:
            ids = await self.refresh()
            if name in ids:
                return ids[name]
        parts = name.split("/")
        if not hidden:
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent not in ids:
                    await self._create(parent, None, hidden=False)
        return await self._create(name, colour, hidden=hidden)

    async def _create(self, name: str, colour: str | None, *, hidden: bool) -> str:
        body: dict[str, Any] = {
            "name": name,
            "labelListVisibility": "labelHide" if hidden else "labelShow",
            "messageListVisibility": "hide" if hidden else "show",
        }
        gmail_colour = label_colour(colour)
        if gmail_colour:
            body["color"] = gmail_colour
        try:
            made = await self.client.call(
                "labels.create", lambda u: u.labels().create(userId=self.client.address, body=body)
            )
        except ConnectorError as exc:
            # 409 "Label name exists or conflicts": someone created it meanwhile.
            status = getattr(exc.__cause__, "status_code", None)
            if status == 400 and "color" in body:
                log.warning("gmail: label colour %r refused; creating %r without", colour, name)
                return await self._create(name, None, hidden=hidden)
            if status != 409:
                raise
            ids = await self.refresh()
            if name not in ids:
                raise
            return ids[name]
        assert self._ids is not None
        self._ids[name] = made["id"]
        await self._save()
        return str(made["id"])

    async def forget(self) -> None:
        """Drop cached ids (a label was deleted by staff); the next lookup re-lists."""
        self._ids = {}
        self._listed = False
        await self.store.put(self.client.address, STATE_KEY, None)
