"""Probes of frozen features: k-NN and linear classifiers, balanced accuracy, confusion matrix.

Pure functions on arrays ``(n, d)`` of features (numpy or torch) and label vectors of any
hashable values (strings or integers); nothing reads or writes files.

* :func:`knn_classify`: cosine similarity to the training features, the ``k`` nearest vote
  with weights ``exp(similarity / temperature)`` (the weighted k-NN of DINO's evaluation).
* :func:`fit_linear_probe`: multinomial logistic regression (torch, full batch, Adam),
  features standardised with the training mean/sd; the learning rate is chosen on a seeded,
  class-stratified validation part of the *training* features only, then the probe is refit
  on all training features. The evaluation set is never seen.
* :func:`balanced_accuracy`, :func:`confusion_matrix`.
* :func:`quantile_bins` / :func:`assign_bins`: bin edges at quantiles of the training values,
  applied to any values (e.g. a defocus-bin label for train and test alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "LinearProbe",
    "assign_bins",
    "balanced_accuracy",
    "confusion_matrix",
    "fit_linear_probe",
    "knn_classify",
    "quantile_bins",
]


def _features(x: Any) -> NDArray[np.float32]:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"features must be (n, d), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("features contain NaN or infinite values")
    return arr


def _labels(y: Any) -> NDArray[Any]:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a vector, got shape {arr.shape}")
    return arr


def knn_classify(train_x: ArrayLike | torch.Tensor, train_y: ArrayLike | torch.Tensor,
                 test_x: ArrayLike | torch.Tensor, k: int = 20, temperature: float = 0.07,
                 batch_size: int = 1024) -> NDArray[Any]:
    """Weighted cosine k-NN: the label of each test feature.

    Each of the ``k`` training features most similar (cosine) to a test feature votes for its
    label with weight ``exp(similarity / temperature)``; the label with the largest total wins
    (ties: the first in sorted label order). ``k`` is capped at the number of training features.

    Returns
    -------
    ndarray, shape (n_test,)
        Predicted labels (values of ``train_y``).
    """
    xtr = _features(train_x)
    xte = _features(test_x)
    ytr = _labels(train_y)
    if len(xtr) != len(ytr):
        raise ValueError(f"{len(xtr)} training features but {len(ytr)} labels")
    if len(xtr) == 0:
        raise ValueError("no training features")
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"feature dimensions differ: {xtr.shape[1]} and {xte.shape[1]}")
    if k < 1 or not temperature > 0:
        raise ValueError("need k >= 1 and temperature > 0")
    classes, idx = np.unique(ytr, return_inverse=True)
    kk = min(k, len(xtr))
    a = torch.nn.functional.normalize(torch.from_numpy(xtr).double(), dim=1)
    labels = torch.from_numpy(idx.astype(np.int64))
    out = np.empty(len(xte), dtype=np.int64)
    for start in range(0, len(xte), batch_size):
        b = torch.nn.functional.normalize(torch.from_numpy(xte[start:start + batch_size]).double(), dim=1)
        sim = b @ a.T
        top, where = sim.topk(kk, dim=1)
        weights = torch.exp((top - 1.0) / temperature)  # shifted by the largest possible similarity
        votes = torch.zeros(len(b), len(classes), dtype=torch.float64)
        votes.scatter_add_(1, labels[where], weights)
        out[start:start + len(b)] = votes.argmax(dim=1).numpy()
    return np.asarray(classes[out])


@dataclass
class LinearProbe:
    """A fitted multinomial logistic-regression probe.

    Attributes
    ----------
    classes : ndarray, shape (C,)
        Label values, in the order of the logits.
    weight : ndarray, shape (C, d); bias : ndarray, shape (C,)
        On standardised features ``(x - mean) / std``.
    mean, std : ndarray, shape (d,)
        Training-feature statistics.
    lr
        The learning rate chosen on the validation part of the training features.
    validation_balanced_accuracy
        Learning rate → balanced accuracy on that validation part.
    """

    classes: NDArray[Any]
    weight: NDArray[np.float32]
    bias: NDArray[np.float32]
    mean: NDArray[np.float32]
    std: NDArray[np.float32]
    lr: float
    validation_balanced_accuracy: dict[float, float] = field(default_factory=dict)

    def logits(self, x: ArrayLike | torch.Tensor) -> NDArray[np.float32]:
        """Logits ``(n, C)`` of features ``x``."""
        z = (_features(x) - self.mean) / self.std
        return np.asarray(z @ self.weight.T + self.bias, dtype=np.float32)

    def predict(self, x: ArrayLike | torch.Tensor) -> NDArray[Any]:
        """Predicted labels of features ``x``."""
        return np.asarray(self.classes[self.logits(x).argmax(axis=1)])


def _stratified_split(idx: NDArray[np.int64], fraction: float, seed: int
                      ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(fit, validation) row numbers: about ``fraction`` of each class to validation."""
    rng = np.random.default_rng(seed)
    val: list[NDArray[np.int64]] = []
    for c in np.unique(idx):
        rows = np.flatnonzero(idx == c)
        n_val = round(fraction * len(rows))
        if len(rows) >= 2:
            n_val = min(max(n_val, 1), len(rows) - 1)
        else:
            n_val = 0
        val.append(rng.permutation(rows)[:n_val])
    v = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    fit = np.setdiff1d(np.arange(len(idx)), v)
    return fit, v


