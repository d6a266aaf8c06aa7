"""Key-less domain-wide delegation: google-auth's impersonated credentials call the emulator's
IAM Credentials `signJwt`, and its token endpoint accepts the IAM-signed assertion."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.oauth2.credentials import Credentials as StaticCredentials
from typer.testing import CliRunner

from mailtriage.cli import app
from mailtriage.cli.gmail import gmail_doctor
from mailtriage.connectors.gmail import build_gmail_mailboxes, delegation_from_settings
from mailtriage.core.errors import AuthError
from mailtriage.core.ports import MemoryStateStore
from mailtriage.sandbox.gmail import GmailEmulator
from tests.gmail_fixtures import SHARED, gm, gmail_settings, rfc822

__all__ = ["gm"]
RUNTIME = "mailtriage-runtime@sandbox-project.iam.gserviceaccount.com"  # the VM's identity
runner = CliRunner(env={"COLUMNS": "80"})


def keyless(gm: GmailEmulator, **gmail: Any) -> Any:
    """Settings for `auth = "iam_signjwt"` against the emulator (no key anywhere)."""
    return gmail_settings(
        gm,
        gmail={
            "service_account_env": None,
            "auth": "iam_signjwt",
            "service_account_email": gm.service_account.client_email,
            "iam_endpoint": gm.iam_endpoint,
            **gmail,
        },
        mailbox=[{"provider": "gmail", "address": SHARED}],
    )


def static_source(gm: GmailEmulator, principal: str = RUNTIME) -> StaticCredentials:
    """The runtime's own credentials: a fixed access token the emulator issued to it."""
    return StaticCredentials(token=gm.source_token(principal))


async def test_keyless_delegation_reads_the_mailbox(gm: GmailEmulator) -> None:
    gm.grant_token_creator(RUNTIME)
    gm.deliver(SHARED, rfc822(subject="Devis 200 pièces"))
    settings = keyless(gm)
    delegation = delegation_from_settings(settings.gmail, source=static_source(gm))
    assert delegation is not None and delegation.keyless
    [box] = build_gmail_mailboxes(settings, MemoryStateStore(), delegation=delegation)
    try:
        page = await box.changes(None)
        profile = await box.profile()
    finally:
        await box.aclose()
    assert profile["emailAddress"] == SHARED
    assert page is not None
    assert gm.iam.sign_calls == 1  # one signed JWT, then the token is reused
    # The token that reached Gmail was issued for the mailbox, on the IAM-signed assertion.
    assert any(t.subject == SHARED for t in gm.state.tokens.values())


async def test_without_token_creator_nothing_is_signed(gm: GmailEmulator) -> None:
    settings = keyless(gm)
    delegation = delegation_from_settings(settings.gmail, source=static_source(gm))
    [box] = build_gmail_mailboxes(settings, MemoryStateStore(), delegation=delegation)
    try:
        with pytest.raises(AuthError, match="cannot obtain a Google access token"):
            await box.profile()
    finally:
        await box.aclose()
    assert gm.iam.sign_calls == 0
    checks = {(c.subject, c.name): c for c in await gmail_doctor(settings, delegation=delegation)}
    refused = checks[(SHARED, "signJwt")]
    assert not refused.ok and "PERMISSION_DENIED" in refused.detail
    assert "roles/iam.serviceAccountTokenCreator" in refused.fix
    assert gm.service_account.client_email in refused.fix


async def test_delegation_not_granted_is_reported_with_the_admin_console_fix(
    gm: GmailEmulator,
) -> None:
    gm.grant_token_creator(RUNTIME)
    gm.deny_delegation(SHARED)
    settings = keyless(gm)
    delegation = delegation_from_settings(settings.gmail, source=static_source(gm))
    checks = {(c.subject, c.name): c for c in await gmail_doctor(settings, delegation=delegation)}
    denied = checks[(SHARED, "delegation")]
    assert not denied.ok and "Manage Domain Wide Delegation" in denied.fix
    assert "oauth2ClientId" in denied.fix  # key-less: how to find the numeric client ID
    assert gm.iam.sign_calls == 1  # IAM signed; the token endpoint refused the delegation


def _sign(gm: GmailEmulator, token: str, payload: Any, account: str | None = None) -> Any:
    account = account or gm.service_account.client_email
    return httpx.post(
        f"{gm.iam_endpoint}v1/projects/-/serviceAccounts/{account}:signJwt",
        headers={"Authorization": f"Bearer {token}"},
        json={"payload": payload if isinstance(payload, str) else json.dumps(payload)},
    )


def test_sign_jwt_follows_the_documented_shapes(gm: GmailEmulator) -> None:
    gm.grant_token_creator(RUNTIME)
    token = gm.source_token(RUNTIME)
    now = int(time.time())
    ok = _sign(gm, token, {"iss": "x", "sub": SHARED, "iat": now, "exp": now + 3600})
    assert ok.status_code == 200 and set(ok.json()) == {"keyId", "signedJwt"}
    header = ok.json()["signedJwt"].split(".")[0]
    import base64

    decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    assert decoded == {"alg": "RS256", "kid": ok.json()["keyId"], "typ": "JWT"}
    # exp: an integer, not in the past, at most 12 hours ahead.
    for exp in (now - 10, now + 13 * 3600, "soon"):
        bad = _sign(gm, token, {"sub": SHARED, "exp": exp})
        assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert _sign(gm, token, "not json").status_code == 400
    # An unknown account is 403 under the "-" wildcard, like a missing permission.
    unknown = _sign(gm, token, {"sub": SHARED}, account="nobody@p.iam.gserviceaccount.com")
    assert unknown.status_code == 403
    assert unknown.json()["error"]["message"] == (
        "Permission 'iam.serviceAccounts.signJwt' denied on resource (or it may not exist)."
    )
    assert _sign(gm, "ya29.unknown", {"sub": SHARED}).status_code == 401
    gmail_only = gm.source_token(
        RUNTIME, frozenset({"https://www.googleapis.com/auth/gmail.modify"})
    )
    assert _sign(gm, gmail_only, {"sub": SHARED}).status_code == 403


def test_cli_doctor_keyless_with_application_default_credentials(
    gm: GmailEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real `google.auth.default()`: an ADC file refreshed at the emulator's token endpoint."""
    operator = "ops@atelier-dupont.com"
    adc = tmp_path / "adc.json"
    adc.write_text(json.dumps(gm.adc_info(operator)))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    config = tmp_path / "mailtriage.toml"
    config.write_text(
        f"""
[state]
url = "sqlite:///{tmp_path / "state.sqlite"}"
[gmail]
auth = "iam_signjwt"
service_account_email = "{gm.service_account.client_email}"
api_endpoint = "{gm.url}"
token_uri = "{gm.token_uri}"
iam_endpoint = "{gm.iam_endpoint}"
[[mailbox]]
provider = "gmail"
address = "{SHARED}"
[[category]]
key = "review"
name = "Review"
description = "anything"
""",
        encoding="utf-8",
    )
    refused = runner.invoke(app, ["gmail", "doctor", "-c", str(config)])
    assert refused.exit_code == 1, refused.output
    assert "roles/iam.serviceAccountTokenCreator" in refused.output
    gm.grant_token_creator(operator)
    result = runner.invoke(app, ["gmail", "doctor", "-c", str(config), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and gm.iam.sign_calls >= 1
    identity = report["checks"][0]
    assert identity["check"] == "identity" and "key-less" in identity["detail"]
    check = runner.invoke(app, ["check-config", "-c", str(config)])
    assert check.exit_code == 0 and "key-less delegation" in check.output
