"""A linear softmax head on sentence embeddings, anchored to the category prototypes.

The prototype classifier is itself linear: its logits are `P @ x / T` (P: one normalised
prototype per category). The head is a multinomial logistic regression whose L2 penalty
pulls its weights towards that classifier instead of towards zero (a Gaussian prior centred
on the prototypes; the fit is the MAP estimate). The penalty counts like `prior_strength`
examples: a category with a handful of examples keeps its description's direction, one
with hundreds is learned from them, and no switch between the two is needed.

Fitted in numpy by Nesterov-accelerated gradient descent with a fixed step 1/L (the loss
is smooth and, with the penalty, strongly convex, so it converges without tuning), on
standardised features (centred, scaled to unit mean norm) so that the step suits every
embedding model. A refit when examples arrive starts from the previous weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Head:
    """Logits `((x - mean) / scale) @ weights.T + bias` for rows x of raw embeddings."""

    weights: Array  # (n_classes, dim)
    bias: Array  # (n_classes,)
    mean: Array  # (dim,)
    scale: float

    def logits(self, vectors: npt.ArrayLike) -> Array:
        z = (np.asarray(vectors, dtype=np.float64) - self.mean) / self.scale
        out: Array = z @ self.weights.T + self.bias
        return out


def standardiser(vectors: npt.ArrayLike) -> tuple[Array, float]:
    """Mean and scale making the centred rows of `vectors` unit-norm on average."""
    x = np.asarray(vectors, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = float(np.sqrt(((x - mean) ** 2).sum(axis=1).mean()))
    return mean, scale if scale > 1e-12 else 1.0


def prototype_head(
    prototypes: npt.ArrayLike, temperature: float, mean: Array, scale: float
) -> Head:
    """The prototype classifier `P @ x / temperature` as a Head on the same standardisation."""
    p = np.asarray(prototypes, dtype=np.float64) / temperature
    return Head(weights=p * scale, bias=p @ mean, mean=mean, scale=scale)


def softmax_rows(logits: npt.ArrayLike) -> Array:
    """Row-wise softmax, numerically stable."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: Array = e / e.sum(axis=1, keepdims=True)
    return out


def fit_head(
    vectors: npt.ArrayLike,
    labels: npt.ArrayLike,
    prior: Head,
    *,
    prior_strength: float = 8.0,
    sample_weight: npt.ArrayLike | None = None,
    init: Head | None = None,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> Head:
    """MAP multinomial logistic regression with a Gaussian prior centred on `prior`.

    Minimises  sum_i w_i * CE(x_i, y_i) / sum_i w_i
               + prior_strength / (2 * sum_i w_i) * (|W - W0|^2 + |b - b0|^2).
    `labels` are row indices of `prior.weights`; classes without examples keep their
    prior weights up to the shared softmax. `init` (same shapes) warm-starts the fit.
    """
    z = (np.asarray(vectors, dtype=np.float64) - prior.mean) / prior.scale
    y = np.asarray(labels, dtype=np.int64)
    n, dim = z.shape
    n_classes = prior.weights.shape[0]
    if n == 0:
        return prior
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    total = float(w.sum())
    lam = prior_strength / total
    onehot = np.zeros((n, n_classes))
    onehot[np.arange(n), y] = 1.0
    # Augmented features [z, 1]: one parameter matrix for weights and bias.
    za = np.hstack([z, np.ones((n, 1))])
    theta0 = np.hstack([prior.weights, prior.bias[:, None]])
    start = theta0 if init is None else np.hstack([init.weights, init.bias[:, None]])
    # Lipschitz constant of the gradient: the softmax Hessian is at most 1/2 per sample.
    gram = (za * (w / total)[:, None]).T @ za
    lipschitz = 0.5 * float(np.linalg.eigvalsh(gram)[-1]) + lam
    step = 1.0 / lipschitz
    # Strongly convex: the constant momentum of Nesterov's method for mu = lam.
    q = lam / lipschitz
    momentum = (1 - np.sqrt(q)) / (1 + np.sqrt(q))

    def gradient(theta: Array) -> Array:
        probs = softmax_rows(za @ theta.T)
        g: Array = ((probs - onehot) * (w / total)[:, None]).T @ za + lam * (theta - theta0)
        return g

    theta = start.copy()
    previous = theta.copy()
    scale = max(1.0, float(np.abs(theta0).max()))
    # Small matrices: one BLAS thread is faster than several fighting over 2 busy cores.
    with threadpool_limits(limits=1):
        for _ in range(max_iter):
            look = theta + momentum * (theta - previous)
            previous = theta
            theta = look - step * gradient(look)
            if float(np.abs(theta - previous).max()) < tol * scale:
                break
    return Head(weights=theta[:, :dim], bias=theta[:, dim], mean=prior.mean, scale=prior.scale)
