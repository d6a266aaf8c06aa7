"""Deterministic test embedders (not a model): vectors count keywords, so scores are exact."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mailtriage.core.embedding import Vectors, normalise


class KeywordEmbedder:
    """One dimension per keyword (its count in the lower-cased text) plus a constant one,
    so no text maps to a zero vector. Records every batch it was asked to encode."""

    name = "keywords-test"

    def __init__(self, keywords: Sequence[str]) -> None:
        self.keywords = [k.lower() for k in keywords]
        self.dim = len(self.keywords) + 1
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        rows = []
        for text in texts:
            low = text.lower()
            rows.append([low.count(k) for k in self.keywords] + [0.05])
        return normalise(np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim))
