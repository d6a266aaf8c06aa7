"""Shared helpers for the Gmail tests: an emulator, a client built like the connector's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import google_auth_httplib2
import httplib2
import pytest
from google.oauth2 import service_account
from googleapiclient.discovery import build

from mailtriage.sandbox.gmail import GmailEmulator

SHARED = "info@atelier-dupont.com"
OTHER = "contact@atelier-dupont.com"
MODIFY = "https://www.googleapis.com/auth/gmail.modify"


def rfc822(
    subject: str = "Demande de devis",
    body: str = "Bonjour, pourriez-vous nous faire un devis pour 200 pièces ?",
    sender: str = "Jeanne Client <jeanne@client.example>",
    to: str = SHARED,
    **headers: str,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now().astimezone())
    msg["Message-ID"] = make_msgid(domain="client.example")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def service(gm: GmailEmulator, subject: str, scopes: list[str] | None = None) -> Any:
    """A real google-api-python-client Gmail service, DWD credentials against the emulator."""
    info = json.loads(gm.service_account_json())
    creds = service_account.Credentials.from_service_account_info(
        info, scopes=scopes or [MODIFY], subject=subject
    )
    http = google_auth_httplib2.AuthorizedHttp(creds, http=httplib2.Http(timeout=10))
    return build(
        "gmail",
        "v1",
        http=http,
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": gm.url},
    )


@pytest.fixture
def gm() -> Iterator[GmailEmulator]:
    with GmailEmulator(users=[SHARED, OTHER]) as emulator:
        yield emulator


CATEGORIES: list[dict[str, Any]] = [
    {
        "key": "fournisseurs",
        "name": "Fournisseurs",
        "description": "Factures et fournisseurs",
        "actions": {
            "label": "Fournisseurs",
            "move_to": "Triage/Fournisseurs",
            "forward_to": ["compta@atelier-dupont.fr"],
            "color": "preset4",
        },
    },
    {
        "key": "publicite",
        "name": "Publicité",
        "description": "Newsletters",
        "actions": {"label": "Publicité", "move_to": "Triage/Publicité", "mark_read": True},
    },
    {
        "key": "review",
        "name": "À vérifier",
        "description": "Le reste",
        "actions": {"label": "À vérifier", "color": "preset1"},
    },
]


def gmail_settings(gm: GmailEmulator, env: str = "MT_TEST_GMAIL_KEY", **overrides: Any) -> Any:
    """Settings pointing the connector at the emulator (backoff zeroed)."""
    from mailtriage.core.config import parse_settings

    gmail: dict[str, Any] = {
        "service_account_env": env,
        "api_endpoint": gm.url,
        "token_uri": gm.token_uri,
        "certs_url": gm.certs_url,
        "pubsub_topic": "projects/sandbox-project/topics/mailtriage",
        "push_audience": "https://mailtriage.example.fr/hooks/gmail",
        "push_service_account": gm.signer.service_account,
        "retry_base_delay_s": 0,
        "request_timeout_s": 10,
    }
    gmail.update(overrides.pop("gmail", {}))
    data: dict[str, Any] = {
        "category": CATEGORIES,
        "gmail": gmail,
        "mailbox": overrides.pop(
            "mailbox",
            [{"provider": "gmail", "address": SHARED}, {"provider": "gmail", "address": OTHER}],
        ),
    }
    data.update(overrides)
    return parse_settings(data)
