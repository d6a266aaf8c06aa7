"""Builds the configured classifier: `llm`, `embedded` or `cascade`.

Imports are local so that a preview on a machine without the model package, or with no
LLM configured, does not pay for what it does not use.
"""

from __future__ import annotations

from typing import Literal

from mailtriage.core.config import Settings
from mailtriage.core.errors import ConfigError
from mailtriage.core.ports import Classifier

Kind = Literal["llm", "embedded", "cascade"]


def build_classifier(settings: Settings, kind: Kind | None = None) -> Classifier:
    kind = kind or settings.effective_classifier
    if kind in ("llm", "cascade") and not settings.llm.configured:
        raise ConfigError(f"classifier {kind!r} needs [llm].model to be set")
    if kind == "llm":
        from mailtriage.core.llm import LLMClassifier

        return LLMClassifier(settings)
    from mailtriage.core.embedded import EmbeddedClassifier

    embedded = EmbeddedClassifier(settings)
    if kind == "embedded":
        return embedded
    from mailtriage.core.cascade import CascadeClassifier
    from mailtriage.core.llm import LLMClassifier

    return CascadeClassifier(settings, embedded, LLMClassifier(settings))
