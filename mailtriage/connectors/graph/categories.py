"""Outlook master categories of one Graph mailbox: ensured once, with the configured colour.

Ensured once per mailbox, not per message: the master list is read once (one GET) and a
missing category created once (one POST). Concurrent messages share that work: one lock
per mailbox, and the list is checked again once it is held, so ten messages labelled at the
same moment cost one GET and one POST, not ten POSTs and nine 409s. The list is read again
after `REFRESH_S` (staff may delete or recolour a category in Outlook; a category missing
from the master list still applies to messages, only without a colour,
outlookuser-post-mastercategories), and a 409 (created by someone else meanwhile) counts as
created.

The master list needs MailboxSettings.ReadWrite (outlookuser-post-mastercategories); without
it categories still apply to messages, only without a colour, and that is said once.
"""

from __future__ import annotations

import asyncio
import logging
import time

from msgraph.generated.models.category_color import CategoryColor
from msgraph.generated.models.outlook_category import OutlookCategory

from mailtriage.connectors.graph.calls import GraphCalls
from mailtriage.core.errors import AccessDeniedError, ConnectorError

log = logging.getLogger(__name__)

# The master list is read again after this long.
REFRESH_S = 6 * 3600.0


def category_color(value: str | None) -> CategoryColor:
    """`preset0`..`preset24` from the config; anything else means no colour."""
    try:
        return CategoryColor(value) if value else CategoryColor.None_
    except ValueError:
        return CategoryColor.None_


class MasterCategories:
    """The mailbox's master category list, read once and extended as categories are used."""

    def __init__(self, calls: GraphCalls) -> None:
        self.calls = calls
        self._names: set[str] | None = None
        self._read_at = 0.0
        self._denied = False
        self._lock = asyncio.Lock()

    def _known(self, name: str) -> bool:
        fresh = time.monotonic() - self._read_at < REFRESH_S
        return self._names is not None and fresh and name.lower() in self._names

    async def ensure(self, name: str, color: str | None) -> None:
        """Create the coloured master category once; without the permission, warn once."""
        if self._denied or self._known(name):
            return
        async with self._lock:  # single flight: whoever waited finds the work done
            if self._denied or self._known(name):
                return
            try:
                await self._ensure(name, color)
            except AccessDeniedError:
                self._denied = True
                log.warning(
                    "graph %s: cannot read or create Outlook master categories (the app "
                    "lacks MailboxSettings.ReadWrite); categories are applied without a colour",
                    self.calls.address,
                )

    async def _ensure(self, name: str, color: str | None) -> None:
        masters = self.calls.user.outlook.master_categories
        if self._names is None or time.monotonic() - self._read_at >= REFRESH_S:
            resp = await self.calls.raw(masters, masters.to_get_request_information())
            self._names = {
                str(c.get("displayName") or "").lower()
                for c in resp.get("value") or []
                if isinstance(c, dict)
            }
            self._read_at = time.monotonic()
        if name.lower() in self._names:
            return
        category = OutlookCategory(display_name=name, color=category_color(color))
        try:
            await self.calls.send(masters, masters.to_post_request_information(category))
        except ConnectorError as exc:
            if "409" not in str(exc):  # created meanwhile (or our lost answer): fine
                raise
        self._names.add(name.lower())
