"""Building a `GraphServiceClient`: credentials, base URL, and the transport under it.

One `GraphClient` serves every Graph mailbox of the process (one token, one connection
pool): `transport.GraphTransport` paces and caps its requests per mailbox and for the
whole process, and retries the throttled ones.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from kiota_abstractions.authentication import (
    AnonymousAuthenticationProvider,
    AuthenticationProvider,
)
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from mailtriage.connectors.graph.bounded import BoundedTransport
from mailtriage.connectors.graph.transport import (
    GraphTransport,
    MailboxPacer,
    RetryPolicy,
    parse_retry_after,
    pooled_transport,
)
from mailtriage.core.config import GraphSettings, read_secret
from mailtriage.core.errors import ConfigError

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


class StaticTokenCredential:
    """A TokenCredential returning a fixed token (sandbox only: `graph.anonymous`)."""

    def __init__(self, token: str = "sandbox-token") -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)


def build_credential(settings: GraphSettings) -> Any:
    """An async azure-identity credential from the settings (secret or certificate).

    azure-identity refuses a non-https `authority`: the emulator serves its token endpoint
    over https with a throwaway certificate (`GraphEmulator.start_authority()`), trusted
    through `graph.ca_bundle_file`.
    """
    from azure.identity.aio import CertificateCredential, ClientSecretCredential

    if not settings.tenant_id or not settings.client_id:
        raise ConfigError("graph.tenant_id and graph.client_id are required")
    kwargs: dict[str, Any] = {}
    if settings.authority_host:
        kwargs["authority"] = settings.authority_host
        host = urlsplit(settings.authority_host).hostname or settings.authority_host
        if not host.startswith("login."):  # not a Microsoft cloud: no instance discovery
            kwargs["disable_instance_discovery"] = True
    if settings.ca_bundle_file:
        kwargs["connection_verify"] = settings.ca_bundle_file
    secret = read_secret(
        settings.client_secret_env, settings.client_secret_file, what="graph.client_secret_env"
    )
    if secret is not None:
        return ClientSecretCredential(
            settings.tenant_id, settings.client_id, secret.get_secret_value(), **kwargs
        )
    if settings.certificate_file:
        password = read_secret(
            settings.certificate_password_env, None, what="graph.certificate_password_env"
        )
        path = Path(settings.certificate_file).expanduser()
        try:
            return CertificateCredential(
                settings.tenant_id,
                settings.client_id,
                str(path),
                password=password.get_secret_value() if password else None,
                **kwargs,
            )
        except OSError as exc:
            raise ConfigError(
                f"graph.certificate_file: cannot read {path}: {exc.strerror}"
            ) from None
        except ValueError:  # azure-identity's text may quote the file: not repeated
            raise ConfigError(
                f"graph.certificate_file: {path} is not a PEM or PKCS12 certificate with its "
                "private key (or graph.certificate_password_env is wrong)"
            ) from None
    raise ConfigError(
        "graph: give client_secret_env, client_secret_file or certificate_file "
        "(app-only credentials of the Entra app)"
    )


@dataclass
class GraphClient:
    """The SDK client plus what mailtriage needs around it (transport stats, closing)."""

    sdk: GraphServiceClient
    http: httpx.AsyncClient
    transport: GraphTransport
    base_url: str
    credential: Any = None

    async def aclose(self) -> None:
        await self.http.aclose()
        close = getattr(self.credential, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result


def build_client(
    settings: GraphSettings,
    *,
    credential: Any = None,
    inner_transport: httpx.AsyncBaseTransport | None = None,
    policy: RetryPolicy | None = None,
    pacer: MailboxPacer | None = None,
) -> GraphClient:
    """A GraphServiceClient on `settings.base_url` with the SDK's middleware minus its retry.

    `adapter.base_url` is set explicitly: without it the SDK requests `/v1.0//users/...`.
    """
    base = settings.base_url.rstrip("/")
    # Message reads have their long JSON strings (bodies) cut as they stream: bounded.py.
    bounded = BoundedTransport(inner_transport or pooled_transport(settings.max_in_flight))
    transport = GraphTransport(
        bounded,
        max_concurrency=settings.max_concurrency,
        max_in_flight=settings.max_in_flight,
        pacer=pacer or MailboxPacer(),
        policy=policy,
    )
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(base_url=base, transport=transport, timeout=settings.timeout_s),
        options={RetryHandlerOption.get_key(): RetryHandlerOption(max_retries=0)},
    )
    if credential is None and not settings.anonymous:
        credential = build_credential(settings)
    auth: AuthenticationProvider
    if credential is None:
        auth = AnonymousAuthenticationProvider()
    else:
        host = urlsplit(base).hostname or ""
        auth = AzureIdentityAuthenticationProvider(
            credential, scopes=[GRAPH_SCOPE], allowed_hosts=[host]
        )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = base
    return GraphClient(
        GraphServiceClient(request_adapter=adapter), http, transport, base, credential
    )


__all__ = [
    "GraphClient",
    "GraphTransport",
    "MailboxPacer",
    "RetryPolicy",
    "StaticTokenCredential",
    "build_client",
    "build_credential",
    "parse_retry_after",
]
