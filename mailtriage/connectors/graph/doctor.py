"""`mailtriage graph doctor`: credentials, permissions and access to each mailbox.

Every check is a real read against Graph; nothing is written. Mail.Send cannot be
checked without sending, so the report says so instead of guessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
    MessagesRequestBuilder,
)

from mailtriage.connectors.graph.client import GraphClient, build_client
from mailtriage.connectors.graph.errors import access_fix, map_graph_errors
from mailtriage.connectors.graph.push import SUB_KEY
from mailtriage.core.config import Settings
from mailtriage.core.errors import AccessDeniedError, AuthError, MailtriageError
from mailtriage.core.ports import StateStore


@dataclass(frozen=True, slots=True)
class Check:
    subject: str  # "credentials", a mailbox address, "push"
    name: str
    ok: bool
    detail: str
    fix: str = ""


async def diagnose(
    settings: Settings, *, client: GraphClient | None = None, store: StateStore | None = None
) -> list[Check]:
    """Run every check; never raises for what it can report."""
    checks: list[Check] = []
    boxes = [m.address for m in settings.mailboxes if m.provider == "graph"]
    if not boxes:
        return [Check("config", "graph mailboxes", False, "no [[mailbox]] with provider graph")]
    try:
        owned = client is None
        client = client or build_client(settings.graph)
    except MailtriageError as exc:
        return [Check("credentials", "configuration", False, str(exc), "fix [graph] in the config")]
    try:
        for i, address in enumerate(boxes):
            mailbox_checks = await _mailbox(client, address)
            if i == 0 and any(c.name == "token" for c in mailbox_checks):
                return checks + mailbox_checks  # no token: nothing else can work
            checks += mailbox_checks
        checks += await _push(settings, boxes, store)
    finally:
        if owned:
            await client.aclose()
    return checks


async def _mailbox(client: GraphClient, address: str) -> list[Check]:
    user = client.sdk.users.by_user_id(address)
    q = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(select=["id"], top=1)
    try:
        with map_graph_errors(address):
            await user.mail_folders.by_mail_folder_id("inbox").messages.get(
                request_configuration=RequestConfiguration(query_parameters=q)
            )
    except AuthError as exc:
        return [
            Check(
                "credentials",
                "token",
                False,
                str(exc),
                "check tenant_id, client_id and the secret/certificate of the Entra app",
            )
        ]
    except AccessDeniedError:
        return [Check(address, "Mail.ReadWrite", False, "ErrorAccessDenied", access_fix(address))]
    except MailtriageError as exc:
        return [Check(address, "inbox", False, str(exc))]
    out = [Check(address, "Mail.ReadWrite (read inbox)", True, "inbox readable")]
    try:
        with map_graph_errors(address):
            cats = await user.outlook.master_categories.get()
        n = len(cats.value or []) if cats else 0
        out.append(Check(address, "MailboxSettings.ReadWrite", True, f"{n} master categories"))
    except AccessDeniedError:
        out.append(
            Check(
                address,
                "MailboxSettings.ReadWrite",
                False,
                "master categories: 403 (categories will be applied without colour)",
                "assign 'Application MailboxSettings.ReadWrite' "
                "(manifest/m365/scope-mailboxes.ps1)",
            )
        )
    except MailtriageError as exc:
        out.append(Check(address, "MailboxSettings.ReadWrite", False, str(exc)))
    out.append(
        Check(
            address,
            "Mail.Send",
            True,
            "not checkable without sending; the first forward records any error",
        )
    )
    return out


async def _push(settings: Settings, boxes: list[str], store: StateStore | None) -> list[Check]:
    url = settings.runtime.public_url
    if not url:
        return [Check("push", "public_url", True, "not set: schedule only (no notifications)")]
    if not url.startswith("https://"):
        return [Check("push", "public_url", False, f"{url} is not https", "Graph needs https")]
    out = [Check("push", "public_url", True, f"{url.rstrip('/')}/hooks/graph")]
    if store is None:
        return out
    now = datetime.now(UTC)
    for address in boxes:
        raw = await store.get(address, SUB_KEY)
        if not raw:
            out.append(Check(address, "subscription", False, "none yet", "start `mailtriage run`"))
            continue
        data: dict[str, Any] = json.loads(raw)
        expires = datetime.fromisoformat(data["expires"].replace("Z", "+00:00"))
        ok = expires > now
        out.append(
            Check(
                address,
                "subscription",
                ok,
                f"{data['id']} until {data['expires']}",
                "" if ok else "expired: `mailtriage run` renews or recreates it",
            )
        )
    return out
