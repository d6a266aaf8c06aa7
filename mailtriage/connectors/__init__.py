"""One package per mail provider, each implementing `mailtriage.core.ports.Mailbox`.

`build_mailboxes` and `build_pushes` assemble what the configuration names; the provider
SDKs are imported only for the providers in use.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailtriage.core.config import Settings
from mailtriage.core.ports import Mailbox, PushChannel, StateStore


def build_mailboxes(settings: Settings, store: StateStore) -> list[Mailbox]:
    """Every configured mailbox, in configuration order."""
    built: dict[str, Mailbox] = {}
    providers = {m.provider for m in settings.mailboxes}
    if "graph" in providers:
        from mailtriage.connectors.graph import build_graph_mailboxes

        built.update((m.address, m) for m in build_graph_mailboxes(settings, store))
    if "gmail" in providers:
        from mailtriage.connectors.gmail import build_gmail_mailboxes

        built.update((m.address, m) for m in build_gmail_mailboxes(settings, store))
    return [built[m.address] for m in settings.mailboxes]


def build_pushes(
    settings: Settings, store: StateStore, mailboxes: Sequence[Mailbox]
) -> list[PushChannel]:
    """The push channels that apply (none for a provider without push settings)."""
    pushes: list[PushChannel] = []
    if any(m.provider == "graph" for m in mailboxes):
        from mailtriage.connectors.graph import GraphMailbox, build_graph_push

        client = next((m.client for m in mailboxes if isinstance(m, GraphMailbox)), None)
        graph = build_graph_push(settings, store, client=client)
        if graph is not None:
            pushes.append(graph)
    gmail_boxes = [m for m in mailboxes if m.provider == "gmail"]
    if gmail_boxes:
        from mailtriage.connectors.gmail import GmailMailbox, build_gmail_push

        gmail = build_gmail_push(settings, [m for m in gmail_boxes if isinstance(m, GmailMailbox)])
        if gmail is not None:
            pushes.append(gmail)
    return pushes
