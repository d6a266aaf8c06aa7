"""Native actions on one Graph mailbox, in as few requests as the API allows.

A plan (forward, label, mark read, move) costs:

- the forward: ONE `POST /forward`, everything set in its body (see `forwards`);
- ONE `PATCH` for every label and the read flag of a run of such actions, carrying the
  processed marker (a named extended property) too when only moves follow: categories,
  isRead and singleValueExtendedProperties are all writable in one message update
  (message-update; singlevaluelegacyextendedproperty-post-singlevalueextendedproperties,
  "PATCH … in an existing resource instance");
- the move.

So 3 requests with a forward and 2 without: the minimum the API allows. The marker rides
on the PATCH before the move: a crash between them leaves a marked message whose move is
still pending in the ledger, and the pipeline resumes it from the ledger row, never from
the marker (`core.pipeline`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from msgraph.generated.models.message import Message as GraphMessage
from msgraph.generated.models.single_value_legacy_extended_property import (
    SingleValueLegacyExtendedProperty,
)

from mailtriage.connectors.graph.calls import GraphCalls
from mailtriage.connectors.graph.categories import MasterCategories
from mailtriage.connectors.graph.convert import MARKER_ID
from mailtriage.connectors.graph.folders import GraphFolders
from mailtriage.connectors.graph.forwards import GraphForwards
from mailtriage.core.actions import Action, ActionPlan, Forward, Label, MarkRead, Move
from mailtriage.core.errors import AuthError, ConnectorError
from mailtriage.core.message import Message
from mailtriage.core.ports import ActionResult, Journal

log = logging.getLogger(__name__)

# Actions that are properties of the message: one PATCH sets a run of them.
PATCHED = (Label, MarkRead)


class GraphActions:
    """Applies plans to one mailbox's messages; journals each result as it is known."""

    def __init__(
        self,
        calls: GraphCalls,
        folders: GraphFolders,
        categories: MasterCategories,
        forwards: GraphForwards,
    ) -> None:
        self.calls = calls
        self.folders = folders
        self.categories = categories
        self.forwards = forwards
        self.address = calls.address

    async def apply(
        self, message: Message, plan: ActionPlan, journal: Journal
    ) -> list[ActionResult]:
        """Apply the plan in order; stop at the first failure (auth errors propagate)."""
        results: list[ActionResult] = []
        actions = list(plan.actions)
        current = message.provider_id
        i = 0
        while i < len(actions):
            end = i + 1
            if isinstance(actions[i], PATCHED):
                while end < len(actions) and isinstance(actions[end], PATCHED):
                    end += 1
            group = actions[i:end]
            try:
                new_id = await self._apply_group(message, current, group, plan, i, journal)
            except AuthError:
                raise
            except ConnectorError as exc:
                results.append(ActionResult(group[0], ok=False, error=str(exc)))
                await journal.record(i, results[-1])
                break
            for index, action in enumerate(group, i):
                results.append(ActionResult(action, ok=True, new_provider_id=new_id))
                await journal.record(index, results[-1])
            if new_id:
                current = new_id
            i = end
        return results

    async def _apply_group(
        self,
        message: Message,
        msg_id: str,
        group: Sequence[Action],
        plan: ActionPlan,
        start: int,
        journal: Journal,
    ) -> str | None:
        """One request or one write protocol: a forward, a move, or a run of PATCHed actions."""
        action = group[0]
        if isinstance(action, Forward):
            await self.forwards.forward(
                message, msg_id, action, journal.intent(start), lambda e: journal.note(start, e)
            )
            return None
        if isinstance(action, Move):
            return await self.folders.move(msg_id, action.folder, journal.intent(start))
        if isinstance(action, PATCHED):
            rest = plan.actions[start + len(group) :]
            only_moves_follow = all(isinstance(a, Move) for a in rest)
            await self.patch(message, msg_id, group, plan.marker if only_moves_follow else "")
            return None
        raise ConnectorError(f"unsupported action {action!r}", mailbox=self.address)

    async def patch(
        self, message: Message, msg_id: str, group: Sequence[Action], marker: str = ""
    ) -> None:
        """Labels, read flag and marker in one PATCH; nothing already there is sent again.

        Categories are a set: the PATCH carries the full list (the message's own plus ours),
        and a category already on the message costs no request.
        """
        labels = [a for a in group if isinstance(a, Label)]
        for label in labels:
            await self.categories.ensure(label.name, label.color)
        cats = list(dict.fromkeys([*message.categories, *(a.name for a in labels)]))
        body = GraphMessage()
        changed = False
        if cats != message.categories:
            body.categories = cats
            changed = True
        if any(isinstance(a, MarkRead) for a in group):
            body.is_read = True
            changed = True
        if marker and not message.processed_marker:
            body.single_value_extended_properties = [
                SingleValueLegacyExtendedProperty(id=MARKER_ID, value=marker)
            ]
            changed = True
        if not changed:
            return
        await self.calls.patch(msg_id, body)
        message.categories = cats
        if marker:
            message.processed_marker = True

    async def mark(self, message: Message, marker: str) -> None:
        """The processed marker alone, unless the plan's PATCH carried it already."""
        if message.processed_marker:
            return
        await self.patch(message, message.provider_id, (), marker)
