"""Test embedders: a deterministic keyword counter (exact scores) and the real model, shared."""

from __future__ import annotations

import functools
import socket
from collections.abc import Sequence

import numpy as np
import pytest

from mailtriage.core.embedding import USEm3Embedder, Vectors, normalise


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


class NetworkBlocked(AssertionError):
    """Raised by any socket use while the network is blocked."""


def _refuse(*args: object, **kwargs: object) -> None:
    raise NetworkBlocked(f"network access attempted: {args[1:]!r}")


def block_network(mp: pytest.MonkeyPatch) -> None:
    """Make every outgoing connection (and name lookup) raise NetworkBlocked."""
    for name in ("connect", "connect_ex", "sendto"):
        mp.setattr(socket.socket, name, _refuse)
    mp.setattr(socket, "create_connection", _refuse)
    mp.setattr(socket, "getaddrinfo", _refuse)


@functools.cache
def real_embedder() -> USEm3Embedder:
    """The real model, once per test session, loaded while the network is blocked."""
    embedder = USEm3Embedder(threads=1)
    with pytest.MonkeyPatch.context() as mp:
        block_network(mp)
        embedder.load()
    return embedder
