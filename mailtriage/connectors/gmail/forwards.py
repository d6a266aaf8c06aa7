"""Gmail forwards, sent once: a deterministic Message-ID, and a look for it before any retry.

Gmail has no native forward: a forward is a new message sent with `messages.send` (see
`mime.build_forward`). Its Message-ID is derived from the forward's stable id
(`core.intents.forward_message_id`), so after a crash, a timeout, a 5xx or a dropped
connection the sent copy can be found again before anything is sent a second time:

1. `in:sent rfc822msgid:<id>` (the search operator, support.google.com/mail/answer/7190;
   `messages.list` `q` "supports the same query format as the Gmail search box");
2. then the Message-IDs of the most recent messages labelled SENT, read by label rather
   than by search. Unknown (no page settles it): how soon a sent message becomes
   searchable, and whether Gmail keeps a client-set Message-ID on every path; the label
   listing covers the first, and the second would show as a duplicate only if both fail.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mailtriage.connectors.gmail.client import GmailClient
from mailtriage.connectors.gmail.mime import build_forward
from mailtriage.core.actions import Forward
from mailtriage.core.errors import ConnectorError, NotFoundError
from mailtriage.core.intents import Intent, forward_key, forward_message_id, write_once
from mailtriage.core.message import Message

log = logging.getLogger(__name__)

# Sends tried per apply when answers are lost, each after a look for the sent copy.
SEND_ATTEMPTS = 3
RETRY_DELAY_S = 1.0
# Recent SENT messages whose Message-ID is read when the search finds nothing.
RECENT_SENT = 10

Original = Callable[[str], Awaitable[bytes]]
Build = Callable[[Any], Any]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class GmailForwards:
    """Forwards of one mailbox's messages, exactly once."""

    retry_delay_s = RETRY_DELAY_S  # class attribute: tests set 0

    def __init__(self, client: GmailClient, address: str, *, mode: str = "attach") -> None:
        self.client = client
        self.address = address
        self.mode = mode

    async def forward(
        self, message: Message, action: Forward, intent: Intent, original: Original
    ) -> None:
        """Send the forward of `message` unless its sent copy exists already."""
        key = intent.key or forward_key(self.address, message.provider_id, "")
        message_id = forward_message_id(key, self.address)

        async def send() -> None:
            original_raw = await original(message.provider_id)
            await self._send(original_raw, message, action, message_id)

        await write_once(
            send,
            lambda: self.was_sent(message_id),
            look_first=intent.earlier,
            attempts=SEND_ATTEMPTS,
            delay_s=self.retry_delay_s,
            on_unknown=lambda exc: log.warning(
                "gmail %s: send outcome unknown (%s); checking", self.address, exc
            ),
        )

    async def _send(
        self, original: bytes, message: Message, action: Forward, message_id: str
    ) -> None:
        data = build_forward(original, message, action, mode=self.mode, message_id=message_id)
        body = {"raw": _b64url(data)}
        await self.client.call(
            "messages.send", lambda u: u.messages().send(userId=self.address, body=body)
        )

    async def was_sent(self, message_id: str) -> bool:
        """Whether a message with this Message-ID is in the mailbox's sent mail."""
        found = await self.client.call(
            "messages.list",
            lambda u: u.messages().list(
                userId=self.address,
                q=f"in:sent rfc822msgid:{message_id.strip('<>')}",
                includeSpamTrash=True,
                maxResults=5,
            ),
        )
        if found.get("messages"):
            return True
        return message_id in await self._recent_sent_ids()

    async def _recent_sent_ids(self) -> set[str]:
        """Message-IDs of the latest SENT messages (label listing, not the search index)."""
        listing = await self.client.call(
            "messages.list",
            lambda u: u.messages().list(
                userId=self.address, labelIds=["SENT"], maxResults=RECENT_SENT
            ),
        )
        ids = [m["id"] for m in listing.get("messages", [])]
        if not ids:
            return set()
        results = await self.client.batch("messages.get", [self._get_id(mid) for mid in ids])
        out: set[str] = set()
        for result in results:
            if isinstance(result, NotFoundError):
                continue  # deleted since the listing
            if isinstance(result, ConnectorError):
                raise result
            for header in (result or {}).get("payload", {}).get("headers", []):
                if str(header.get("name", "")).lower() == "message-id":
                    out.add(str(header.get("value", "")).strip())
        return out

    def _get_id(self, message_id: str) -> Build:
        return lambda u: u.messages().get(
            userId=self.address, id=message_id, format="metadata", metadataHeaders=["Message-ID"]
        )
