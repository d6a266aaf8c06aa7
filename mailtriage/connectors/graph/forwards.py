"""Graph forwards: one `POST /forward` set entirely in its body, found again by its id.

A forward is ONE request: message-forward's `message` parameter carries the recipients,
Reply-To and the extended properties, and `comment` the note. The page documents that
parameter ("Specify either the toRecipients parameter or the toRecipients property of the
message parameter", learn.microsoft.com/graph/api/message-forward; "message: Any writeable
properties to update in the reply message", same page, beta), and msgraph-sdk's
`ForwardPostRequestBody` (generated from Graph's v1.0 metadata) has `Message`. The
forward is saved in Sent Items ("This method saves the message in the Sent Items folder"),
with its properties, which is where the evidence below is looked for. Nothing is PATCHed
afterwards: `internetMessageHeaders` can only be set when a message is created
(resources/message; message-update does not list it), so the loop headers travel as named
properties in the PS_INTERNET_HEADERS set, which Exchange writes out as MIME headers
([MS-OXCMAIL] 2.1.3.2.4 "Arbitrary MIME Headers", learn.microsoft.com/openspecs/
exchange_server_protocols/ms-oxcmail/d296c8c5-27c8-46d4-93a9-4da1d69175cf). Unknown (no
page settles it): whether Graph accepts extended properties inside the `message`
parameter of forward (or createForward); the resource page allows them on a new message.

Every forward carries its stable id in a named property (`FORWARD_PROP`). Where an earlier
attempt may have forwarded (a crash, a lost answer, a timeout or 5xx), the mailbox is
searched for that property first ($filter on singleValueExtendedProperties applies to all
messages of the mailbox, singlevaluelegacyextendedproperty-get): a sent copy means done,
nothing means forward again, but only once the sent copy has had time to appear
(`graph.sent_copy_grace_s`, 10 minutes). A draft carrying the id (left by the createForward
+ send protocol of earlier versions) is sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from msgraph.generated.models.message import Message as GraphMessage
from msgraph.generated.models.single_value_legacy_extended_property import (
    SingleValueLegacyExtendedProperty,
)
from msgraph.generated.users.item.messages.item.forward.forward_post_request_body import (
    ForwardPostRequestBody,
)
from msgraph.generated.users.item.messages.messages_request_builder import (
    MessagesRequestBuilder,
)

from mailtriage.connectors.graph.calls import PREFER_IMMUTABLE, GraphCalls, cfg, recipient
from mailtriage.connectors.graph.convert import MARKER_GUID
from mailtriage.core.actions import Forward
from mailtriage.core.errors import ConnectorError, NotFoundError, OutcomeUnknownError
from mailtriage.core.intents import Intent, forward_key, write_once
from mailtriage.core.message import Message
from mailtriage.core.rules import LOOP_HEADER, ORIGIN_HEADER

log = logging.getLogger(__name__)

# The forward's stable id (`core.intents.forward_key`), on the draft and its sent copy.
FORWARD_PROP = f"String {MARKER_GUID} Name MailtriageForward"
# PS_INTERNET_HEADERS: string properties in this set become internet headers.
INTERNET_HEADERS_SET = "{00020386-0000-0000-C000-000000000046}"
# After a send or forward whose answer was lost, the sent copy "is not created until the
# message successfully sends, which may take time" (outlook-immutable-id, "Immutable ID with
# sending mail"). Finding nothing that soon is reported as unknown (retried later), not resent
# (`graph.sent_copy_grace_s`, this by default).
SENT_COPY_GRACE_S = 600.0
# Forwards tried per apply when answers are lost, each after an evidence check.
FORWARD_ATTEMPTS = 3
RETRY_DELAY_S = 1.0

Note = Callable[[str], Awaitable[None]]


def header_property(name: str) -> str:
    """The extended-property id of internet header `name` (PS_INTERNET_HEADERS)."""
    return f"String {INTERNET_HEADERS_SET} Name {name.lower()}"


def _sent_at(evidence: str) -> float | None:
    """The time a forward was attempted, from a `forward:<message id>@<epoch>` note (or the
    `send:<draft id>@<epoch>` of the two-request protocol of earlier versions)."""
    if not evidence.startswith(("forward:", "send:")):
        return None
    try:
        return float(evidence.rpartition("@")[2])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Copy:
    """A message of the mailbox carrying a forward id: a draft, or sent (or being sent)."""

    id: str
    draft: bool
    folder: str


class GraphForwards:
    """Forwards of one mailbox's messages, exactly once."""

    retry_delay_s = RETRY_DELAY_S  # class attribute: tests set 0

    def __init__(self, calls: GraphCalls, *, grace_s: float = SENT_COPY_GRACE_S) -> None:
        self.calls = calls
        self.address = calls.address
        self.grace_s = grace_s

    async def forward(
        self, message: Message, msg_id: str, action: Forward, intent: Intent, note: Note
    ) -> None:
        """Forward `message` once, whatever happened to earlier attempts."""
        key = intent.key or forward_key(self.address, message.provider_id, "")
        evidence = intent.evidence

        async def noted(value: str) -> None:
            nonlocal evidence
            evidence = value
            await note(value)

        await write_once(
            lambda: self._forward(message, msg_id, action, key, noted),
            lambda: self.settle(key, evidence, noted),
            look_first=intent.earlier,
            attempts=FORWARD_ATTEMPTS,
            delay_s=self.retry_delay_s,
            on_unknown=lambda exc: log.warning(
                "graph %s: forward outcome unknown (%s); checking", self.address, exc
            ),
        )

    async def copies(self, key: str) -> list[Copy]:
        """Drafts and sent copies of the forward `key`, anywhere in the mailbox (one GET)."""
        q = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            filter=(
                f"singleValueExtendedProperties/any(ep: ep/id eq '{FORWARD_PROP}' "
                f"and ep/value eq '{key}')"
            ),
            select=["id", "isDraft", "parentFolderId"],
            top=10,
        )
        builder = self.calls.user.messages
        got = await self.calls.raw(
            builder, builder.to_get_request_information(cfg(PREFER_IMMUTABLE, query=q))
        )
        return [
            Copy(str(m["id"]), bool(m.get("isDraft")), str(m.get("parentFolderId") or ""))
            for m in got.get("value") or []
            if isinstance(m, dict) and m.get("id")
        ]

    async def settle(self, key: str, evidence: str, note: Note) -> bool:
        """Finish an earlier attempt from its evidence; False when there is none.

        Sent copy: done (leftover drafts deleted). Draft only: that draft is sent, unless a
        one-request forward was attempted moments ago (its item may be on its way to Sent
        Items). Nothing, shortly after a forward was attempted: OutcomeUnknownError (the
        copy may not exist yet); the pipeline tries again later.
        """
        found = await self.copies(key)
        sent = [c for c in found if not c.draft]
        drafts = [c for c in found if c.draft]
        if sent:
            for d in drafts:
                await self.discard(d.id)
            return True
        sent_at = _sent_at(evidence)
        recent = sent_at is not None and time.time() - sent_at < self.grace_s
        if drafts and not (recent and evidence.startswith("forward:")):
            for d in drafts[1:]:
                await self.discard(d.id)
            await self._send_draft(drafts[0].id, note)
            return True
        if recent:
            raise OutcomeUnknownError(
                f"forward {key} was sent at {sent_at:.0f} and no copy is visible yet",
                mailbox=self.address,
            )
        return False

    def _message_param(self, message: Message, action: Forward, key: str) -> GraphMessage:
        reply_to = action.reply_to or (
            message.reply_address.email if message.reply_address else None
        )
        props = [
            SingleValueLegacyExtendedProperty(id=FORWARD_PROP, value=key),
            SingleValueLegacyExtendedProperty(
                id=header_property(LOOP_HEADER),
                value=f"forwarded; mailbox={self.address}; id={key}",
            ),
        ]
        if message.internet_message_id:
            props.append(
                SingleValueLegacyExtendedProperty(
                    id=header_property(ORIGIN_HEADER), value=message.internet_message_id
                )
            )
        draft = GraphMessage(
            to_recipients=[recipient(a) for a in action.to],
            single_value_extended_properties=props,
        )
        if reply_to:
            draft.reply_to = [recipient(reply_to)]
        return draft

    async def _forward(
        self, message: Message, msg_id: str, action: Forward, key: str, note: Note
    ) -> None:
        """The forward in one request. The attempt is noted first: a resume that finds no
        sent copy shortly after it waits for one rather than forwarding again."""
        body = ForwardPostRequestBody(
            comment=action.note, message=self._message_param(message, action, key)
        )
        await note(f"forward:{msg_id}@{time.time():.0f}")
        builder = self.calls.msg(msg_id).forward
        await self.calls.write(self.calls.send(builder, builder.to_post_request_information(body)))

    async def _send_draft(self, draft_id: str, note: Note) -> None:
        """Send a draft left by earlier versions. Its id is noted first: a resume can tell
        it was sent."""
        await note(f"send:{draft_id}@{time.time():.0f}")
        send = self.calls.msg(draft_id).send
        try:
            await self.calls.write(self.calls.send(send, send.to_post_request_information()))
        except OutcomeUnknownError:
            raise
        except ConnectorError:
            await self.discard(draft_id)  # refused: nothing was sent, leave no draft behind
            raise

    async def discard(self, draft_id: str) -> None:
        """Delete a draft forward (gone already counts as deleted)."""
        builder = self.calls.msg(draft_id)
        try:
            await self.calls.send(builder, builder.to_delete_request_information())
        except NotFoundError:
            pass
        except ConnectorError as exc:
            log.warning("graph %s: could not delete a draft forward: %s", self.address, exc)
