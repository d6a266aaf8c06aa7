"""Domain-wide delegation: a token for any mailbox of the domain, signed by a key or by IAM.

The delegation JWT (iss = the service account, sub = the mailbox, scope = gmail.modify,
aud = Google's token endpoint) is signed one of two ways (`[gmail] auth`):

- `key_file`: with the service account's JSON key (`google.oauth2.service_account`).
- `iam_signjwt`: key-less. The IAM Credentials `signJwt` API signs it with the service
  account's Google-managed key, called with this machine's own Google identity
  (`google.auth.default()`: a Compute Engine or Cloud Run service account, workload
  identity federation, or an operator's application-default credentials). That identity
  needs roles/iam.serviceAccountTokenCreator on the delegating service account.
  google-auth's `impersonated_credentials.Credentials(subject=...)` calls `signJwt` and
  exchanges the signed JWT at the token endpoint; `google.auth.iam.Signer` would call
  `signBlob` instead, a second permission for the same result.

Organisations created since May 2024 refuse service-account key creation by default
(`iam.disableServiceAccountKeyCreation`), hence the second way.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import google_auth_httplib2

from mailtriage.connectors.gmail.errors import GMAIL_MODIFY
from mailtriage.connectors.gmail.transport import NoReplayHttp
from mailtriage.core.config import GmailSettings
from mailtriage.core.errors import AuthError, ConfigError

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
# The hosts google-auth calls for key-less delegation; `[gmail]` may point them elsewhere.
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
GOOGLE_IAM_ENDPOINT = "https://iamcredentials.googleapis.com/"


def transport(gmail: GmailSettings) -> Any:
    """The one place the plain httplib2 transport of a mailbox is made (never replaying a
    send on its own: see `transport.NoReplayHttp`)."""
    return NoReplayHttp(timeout=gmail.request_timeout_s)


class RoutedHttp:
    """An httplib2 transport that sends Google's fixed auth URLs to configured endpoints.

    `impersonated_credentials` builds the signJwt and token URLs itself; a private
    endpoint (or the sandbox) is reached by rewriting their prefix here. Everything else
    is the wrapped transport's.
    """

    def __init__(self, http: Any, routes: dict[str, str]) -> None:
        self.__dict__.update(_http=http, routes=routes)

    def request(self, uri: str, *args: Any, **kwargs: Any) -> Any:
        for prefix, target in self.routes.items():
            if uri.startswith(prefix):
                uri = target + uri[len(prefix) :]
                break
        return self._http.request(uri, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_http"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._http, name, value)


def _routes(gmail: GmailSettings) -> dict[str, str]:
    routes = {}
    if gmail.token_uri and gmail.token_uri != GOOGLE_TOKEN_URI:
        routes[GOOGLE_TOKEN_URI] = gmail.token_uri
    endpoint = gmail.iam_endpoint if gmail.iam_endpoint.endswith("/") else gmail.iam_endpoint + "/"
    if endpoint != GOOGLE_IAM_ENDPOINT:
        routes[GOOGLE_IAM_ENDPOINT] = endpoint
    return routes


@dataclass(frozen=True)
class Delegation:
    """How this installation gets a token for a mailbox; one per process, shared by mailboxes.

    `info` is the JSON key (key_file); `source` the machine's own credentials (iam_signjwt).
    """

    gmail: GmailSettings
    service_account: str
    client_id: str | None = None
    info: dict[str, Any] | None = None
    source: Any = None

    @property
    def keyless(self) -> bool:
        return self.info is None

    @cached_property
    def _key_credentials(self) -> Any:
        """The key's credentials, parsed once: loading an RSA key costs ~35 ms of CPU, and
        every mailbox's credentials are these with another subject."""
        from google.oauth2 import service_account

        return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            self.info, scopes=[GMAIL_MODIFY]
        )

    def credentials(self, subject: str) -> Any:
        """google-auth credentials acting as `subject` with gmail.modify."""
        if self.info is not None:
            return self._key_credentials.with_subject(subject)
        from google.auth import impersonated_credentials

        return impersonated_credentials.Credentials(  # type: ignore[no-untyped-call]
            source_credentials=self.source,
            target_principal=self.service_account,
            target_scopes=[GMAIL_MODIFY],
            subject=subject,
        )

    def http(self, inner: Any = None) -> Any:
        """A plain transport for these credentials (token and signJwt calls routed), over
        `inner` when given (the process's shared connections), else a new one."""
        routes = _routes(self.gmail)
        inner = inner if inner is not None else transport(self.gmail)
        return RoutedHttp(inner, routes) if routes else inner

    def request(self) -> Any:
        """A google-auth Request, for refreshing credentials outside an AuthorizedHttp."""
        return google_auth_httplib2.Request(self.http())

    def describe(self) -> str:
        how = "key-less, IAM signJwt" if self.keyless else "JSON key"
        client = f", client ID {self.client_id}" if self.client_id else ""
        return f"{self.service_account} ({how}{client})"


