"""Microsoft 365 (Graph, app-only) connector: mailbox, push subscriptions, client."""

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


def build_graph_push(settings: Settings, store: StateStore) -> GraphPush | None:
    """The push channel when a public URL is configured, else None (schedule only)."""
    if not settings.runtime.public_url or not any(
        m.provider == "graph" for m in settings.mailboxes
    ):
        return None
    return GraphPush.from_settings(settings, store)
