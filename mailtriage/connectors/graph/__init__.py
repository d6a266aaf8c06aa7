"""Microsoft 365 (Graph, app-only) connector: mailbox, push subscriptions, client.

Why no JSON `$batch`: a message costs at most three writes (forward, one PATCH, move; see
`actions`), the move needs the folder id, and a batch's items are evaluated against the
throttling limits one by one (learn.microsoft.com/graph/json-batching, "Batching and
throttling"), the 4 concurrent requests and 10,000 per 10 minutes per mailbox included, so
a batch saves round trips but no request. msgraph-core 1.5.2 also fails to parse batch
item bodies (`Unable to deserialize batch response`) and needs the undeclared `Deprecated`
package. Requests per triaged message are measured by `bench/graph_e2e.py`: 3 writes with
a forward, 2 without.
"""

from __future__ import annotations

from mailtriage.connectors.graph.client import (
    GraphClient,
    GraphTransport,
    RetryPolicy,
    build_client,
)
from mailtriage.connectors.graph.mailbox import GraphMailbox
from mailtriage.connectors.graph.push import GraphPush, webhook_routes
from mailtriage.core.config import Settings
from mailtriage.core.ports import StateStore

__all__ = [
    "GraphClient",
    "GraphMailbox",
    "GraphPush",
    "GraphTransport",
    "RetryPolicy",
    "build_client",
    "build_graph_mailboxes",
    "build_graph_push",
    "webhook_routes",
]


def build_graph_mailboxes(settings: Settings, store: StateStore) -> list[GraphMailbox]:
    """One GraphMailbox per `graph` mailbox, sharing one client (one token, one pool)."""
    boxes = [m for m in settings.mailboxes if m.provider == "graph"]
    if not boxes:
        return []
    client = build_client(settings.graph)
    out = [GraphMailbox.from_settings(settings, m, store, client=client) for m in boxes]
    out[0]._owns_client = True  # the first one closes the shared client
    return out


def build_graph_push(
    settings: Settings, store: StateStore, *, client: GraphClient | None = None
) -> GraphPush | None:
    """The push channel when a public URL is configured, else None (schedule only).

    Pass the mailboxes' `client` so that subscriptions share their budget and connections.
    """
    if not settings.runtime.public_url or not any(
        m.provider == "graph" for m in settings.mailboxes
    ):
        return None
    return GraphPush.from_settings(settings, store, client=client)
