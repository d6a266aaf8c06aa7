"""Builds the configured classifier: `llm`, `embedded` or `cascade`.

Imports are local so that a preview on a machine without the model package, or with no
LLM configured, does not pay for what it does not use.

With a ledger, the classifiers learn from it: the embedded classifier reads its examples
(history and corrections) and the LLM gets the nearest `llm.few_shot` as examples in its
prompt. `build_learner` gives the `Learner` to share between the classifier and the
pipeline's correction hook, so a new example is seen by the next classification.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from mailtriage.core.config import Settings
from mailtriage.core.errors import ConfigError
from mailtriage.core.message import Message
from mailtriage.core.ports import Classifier

if TYPE_CHECKING:
    from mailtriage.core.learn import Learner
    from mailtriage.core.ledger import Ledger
    from mailtriage.core.llm import ExamplesFor

Kind = Literal["llm", "embedded", "cascade"]


def uses_examples(settings: Settings, kind: Kind | None = None) -> bool:
    """Whether this classifier reads learned examples (an LLM without few-shot does not)."""
    kind = kind or settings.effective_classifier
    return kind != "llm" or settings.llm.few_shot > 0


def build_learner(settings: Settings, ledger: Ledger, kind: Kind | None = None) -> Learner | None:
    """The Learner over `ledger`, or None when the classifier learns nothing from it."""
    if not uses_examples(settings, kind):
        return None
    from mailtriage.core.learn import Learner

    return Learner(settings, ledger)


def build_classifier(
    settings: Settings,
    kind: Kind | None = None,
    *,
    ledger: Ledger | None = None,
    learner: Learner | None = None,
) -> Classifier:
    """The classifier of `kind` (default: from config), learning from `ledger` if given."""
    kind = kind or settings.effective_classifier
    if kind in ("llm", "cascade") and not settings.llm.configured:
        raise ConfigError(f"classifier {kind!r} needs [llm].model to be set")
    if learner is None and ledger is not None:
        learner = build_learner(settings, ledger, kind)
    if kind == "llm":
        from mailtriage.core.llm import LLMClassifier

        return LLMClassifier(settings, examples_for=_few_shot(settings, learner))
    from mailtriage.core.embedded import EmbeddedClassifier

    embedded = EmbeddedClassifier(
        settings,
        learner.embedder if learner else None,
        learner.source if learner else None,
    )
    if kind == "embedded":
        return embedded
    from mailtriage.core.cascade import CascadeClassifier
    from mailtriage.core.llm import LLMClassifier

    llm = LLMClassifier(settings, examples_for=_few_shot(settings, learner))
    return CascadeClassifier(settings, embedded, llm)


def _few_shot(settings: Settings, learner: Learner | None) -> ExamplesFor | None:
    """The LLM's hook giving the nearest learned examples of each message."""
    if learner is None or settings.llm.few_shot <= 0:
        return None
    from mailtriage.core.embedded import few_shot_hook

    nearest = few_shot_hook(learner.source, learner.embedder, settings.llm.few_shot)
    source = learner.source

    async def examples_for(message: Message) -> list[tuple[str, str]]:
        # No example learned yet: no need to load the embedding model for an LLM install.
        if not source.examples_for(message.mailbox):
            return []
        return await nearest(message)

    return examples_for
