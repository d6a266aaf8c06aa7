"""`manifest/google/setup-pubsub.sh` run against a recording stand-in for gcloud.

The stand-in answers the few read commands the script makes and records every call, so
the order of grants and the configuration the script prints can be checked offline.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from mailtriage.core.config import parse_settings

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "manifest" / "google" / "setup-pubsub.sh"
FAKE_GCLOUD = """#!/usr/bin/env bash
echo "$*" >> "$GCLOUD_LOG"
case "$*" in
  "config get-value account") echo "ops@atelier-dupont.com" ;;
  "projects describe"*) echo "123456789012" ;;
  "iam service-accounts describe"*"--format=value(oauth2ClientId)") echo "104242424242424242424" ;;
  "iam service-accounts describe"*|"pubsub topics describe"*|"pubsub subscriptions describe"*)
    exit 1 ;;  # nothing exists yet
  "iam service-accounts keys create"*)
    if [[ -n "${REFUSE_KEYS:-}" ]]; then
      echo "FAILED_PRECONDITION: Key creation is not allowed on this service account." >&2
      echo "constraints/iam.disableServiceAccountKeyCreation" >&2
      exit 1
    fi
    echo '{"type": "service_account"}' > "$5" ;;
esac
exit 0
"""


def run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD)
    gcloud.chmod(0o755)
    log = tmp_path / "gcloud.log"
    log.write_text("")
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        env={
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "GCLOUD_LOG": str(log),
            "PROJECT": "atelier-dupont",
            "PUBLIC_URL": "https://mailtriage.example.fr/",
            "KEY_FILE": str(tmp_path / "key.json"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    return result, log.read_text().splitlines()


def printed_gmail_section(stdout: str) -> dict[str, object]:
    block = stdout.split("Then in mailtriage.toml:\n", 1)[1]
    return tomllib.loads("\n".join(line.strip() for line in block.splitlines()))["gmail"]


def index(calls: list[str], needle: str) -> int:
    return next(i for i, call in enumerate(calls) if needle in call)


def test_keyless_path_grants_token_creator_and_creates_no_key(tmp_path: Path) -> None:
    runtime = "serviceAccount:mailtriage@atelier-dupont.iam.gserviceaccount.com"
    result, calls = run(tmp_path, RUNTIME_MEMBER=runtime)
    assert result.returncode == 0, result.stderr
    assert not any("keys create" in c for c in calls)
    assert any("iamcredentials.googleapis.com" in c for c in calls if "services enable" in c)
    sa = "mailtriage@atelier-dupont.iam.gserviceaccount.com"
    grant = index(calls, f"add-iam-policy-binding {sa} --member={runtime}")
    assert "roles/iam.serviceAccountTokenCreator" in calls[grant]
    # The operator may act as the push account before creating the push subscription.
    push = "mailtriage-push@atelier-dupont.iam.gserviceaccount.com"
    user = index(calls, f"add-iam-policy-binding {push} --member=user:ops@atelier-dupont.com")
    assert "roles/iam.serviceAccountUser" in calls[user]
    assert user < index(calls, "pubsub subscriptions create")
    gmail = printed_gmail_section(result.stdout)
    assert gmail["auth"] == "iam_signjwt" and gmail["service_account_email"] == sa
    assert gmail["push_service_account"] == push
    assert gmail["push_audience"] == "https://mailtriage.example.fr/hooks/gmail"
    settings = parse_settings(
        {
            "gmail": gmail,
            "category": [{"key": "review", "name": "Review", "description": "x"}],
            "mailbox": [{"provider": "gmail", "address": "info@atelier-dupont.com"}],
        }
    )
    assert settings.gmail.pubsub_topic == "projects/atelier-dupont/topics/mailtriage"


def test_key_file_path_writes_the_key_and_prints_its_path(tmp_path: Path) -> None:
    result, calls = run(tmp_path, AUTH="key_file")
    assert result.returncode == 0, result.stderr
    assert any("keys create" in c for c in calls)
    assert not any(
        "roles/iam.serviceAccountTokenCreator" in c and "--member=user:" in c for c in calls
    )
    key = tmp_path / "key.json"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert printed_gmail_section(result.stdout)["service_account_file"] == str(key)


def test_refused_key_creation_points_to_the_keyless_path(tmp_path: Path) -> None:
    result, calls = run(tmp_path, AUTH="key_file", REFUSE_KEYS="1")
    assert result.returncode == 1
    assert "iam.disableServiceAccountKeyCreation" in result.stderr
    assert "AUTH=iam_signjwt" in result.stderr
    assert not any(c.startswith("pubsub") for c in calls)  # stopped before Pub/Sub


@pytest.mark.parametrize("env", [{}, {"AUTH": "keyless"}])
def test_missing_or_wrong_choice_is_refused(tmp_path: Path, env: dict[str, str]) -> None:
    result, calls = run(tmp_path, **env)
    assert result.returncode != 0 and not any("services enable" in c for c in calls)
