"""Decision → provider-neutral action plan.

Recipients, folders and labels come only from the configuration of the chosen category;
the model's answer contributes nothing but a configured category key.
"""

from __future__ import annotations

from mailtriage.core.actions import Action, ActionPlan, Forward, Label, MarkRead, Move
from mailtriage.core.config import Category, Settings
from mailtriage.core.decision import Decision
from mailtriage.core.message import Message


def effective_category(decision: Decision, message: Message, settings: Settings) -> str:
    """The category actually applied: review when unknown, off-scope or unsure."""
    allowed = {c.key for c in settings.categories_for(message.mailbox)}
    if decision.category not in allowed:
        return settings.review_category
    if decision.classifier != "rule" and decision.confidence < settings.threshold(
        decision.category
    ):
        return settings.review_category
    return decision.category


def label_for(category: Category) -> Label | None:
    """The category's label; the category name when none is configured, none when ''."""
    name = category.actions.label if category.actions.label is not None else category.name
    return Label(name, category.actions.color) if name else None


def forward_note(category: Category, decision: Decision, settings: Settings) -> str:
    note = settings.forward.note.format(
        category=category.name, confidence=decision.confidence, classifier=decision.classifier
    )
    if settings.forward.include_reason and decision.reason:
        # The reason is model output about untrusted mail: one short line, never markup.
        reason = " ".join(decision.reason.split())[:200]
        note += f"\nReason: {reason}"
    return note


def marker(decision: Decision) -> str:
    """The processed marker's value: what was decided, for whoever reads the mailbox."""
    return f"v1;{decision.category};{decision.confidence:.2f}"


def plan(decision: Decision, message: Message, settings: Settings) -> ActionPlan:
    """The ordered actions for `decision`: forward, label, mark read, then move.

    The forward goes first: it is the one action that can fail for reasons of the message
    itself (size, recipients), and until it is sent the message stays in the Inbox, unread
    and unlabelled. Label and read flag come next, together (one request where the
    provider allows it), and the move last.
    """
    key = effective_category(decision, message, settings)
    category = settings.category(key)
    acts = category.actions
    actions: list[Action] = []
    if acts.forward_to:
        reply_to = message.reply_address
        actions.append(
            Forward(
                to=tuple(acts.forward_to),
                note=forward_note(category, decision, settings),
                reply_to=reply_to.email if reply_to else None,
            )
        )
    label = label_for(category)
    if label is not None:
        actions.append(label)
    if acts.mark_read:
        actions.append(MarkRead())
    if acts.move_to:
        actions.append(Move(acts.move_to))
    return ActionPlan(
        category=key, actions=tuple(actions), dry_run=settings.is_dry_run(message.mailbox)
    )


def review_plan(message: Message, settings: Settings) -> ActionPlan:
    """What a message gets when every attempt failed: the review label, nothing else."""
    label = label_for(settings.category(settings.review_category))
    return ActionPlan(
        category=settings.review_category,
        actions=(label,) if label else (),
        dry_run=settings.is_dry_run(message.mailbox),
    )
