"""Provider-neutral actions and the plan that groups them.

Connectors translate each action into the provider's native feature: `Label` is an
Outlook category or a Gmail label, `Move` a folder move or an INBOX→label swap.
Every value here comes from configuration; nothing is ever taken from model output.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Label:
    name: str
    color: str | None = None

    kind = "label"

    def describe(self) -> str:
        return f"label {self.name}"


@dataclass(frozen=True, slots=True)
class Move:
    folder: str  # a path such as "Triage/RH", '/'-separated

    kind = "move"

    def describe(self) -> str:
        return f"moved to {self.folder}"


@dataclass(frozen=True, slots=True)
class Forward:
    to: tuple[str, ...]
    note: str = ""
    reply_to: str | None = None  # the original sender, so the department answers directly

    kind = "forward"

    def describe(self) -> str:
        return "forwarded to " + ", ".join(self.to)


@dataclass(frozen=True, slots=True)
class MarkRead:
    kind = "mark_read"

    def describe(self) -> str:
        return "marked read"


Action = Label | Move | Forward | MarkRead


@dataclass(frozen=True, slots=True)
class ActionPlan:
    """The ordered actions for one message, and whether they may touch the mailbox.

    `marker`: the processed marker's value, for a connector that can leave it with the
    plan's last change to the message instead of in a request of its own; empty when the
    plan must not mark the message (previews, the review label after giving up).
    """

    category: str
    actions: tuple[Action, ...] = field(default_factory=tuple)
    dry_run: bool = False
    marker: str = ""

    def describe(self) -> str:
        """Human summary such as 'label Triage/RH + forwarded to rh@example.com'."""
        return " + ".join(a.describe() for a in self.actions) or "nothing"
