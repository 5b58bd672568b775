"""Frozen-feature probes: planted signals are recovered, k-NN is exact on separated clusters,
bins come from training values only, and everything is deterministic with a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoset.learn.probes import (
    assign_bins,
    balanced_accuracy,
    confusion_matrix,
    fit_linear_probe,
    knn_classify,
    quantile_bins,
)


def _planted(n: int, d: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels carried linearly by 3 of ``d`` dimensions (class means far apart), the rest noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.standard_normal((n, d)).astype(np.float32)
    centres = rng.standard_normal((classes, 3)) * 12.0
    x[:, :3] += centres[y].astype(np.float32)
    return x, y


def test_linear_probe_recovers_a_planted_linear_signal() -> None:
    x, y = _planted(600, 32, 4, 0)
    names = np.array(["a", "b", "c", "d"])[y]  # string labels work too
    probe = fit_linear_probe(x[:400], names[:400], lrs=(1e-3, 1e-1), val_fraction=0.25, seed=0, epochs=150)
    pred = probe.predict(x[400:])
    assert balanced_accuracy(names[400:], pred) == 1.0
    assert set(probe.validation_balanced_accuracy) == {1e-3, 1e-1}
    assert probe.lr in (1e-3, 1e-1)


def test_linear_probe_beats_chance_only_when_there_is_signal() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 16)).astype(np.float32)
    y = rng.integers(0, 4, 400)  # labels independent of the features
    probe = fit_linear_probe(x[:300], y[:300], lrs=(1e-2,), seed=0, epochs=100)
    assert balanced_accuracy(y[300:], probe.predict(x[300:])) < 0.45


def test_linear_probe_is_deterministic_with_a_seed_and_uses_training_rows_only() -> None:
    x, y = _planted(300, 16, 3, 2)
    a = fit_linear_probe(x, y, lrs=(1e-2, 1e-1), seed=5, epochs=50)
    b = fit_linear_probe(torch.from_numpy(x), torch.from_numpy(y), lrs=(1e-2, 1e-1), seed=5, epochs=50)
    assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    assert a.validation_balanced_accuracy == b.validation_balanced_accuracy
    # the probe's statistics are those of the training features it was given
    assert np.allclose(a.mean, x.mean(axis=0), atol=1e-6)


def test_knn_is_exact_on_well_separated_clusters() -> None:
    rng = np.random.default_rng(3)
    directions = np.eye(8, dtype=np.float32)[:5] * 10  # 5 orthogonal cluster directions
    ytr = np.repeat(np.arange(5), 30)
    xtr = directions[ytr] + rng.standard_normal((150, 8)).astype(np.float32) * 0.3
    yte = np.repeat(np.arange(5), 10)
    xte = directions[yte] + rng.standard_normal((50, 8)).astype(np.float32) * 0.3
    pred = knn_classify(xtr, ytr, xte, k=20, temperature=0.07)
    assert np.array_equal(pred, yte)
    # k larger than the training set is capped; batching changes nothing
    assert np.array_equal(knn_classify(xtr, ytr, xte, k=1000, batch_size=7), pred)


def test_knn_weights_votes_by_similarity() -> None:
    # two near neighbours of class 1 outweigh three far ones of class 0 at a low temperature
    xtr = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.1, 1.0], [-0.1, 1.0]], dtype=np.float32)
    ytr = np.array([1, 1, 0, 0, 0])
    assert knn_classify(xtr, ytr, np.array([[1.0, 0.05]], np.float32), k=5, temperature=0.07)[0] == 1
    # with an almost flat weighting the majority wins
    assert knn_classify(xtr, ytr, np.array([[1.0, 0.05]], np.float32), k=5, temperature=100.0)[0] == 0


def test_balanced_accuracy_and_confusion_matrix() -> None:
    t = np.array([0, 0, 0, 0, 1, 1])
    p = np.array([0, 0, 0, 0, 0, 1])
    assert balanced_accuracy(t, p) == pytest.approx((1.0 + 0.5) / 2)
    m, labels = confusion_matrix(t, p)
    assert labels.tolist() == [0, 1]
    assert m.tolist() == [[4, 0], [1, 1]]
    m3, _ = confusion_matrix(t, p, labels=[0, 1, 2])
    assert m3.shape == (3, 3) and m3.sum() == 6


def test_quantile_bins_come_from_training_values_only() -> None:
    train = np.arange(100, dtype=float)  # 0 … 99
    edges = quantile_bins(train, 4)
    assert edges.shape == (3,)
    assert np.allclose(edges, np.quantile(train, [0.25, 0.5, 0.75]))
    counts = np.bincount(assign_bins(train, edges), minlength=4)
    assert counts.tolist() == [25, 25, 25, 25]
    # test values far outside the training range fall into the end bins; edges unchanged
    test = np.array([-1e6, 1e6, 49.0])
    assert assign_bins(test, edges).tolist() == [0, 3, 1]
    assert np.array_equal(quantile_bins(train, 4), edges)
