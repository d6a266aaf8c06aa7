"""`mailtriage gmail doctor` and `mailtriage gmail uninstall`: the Google Workspace pieces.

`doctor` checks, for every Gmail mailbox, what an admin usually gets wrong: the key file,
domain-wide delegation (a token for the mailbox), the gmail.modify scope, access to the
mailbox itself, and the push settings, and says what to fix for each failure.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.table import Table

from mailtriage.cli import console, user_errors
from mailtriage.cli.options import DEFAULT_CONFIG, ConfigOption, load
from mailtriage.core.config import Settings
from mailtriage.core.errors import MailtriageError

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


def _token_check(settings: Settings, info: dict[str, Any], address: str) -> Check:
    """Ask the token endpoint for a gmail.modify token impersonating `address`."""
    import google_auth_httplib2
    import httplib2
    from google.auth.exceptions import RefreshError, TransportError
    from google.oauth2 import service_account

    from mailtriage.connectors.gmail.errors import GMAIL_MODIFY

    creds = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        info, scopes=[GMAIL_MODIFY], subject=address
    )
    request = google_auth_httplib2.Request(httplib2.Http(timeout=settings.gmail.request_timeout_s))
    client_id = info.get("client_id", "?")
    try:
        creds.refresh(request)
    except RefreshError as exc:
        text = str(exc.args[0] if exc.args else exc)
        if "unauthorized_client" in text:
            return Check(
                address,
                "delegation",
                False,
                f"not granted: in the {ADMIN_PATH}, add client ID {client_id} with scope "
                f"{GMAIL_MODIFY} (or add the scope if the client is already listed).",
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
    return Check(address, "delegation", True, f"token for {address} with scope {GMAIL_MODIFY}")


async def _mailbox_checks(
    settings: Settings, info: dict[str, Any] | None, address: str
) -> list[Check]:
    from mailtriage.connectors.gmail import GmailMailbox
    from mailtriage.core.ports import MemoryStateStore

    out: list[Check] = []
    if info is not None:
        token = await asyncio.to_thread(_token_check, settings, info, address)
        out.append(token)
        if not token.ok:
            return out
        scope = "gmail.modify granted (covers read, labels, send, watch)"
        out.append(Check(address, "scopes", True, scope))
    mb = settings.mailbox(address)
    assert mb is not None
    box = GmailMailbox.from_settings(settings, mb, MemoryStateStore(), info=info)
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
    topic_ok = bool(re.fullmatch(r"projects/[^/]+/topics/[^/]+", g.pubsub_topic))
    out.append(
        Check(
            "push",
            "topic",
            topic_ok,
            g.pubsub_topic
            if topic_ok
            else f"{g.pubsub_topic!r} is not projects/<project>/topics/<topic>",
        )
    )
    if not g.push_audience or not g.push_service_account:
        out.append(
            Check(
                "push",
                "webhook auth",
                False,
                "set gmail.push_audience and gmail.push_service_account (the push "
                "subscription's --push-auth-token-audience and --push-auth-service-account)",
            )
        )
    else:
        out.append(Check("push", "webhook auth", True, f"audience {g.push_audience}"))
    public = settings.runtime.public_url
    if public and g.push_audience and not g.push_audience.startswith(public.rstrip("/")):
        out.append(
            Check("push", "audience", False, f"push_audience is not under public_url {public}")
        )
    return out


async def gmail_doctor(settings: Settings) -> list[Check]:
    """Every Gmail check for `settings` (no mailbox: no checks)."""
    from mailtriage.connectors.gmail import service_account_info

    addresses = [m.address for m in settings.mailboxes if m.provider == "gmail"]
    if not addresses:
        return []
    info: dict[str, Any] | None = None
    if not settings.gmail.anonymous:
        try:
            info = service_account_info(settings.gmail)
        except MailtriageError as exc:
            return [Check("service account", "key", False, str(exc))]
    checks = []
    if info is not None:
        checks.append(
            Check(
                "service account",
                "key",
                True,
                f"{info.get('client_email')} (client ID {info.get('client_id')})",
            )
        )
    for address in addresses:
        checks.extend(await _mailbox_checks(settings, info, address))
    checks.extend(_push_checks(settings))
    return checks


def checks_table(checks: list[Check]) -> Table:
    table = Table(title="Google Workspace (Gmail)")
    for col in ("", "what", "check", "detail"):
        table.add_column(col, overflow="fold")
    for c in checks:
        status = "[green]ok[/green]" if c.ok else "[red]FAIL[/red]"
        table.add_row(status, c.subject, c.name, c.detail)
    return table


def doctor(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Check delegation, scopes, mailbox access and push settings for every Gmail mailbox."""
    settings = load(config)
    checks = asyncio.run(gmail_doctor(settings))
    if not checks:
        console.print("no Gmail mailbox configured")
        return
    console.print(checks_table(checks))
    if not all(c.ok for c in checks):
        console.print(f"Note: {GROUPS_NOTE}", highlight=False)
        raise typer.Exit(1)


def uninstall(
    config: ConfigOption = DEFAULT_CONFIG,
    mailbox: Annotated[str | None, typer.Option(help="Only this mailbox.")] = None,
) -> None:
    """Stop the Gmail watches (users.stop) and forget their state."""
    from mailtriage.connectors.gmail import GmailWatch, build_gmail_mailboxes
    from mailtriage.core.ledger import Ledger

    settings = load(config)
    ledger = Ledger(settings.state.url)

    async def main() -> None:
        for box in build_gmail_mailboxes(settings, ledger):
            if mailbox and box.address != mailbox.lower():
                continue
            try:
                await GmailWatch(box, settings.gmail.pubsub_topic or "-").uninstall()
                console.print(f"{box.address}: watch stopped", highlight=False)
            except MailtriageError as exc:
                console.print(f"[red]{box.address}: {exc}[/red]", highlight=False)
            finally:
                await box.aclose()

    asyncio.run(main())


def register(app: typer.Typer) -> None:
    gmail = typer.Typer(help="Google Workspace: doctor and uninstall.", no_args_is_help=True)
    gmail.command("doctor")(user_errors(doctor))
    gmail.command("uninstall")(user_errors(uninstall))
    app.add_typer(gmail, name="gmail")
