"""`mailtriage gmail doctor` and `mailtriage gmail uninstall`: the Google Workspace pieces.

`doctor` checks, for every Gmail mailbox, what an admin usually gets wrong: the key file
(or, key-less, the IAM signJwt permission), domain-wide delegation (a token for the
mailbox), the gmail.modify scope, access to the mailbox itself, and the push settings,
and says what to fix for each failure.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from mailtriage.cli import console, user_errors
from mailtriage.cli.doctor import JsonOption, emit, provider_rows
from mailtriage.cli.options import DEFAULT_CONFIG, ConfigOption, load
from mailtriage.cli.uninstall import load_and_remove
from mailtriage.core.config import Settings
from mailtriage.core.errors import MailtriageError

if TYPE_CHECKING:
    from mailtriage.connectors.gmail.auth import Delegation

GROUPS_NOTE = (
    "Google Groups and collaborative inboxes cannot be read through the Gmail API: point "
    "mailtriage at a real user mailbox (for example one that receives the group's mail)."
)
ADMIN_PATH = (
    "Admin console → Security → Access and data control → API controls → Manage Domain Wide "
    "Delegation"
)


@dataclass(frozen=True, slots=True)
class Check:
    """One doctor line: what was checked, whether it passed, and what to do if not."""

    subject: str
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _refresh_text(exc: Exception) -> str:
    """Every argument of a google-auth error (the second one holds the response body)."""
    return " ".join(str(a) for a in exc.args) or type(exc).__name__


def _token_check(delegation: Delegation, address: str) -> Check:
    """Ask for a gmail.modify token impersonating `address` (signJwt first when key-less)."""
    from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError

    from mailtriage.connectors.gmail.errors import GMAIL_MODIFY

    sa = delegation.service_account
    client_id = delegation.client_id or (
        f"of {sa} (gcloud iam service-accounts describe {sa} --format='value(oauth2ClientId)')"
    )
    try:
        creds = delegation.credentials(address)
        creds.refresh(delegation.request())
    except RefreshError as exc:
        text = _refresh_text(exc)
        if "Unable to acquire impersonated credentials" in text:
            return Check(
                address,
                "signJwt",
                False,
                f"IAM refused to sign for {sa}: {text}",
                f"give this machine's Google identity roles/iam.serviceAccountTokenCreator on "
                f"{sa} (gcloud iam service-accounts add-iam-policy-binding {sa} "
                "--member=<its principal> --role=roles/iam.serviceAccountTokenCreator) and "
                "enable iamcredentials.googleapis.com; see manifest/google/INSTALL.md",
            )
        if "unauthorized_client" in text:
            return Check(
                address,
                "delegation",
                False,
                "not granted",
                f"in the {ADMIN_PATH}, add client ID {client_id} with scope {GMAIL_MODIFY} "
                "(or add the scope if the client is already listed)",
            )
        if "invalid_grant" in text:
            return Check(
                address,
                "delegation",
                False,
                f"Google does not know {address} as a user ({text}). {GROUPS_NOTE}",
            )
        return Check(address, "delegation", False, f"token refused: {text}")
    except TransportError as exc:
        return Check(address, "delegation", False, f"token endpoint unreachable: {exc}")
    except GoogleAuthError as exc:  # e.g. the machine's own credentials cannot refresh
        return Check(address, "delegation", False, f"no token: {_refresh_text(exc)}")
    return Check(address, "delegation", True, f"token for {address} with scope {GMAIL_MODIFY}")


async def _mailbox_checks(
    settings: Settings, delegation: Delegation | None, address: str
) -> list[Check]:
    from mailtriage.connectors.gmail import GmailMailbox
    from mailtriage.core.ports import MemoryStateStore

    out: list[Check] = []
    if delegation is not None:
        token = await asyncio.to_thread(_token_check, delegation, address)
        out.append(token)
        if not token.ok:
            return out
        scope = "gmail.modify granted (covers read, labels, send, watch)"
        out.append(Check(address, "scopes", True, scope))
    mb = settings.mailbox(address)
    assert mb is not None
    box = GmailMailbox.from_settings(settings, mb, MemoryStateStore(), delegation=delegation)
    try:
        profile = await box.profile()
        labels = await box.labels.refresh()
        out.append(
            Check(
                address,
                "mailbox access",
                True,
                f"{profile.get('messagesTotal', '?')} messages, {len(labels)} labels, "
                f"historyId {profile.get('historyId')}",
            )
        )
        processed = settings.gmail.processed_label
        state = "exists" if processed in labels else "will be created on first use"
        out.append(Check(address, "processed label", True, f"{processed} {state}"))
    except MailtriageError as exc:
        out.append(Check(address, "mailbox access", False, f"{exc}"))
    finally:
        await box.aclose()
    return out


def _push_checks(settings: Settings) -> list[Check]:
    g = settings.gmail
    out = []
    if not g.pubsub_topic:
        out.append(Check("push", "topic", True, "no pubsub_topic: polling only (sync_interval_s)"))
        return out
    out.append(Check("push", "topic", True, g.pubsub_topic))
    # The config model requires both with a topic (check-config says so).
    out.append(
        Check(
            "push",
            "webhook auth",
            True,
            f"audience {g.push_audience}, signed for {g.push_service_account}",
        )
    )
    public = settings.runtime.public_url
    if public and g.push_audience and not g.push_audience.startswith(public.rstrip("/")):
        out.append(
            Check(
                "push",
                "audience",
                False,
                f"push_audience is not under public_url {public}",
                "make gmail.push_audience the push subscription's audience: "
                "<runtime.public_url>/hooks/gmail",
            )
        )
    return out


async def gmail_doctor(settings: Settings, *, delegation: Delegation | None = None) -> list[Check]:
    """Every Gmail check for `settings` (no mailbox: no checks); never raises for them."""
    from mailtriage.connectors.gmail import delegation_from_settings

    addresses = [m.address for m in settings.mailboxes if m.provider == "gmail"]
    if not addresses:
        return []
    what = "identity" if settings.gmail.auth == "iam_signjwt" else "key"
    if delegation is None and not settings.gmail.anonymous:
        try:
            delegation = delegation_from_settings(settings.gmail)
        except MailtriageError as exc:
            return [Check("service account", what, False, str(exc))]
    checks = []
    if delegation is not None:
        checks.append(Check("service account", what, True, delegation.describe()))
    for address in addresses:
        checks.extend(await _mailbox_checks(settings, delegation, address))
    checks.extend(_push_checks(settings))
    return checks


def doctor(config: ConfigOption = DEFAULT_CONFIG, as_json: JsonOption = False) -> None:
    """Check delegation, scopes, mailbox access and push settings for every Gmail mailbox."""
    from mailtriage.cli.doctor import open_state

    settings = load(config)
    rows, notes = provider_rows(settings, {"gmail"}, open_state(settings)[0])
    if not rows and not as_json:
        console.print("no Gmail mailbox configured")
        return
    emit(rows, as_json=as_json, notes=notes)


def uninstall(
    config: ConfigOption = DEFAULT_CONFIG,
    mailbox: Annotated[str | None, typer.Option(help="Only this mailbox.")] = None,
) -> None:
    """Stop the Gmail watches (users.stop) and forget their state."""
    from mailtriage.cli.uninstall import remove_gmail, report

    report(load_and_remove(config, lambda s, ledger: remove_gmail(s, ledger, mailbox)))


def register(app: typer.Typer) -> None:
    gmail = typer.Typer(help="Google Workspace: doctor and uninstall.", no_args_is_help=True)
    gmail.command("doctor")(user_errors(doctor))
    gmail.command("uninstall")(user_errors(uninstall))
    app.add_typer(gmail, name="gmail")