def _train_logreg(x: NDArray[np.float32], y: NDArray[np.int64], n_classes: int, lr: float, epochs: int,
                  weight_decay: float, seed: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    gen = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    w = (torch.randn(n_classes, d, generator=gen) * 0.01).requires_grad_(True)
    b = torch.zeros(n_classes, requires_grad=True)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w.T + b, yt) + weight_decay * (w * w).sum()
        loss.backward()
        opt.step()
    return w.detach().numpy().copy(), b.detach().numpy().copy()


def fit_linear_probe(train_x: ArrayLike | torch.Tensor, train_y: ArrayLike | torch.Tensor, *,
                     lrs: Sequence[float] = (1e-3, 1e-2, 1e-1), val_fraction: float = 0.2, seed: int = 0,
                     epochs: int = 200, weight_decay: float = 1e-4) -> LinearProbe:
    """Fit a multinomial logistic-regression probe on frozen features.

    Parameters
    ----------
    train_x : (n, d) features; train_y : (n,) labels
        Training data only: the learning rate is chosen on a class-stratified, seeded
        ``val_fraction`` of these rows (best balanced accuracy; ties: the smaller rate), then
        the probe is refit on all of them with that rate.
    lrs
        Candidate Adam learning rates (full-batch steps).
    epochs
        Full-batch steps per fit.
    weight_decay
        L2 penalty on the weights (not the bias), on standardised features.
    seed
        Seeds the split and the initial weights: the same inputs give the same probe.
    """
    x = _features(train_x)
    y = _labels(train_y)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} training features but {len(y)} labels")
    if not lrs:
        raise ValueError("give at least one learning rate")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    classes, idx = np.unique(y, return_inverse=True)
    idx = idx.astype(np.int64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0).astype(np.float32)
    z = ((x - mean) / std).astype(np.float32)
    scores: dict[float, float] = {}
    if len(lrs) > 1:
        fit_rows, val_rows = _stratified_split(idx, val_fraction, seed)
        for lr in lrs:
            w, b = _train_logreg(z[fit_rows], idx[fit_rows], len(classes), float(lr), epochs, weight_decay, seed)
            pred = (z[val_rows] @ w.T + b).argmax(axis=1)
            scores[float(lr)] = balanced_accuracy(idx[val_rows], pred) if len(val_rows) else 0.0
        best = max(scores.values())
        lr_best = min(lr for lr, s in scores.items() if s == best)
    else:
        lr_best = float(lrs[0])
    w, b = _train_logreg(z, idx, len(classes), lr_best, epochs, weight_decay, seed)
    return LinearProbe(classes, w, b, mean.astype(np.float32), std, lr_best, scores)


def balanced_accuracy(y_true: ArrayLike | torch.Tensor, y_pred: ArrayLike | torch.Tensor) -> float:
    """Mean over the classes present in ``y_true`` of the fraction of that class predicted right."""
    t = _labels(y_true)
    p = _labels(y_pred)
    if len(t) != len(p):
        raise ValueError(f"{len(t)} true labels but {len(p)} predictions")
    if len(t) == 0:
        raise ValueError("no labels")
    recalls = [float(np.mean(p[t == c] == c)) for c in np.unique(t)]
    return float(np.mean(recalls))


def confusion_matrix(y_true: ArrayLike | torch.Tensor, y_pred: ArrayLike | torch.Tensor,
                     labels: ArrayLike | None = None) -> tuple[NDArray[np.int64], NDArray[Any]]:
    """Counts ``[i, j]`` of true label ``labels[i]`` predicted as ``labels[j]``.

    ``labels`` defaults to the sorted union of both vectors. Returns ``(matrix, labels)``.
    """
    t = _labels(y_true)
    p = _labels(y_pred)
    if len(t) != len(p):
        raise ValueError(f"{len(t)} true labels but {len(p)} predictions")
    lab = np.unique(np.concatenate([t, p])) if labels is None else np.asarray(labels)
    pos = {v: i for i, v in enumerate(lab.tolist())}
    m = np.zeros((len(lab), len(lab)), dtype=np.int64)
    for a, b in zip(t.tolist(), p.tolist(), strict=True):
        if a in pos and b in pos:
            m[pos[a], pos[b]] += 1
    return m, lab


def quantile_bins(values: ArrayLike, n_bins: int) -> NDArray[np.float64]:
    """Inner bin edges ``(n_bins - 1,)`` at the quantiles ``1/n_bins … (n_bins-1)/n_bins`` of ``values``.

    Compute them from the *training* values and apply them with :func:`assign_bins` to both
    training and evaluation values.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    if len(v) == 0:
        raise ValueError("no finite values to bin")
    return np.asarray(np.quantile(v, np.arange(1, n_bins) / n_bins), dtype=np.float64)


def assign_bins(values: ArrayLike, edges: ArrayLike) -> NDArray[np.int64]:
    """Bin number (0 … len(edges)) of each value: ``i`` when ``edges[i-1] <= v < edges[i]``."""
    e = np.asarray(edges, dtype=np.float64)
    return np.searchsorted(e, np.asarray(values, dtype=np.float64), side="right").astype(np.int64)
