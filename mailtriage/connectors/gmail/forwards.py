"""Gmail forwards, sent once: a deterministic Message-ID, and a look for it before any retry.

Gmail has no native forward: a forward is a new message sent with `messages.send` (see
`mime.build_forward`), one request whatever its size:

- up to `JSON_SEND_MAX_BYTES`, as the JSON `raw` field (base64url, a third larger);
- above that, through the media upload of the same method (`POST /upload/gmail/v1/users/
  {userId}/messages/send?uploadType=media`, `message/rfc822`; developers.google.com/
  workspace/gmail/api/guides/uploads), which takes up to 35 MB ("Maximum file size: 35MB",
  the users.messages.send reference; `maxSize` 36700160 in the discovery document). The
  JSON path is refused well below that: 413 "Request Entity Too Large" is reported from
  about 5 MB and a 1 MiB payload limit for some accounts (no page documents either), hence
  the low threshold;
- above 35 MB, a notice is forwarded instead (`mime.build_notice`: subject, sender, date and
  a link to the original in the shared mailbox), and the result says so.

Its Message-ID is derived from the forward's stable id (`core.intents.forward_message_id`),
on every path, so after a crash, a timeout, a 5xx or a dropped connection the sent copy can
be found again before anything is sent a second time:

1. `in:sent rfc822msgid:<id>` (the search operator, support.google.com/mail/answer/7190;
   `messages.list` `q` "supports the same query format as the Gmail search box");
2. then the Message-IDs of the most recent messages labelled SENT, read by label rather
   than by search. Unknown (no page settles it): how soon a sent message becomes
   searchable, and whether Gmail keeps a client-set Message-ID on every path; the label
   listing covers the first, and the second would show as a duplicate only if both fail.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from googleapiclient.http import MediaIoBaseUpload

from mailtriage.connectors.gmail.client import GmailClient, on_endpoint
from mailtriage.connectors.gmail.mime import build_forward, build_notice
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
MB = 1024 * 1024
# Forwards up to this size go as JSON `raw` (a JSON body of about 700 KB, under the 1 MiB
# payload limit reported for some accounts); larger ones through the media upload.
JSON_SEND_MAX_BYTES = 512 * 1024
# The media upload's limit for messages.send: 35 MB (discovery `maxSize`).
UPLOAD_MAX_BYTES = 36_700_160

Original = Callable[[str], Awaitable[bytes]]
Build = Callable[[Any], Any]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def notice_note(size: int) -> str:
    """The ledger's note for a forward that went as a notice."""
    return f"sent as a notice: {size / MB:.1f} MB, over the 35 MB Gmail sends"


class GmailForwards:
    """Forwards of one mailbox's messages, exactly once."""

    retry_delay_s = RETRY_DELAY_S  # class attribute: tests set 0

    def __init__(self, client: GmailClient, address: str, *, mode: str = "attach") -> None:
        self.client = client
        self.address = address
        self.mode = mode

    async def forward(
        self, message: Message, action: Forward, intent: Intent, original: Original
    ) -> str:
        """Send the forward of `message` unless its sent copy exists already.

        Returns how it was done when not as a plain forward (a notice for a message too
        large to send), else "".
        """
        key = intent.key or forward_key(self.address, message.provider_id, "")
        message_id = forward_message_id(key, self.address)
        note = notice_note(message.size) if message.size > UPLOAD_MAX_BYTES else ""

        async def send() -> None:
            nonlocal note
            data, note = await self._payload(message, action, message_id, original)
            await self._send(data)

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
        return note

    async def _payload(
        self, message: Message, action: Forward, message_id: str, original: Original
    ) -> tuple[bytes, str]:
        """The forward's RFC 822 bytes, or a notice's when they would exceed 35 MB (the
        original is not even downloaded when its size says so)."""
        size = message.size
        if size <= UPLOAD_MAX_BYTES:
            data = build_forward(
                await original(message.provider_id),
                message,
                action,
                mode=self.mode,
                message_id=message_id,
            )
            if len(data) <= UPLOAD_MAX_BYTES:
                return data, ""
            size = len(data)
        log.warning(
            "gmail %s: %s is %.1f MB, over the 35 MB Gmail sends; forwarding a notice",
            self.address,
            message.provider_id,
            size / MB,
        )
        notice = build_notice(
            message, action, size=size, limit=UPLOAD_MAX_BYTES, message_id=message_id
        )
        return notice, notice_note(size)

    async def _send(self, data: bytes) -> None:
        """messages.send in one request: JSON `raw` when small, the media upload otherwise."""
        if len(data) <= JSON_SEND_MAX_BYTES:
            body = {"raw": _b64url(data)}
            await self.client.call(
                "messages.send", lambda u: u.messages().send(userId=self.address, body=body)
            )
            return

        def upload(users: Any) -> Any:
            media = MediaIoBaseUpload(io.BytesIO(data), mimetype="message/rfc822")
            request = users.messages().send(userId=self.address, media_body=media)
            return on_endpoint(request, self.client.api_endpoint)

        await self.client.call("messages.send", upload)

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
