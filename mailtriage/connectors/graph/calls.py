"""Request plumbing for one Graph mailbox, shared by intake, folders, categories and forwards.

Requests are built by msgraph-sdk's request builders and sent through its adapter, but the
JSON is read raw (see `convert`): deserialising SDK models costs ~20 ms of CPU each.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.message import Message as GraphMessage
from msgraph.generated.models.recipient import Recipient

from mailtriage.connectors.graph.client import GraphClient
from mailtriage.connectors.graph.convert import Json
from mailtriage.connectors.graph.errors import map_graph_errors, outcome_unknown
from mailtriage.core.errors import ConnectorError, OutcomeUnknownError

PREFER_TEXT = 'outlook.body-content-type="text"'
PREFER_IMMUTABLE = 'IdType="ImmutableId"'

T = TypeVar("T")


def cfg(*prefer: str, query: Any = None) -> RequestConfiguration[Any]:
    """A request configuration with `Prefer` headers and query parameters."""
    config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=query)
    for p in prefer:
        config.headers.add("Prefer", p)
    return config


def recipient(address: str) -> Recipient:
    return Recipient(email_address=EmailAddress(address=address))


class GraphCalls:
    """Builders and senders for `/users/{address}/...`."""

    def __init__(self, client: GraphClient, address: str) -> None:
        self.client = client
        self.address = address

    @property
    def user(self) -> Any:
        return self.client.sdk.users.by_user_id(self.address)

    def msg(self, message_id: str) -> Any:
        return self.user.messages.by_message_id(message_id)

    async def raw(self, builder: Any, info: Any) -> Json:
        """Send an SDK-built request and return the JSON body (no SDK model deserialisation)."""
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError

        with map_graph_errors(self.address):
            raw = await builder.request_adapter.send_primitive_async(
                info, "bytes", {"XXX": ODataError}
            )
        try:
            data = json.loads(raw or b"{}")
        except ValueError as exc:
            raise ConnectorError(f"Graph sent invalid JSON: {exc}", mailbox=self.address) from exc
        if not isinstance(data, dict):
            raise ConnectorError("Graph sent a non-object JSON body", mailbox=self.address)
        return data

    async def send(self, builder: Any, info: Any) -> None:
        """Send an SDK-built request and ignore any response body."""
        from msgraph.generated.models.o_data_errors.o_data_error import ODataError

        with map_graph_errors(self.address):
            await builder.request_adapter.send_no_response_content_async(info, {"XXX": ODataError})

    async def patch(self, msg_id: str, body: GraphMessage) -> None:
        """PATCH a message without deserialising the echoed message."""
        builder = self.msg(msg_id)
        await self.send(builder, builder.to_patch_request_information(body))

    async def write(self, call: Awaitable[T]) -> T:
        """Await a write that is not idempotent: a lost answer becomes OutcomeUnknownError."""
        try:
            return await call
        except OutcomeUnknownError:
            raise
        except ConnectorError as exc:
            if outcome_unknown(exc):
                raise OutcomeUnknownError(str(exc), mailbox=self.address) from exc
            raise