def delegation_from_settings(gmail: GmailSettings, *, source: Any = None) -> Delegation | None:
    """The configured delegation (None when anonymous): the key is read once, here.

    For `iam_signjwt`, `source` overrides `google.auth.default()` (tests pass a static token).
    """
    if gmail.anonymous:
        return None
    if gmail.auth == "iam_signjwt":
        assert gmail.service_account_email is not None  # the config model requires it
        return Delegation(
            gmail,
            gmail.service_account_email,
            client_id=None,
            source=source if source is not None else _default_credentials(),
        )
    info = service_account_info(gmail)
    return Delegation(gmail, str(info["client_email"]), info.get("client_id"), info=info)


def _default_credentials() -> Any:
    """This machine's Google identity (ADC), scoped for the IAM Credentials API."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    # "No project ID could be determined" is logged at WARNING; delegation needs none.
    logger = logging.getLogger("google.auth._default")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM])
    except DefaultCredentialsError:
        raise ConfigError(
            'gmail.auth = "iam_signjwt": this machine has no Google identity: run on a '
            "Compute Engine VM or Cloud Run service with a service account, point "
            "GOOGLE_APPLICATION_CREDENTIALS at a workload identity federation file, or run "
            "`gcloud auth application-default login`"
        ) from None
    finally:
        logger.setLevel(level)
    return credentials


def service_account_info(gmail: GmailSettings) -> dict[str, Any]:
    """The JSON key from `service_account_file`, or `service_account_env` (JSON or a path).

    Every problem is one ConfigError naming the file (or variable), never the key itself.
    """
    where: str
    if gmail.service_account_env:
        value = os.environ.get(gmail.service_account_env)
        if value is None:
            raise ConfigError(
                f"gmail.service_account_env: environment variable {gmail.service_account_env} "
                "is not set"
            )
        if value.lstrip().startswith("{"):
            text, where = value, f"gmail.service_account_env: {gmail.service_account_env}"
        else:
            path = Path(value).expanduser()
            where = f"gmail.service_account_env: key file {path}"
            text = _read(path, "gmail.service_account_env")
    elif gmail.service_account_file:
        path = Path(gmail.service_account_file).expanduser()
        where = f"gmail.service_account_file: key file {path}"
        text = _read(path, "gmail.service_account_file")
    else:
        raise ConfigError("gmail: set service_account_file or service_account_env")
    try:
        info = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", "?")
        raise ConfigError(f"{where}: not valid JSON (line {line})") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ConfigError(
            f'{where}: not a service account key (its "type" must be "service_account")'
        )
    missing = [k for k in ("client_email", "private_key", "token_uri") if not info.get(k)]
    if missing:
        raise ConfigError(f"{where}: the key lacks {', '.join(missing)}")
    _check_private_key(info, where)
    if gmail.token_uri:
        info["token_uri"] = gmail.token_uri
    return info


def _check_private_key(info: dict[str, Any], where: str) -> None:
    """Parse the private key now, so that a damaged key fails at start-up, in one line."""
    from google.auth import crypt

    try:
        crypt.RSASigner.from_service_account_info(info)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, IndexError):
        # The exception text could quote key material: it is not repeated.
        raise ConfigError(f"{where}: the private_key is not a readable PEM RSA key") from None


def _read(path: Path, field: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read the key {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{field}: the key {path} is not UTF-8 JSON") from None


def authorized_http(
    gmail: GmailSettings, subject: str, delegation: Delegation | None, *, http: Any = None
) -> Any:
    """httplib2 transport carrying DWD credentials for `subject` (or none when anonymous),
    over `http` when given (the process's shared connections), else a new transport."""
    if gmail.anonymous or delegation is None:
        return http if http is not None else transport(gmail)
    try:
        creds = delegation.credentials(subject)
    except (ValueError, KeyError) as exc:
        raise AuthError(f"gmail: unusable service account key: {exc}") from None
    return google_auth_httplib2.AuthorizedHttp(creds, http=delegation.http(http))


__all__ = [
    "CLOUD_PLATFORM",
    "Delegation",
    "RoutedHttp",
    "authorized_http",
    "delegation_from_settings",
    "service_account_info",
]
