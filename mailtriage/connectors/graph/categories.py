"""Outlook master categories of one Graph mailbox: created once, with the configured colour.

The master list needs MailboxSettings.ReadWrite (outlookuser-post-mastercategories); without
it categories still apply to messages, only without a colour, and that is said once.
"""

from __future__ import annotations

import logging

from msgraph.generated.models.category_color import CategoryColor
from msgraph.generated.models.outlook_category import OutlookCategory

from mailtriage.connectors.graph.calls import GraphCalls
from mailtriage.core.errors import AccessDeniedError, ConnectorError

log = logging.getLogger(__name__)


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
        self._denied = False

    async def ensure(self, name: str, color: str | None) -> None:
        """Create the coloured master category once; without the permission, warn once."""
        if self._denied:
            return
        masters = self.calls.user.outlook.master_categories
        try:
            if self._names is None:
                resp = await self.calls.raw(masters, masters.to_get_request_information())
                self._names = {
                    str(c.get("displayName") or "").lower() for c in resp.get("value") or []
                }
            if name.lower() in self._names:
                return
            try:
                category = OutlookCategory(display_name=name, color=category_color(color))
                await self.calls.send(masters, masters.to_post_request_information(category))
            except ConnectorError as exc:
                if "409" not in str(exc):  # created meanwhile (or our lost answer): fine
                    raise
            self._names.add(name.lower())
        except AccessDeniedError:
            self._denied = True
            log.warning(
                "graph %s: cannot read or create Outlook master categories (the app lacks "
                "MailboxSettings.ReadWrite); categories are applied without a colour",
                self.calls.address,
            )
