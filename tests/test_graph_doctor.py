"""`graph doctor` checks against the emulator: what is missing is named, with the fix."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ClientAuthenticationError

from mailtriage.connectors.graph.client import build_client
from mailtriage.connectors.graph.doctor import diagnose
from mailtriage.core.ports import MemoryStateStore
from mailtriage.sandbox.graph import GraphEmulator
from mailtriage.sandbox.graph.config import sandbox_settings

OK, NO_SETTINGS, DENIED = "ok@example.com", "nosettings@example.com", "denied@example.com"


async def test_doctor_reports_each_mailbox() -> None:
    with GraphEmulator() as emu:
        emu.add_mailbox(OK)
        emu.add_mailbox(NO_SETTINGS, permissions={"Mail.ReadWrite", "Mail.Send"})
        emu.add_mailbox(DENIED, access_denied=True)
        settings = sandbox_settings(
            emu.base_url, [OK, NO_SETTINGS, DENIED], runtime={"public_url": "https://x.example"}
        )
        checks = await diagnose(settings, store=MemoryStateStore())
    by = {(c.subject, c.name.split(" ")[0]): c for c in checks}
    assert by[(OK, "Mail.ReadWrite")].ok and by[(OK, "MailboxSettings.ReadWrite")].ok
    missing = by[(NO_SETTINGS, "MailboxSettings.ReadWrite")]
    assert not missing.ok and "without colour" in missing.detail
    denied = by[(DENIED, "Mail.ReadWrite")]
    assert not denied.ok and "Test-ServicePrincipalAuthorization" in denied.fix
    assert (DENIED, "MailboxSettings.ReadWrite") not in by
    assert by[("push", "public_url")].ok  # https (the config refuses anything else)
    assert not by[(OK, "subscription")].ok and "mailtriage run" in by[(OK, "subscription")].fix


async def test_doctor_stops_at_bad_credentials() -> None:
    class Refusing:
        async def get_token(self, *scopes: str, **kw: Any) -> Any:
            raise ClientAuthenticationError("AADSTS7000215: Invalid client secret provided.")

    with GraphEmulator() as emu:
        emu.add_mailbox(OK)
        app_only = {"tenant_id": "t", "client_id": "c", "client_secret_env": "S"}
        settings = sandbox_settings(emu.base_url, [OK], graph={**app_only, "anonymous": False})
        client = build_client(settings.graph, credential=Refusing())
        checks = await diagnose(settings, client=client)
        await client.aclose()
        assert emu.requests == []  # no token, no request
    (check,) = checks
    assert (check.subject, check.name, check.ok) == ("credentials", "token", False)
    assert "client secret" in check.detail or "secret" in check.fix
