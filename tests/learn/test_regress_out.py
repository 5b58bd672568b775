"""Acquisition regress-out (issue #19): a planted nuisance direction goes, an orthogonal signal stays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoset.learn.regress_out import acquisition_matrix, fit_regress_out


def _planted(n: int = 400, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    u, v = q[:, 0], q[:, 1]  # signal and nuisance directions, orthonormal
    signal = rng.normal(size=n)
    nuisance = rng.normal(size=n)
    other = rng.normal(size=(n, d - 2)) @ q[:, 2:].T * 0.3
    x = np.outer(signal, u) + np.outer(nuisance, 3.0 * v) + other + 5.0
    return x, signal, nuisance, u, v


def test_removes_planted_nuisance_and_keeps_orthogonal_signal() -> None:
    x, signal, nuisance, u, v = _planted()
    ro = fit_regress_out(x, nuisance[:, None], names=["voltage_kv"])
    assert ro.rank == 1
    assert abs(abs(ro.basis[:, 0] @ v) - 1.0) < 1e-9  # the removed direction is the nuisance one
    y = ro.apply(x).astype(np.float64)
    # nothing of the nuisance is linearly readable any more
    assert np.abs((y - y.mean(0)) @ v).max() < 1e-4
    before = np.corrcoef(x @ v, nuisance)[0, 1]
    assert before > 0.99  # it was there, planted
    # the orthogonal signal is intact: the projection on u is unchanged
    np.testing.assert_allclose(y @ u, x @ u, atol=1e-4)
    np.testing.assert_allclose((y - y.mean(0)) @ u, signal - signal.mean(), atol=1e-4)
    # and the fitted map no longer reads anything from projected features
    assert np.abs((y - ro.mean) @ ro.coef).max() < 1e-4


def test_fit_uses_only_given_rows_and_applies_to_others() -> None:
    x, _, nuisance, _, v = _planted(seed=1)
    ro = fit_regress_out(x[:200], nuisance[:200, None])
    y = ro.apply(x[200:]).astype(np.float64)
    assert np.abs((y - ro.mean) @ v).max() < 1e-4


def test_acquisition_matrix_uses_training_variation_only() -> None:
    frame = pd.DataFrame({
        "experiment_id": ["a"] * 3 + ["b"] * 3 + ["c"] * 3,
        "voltage_kv": [300.0] * 3 + [200.0] * 3 + [120.0] * 3,
        "cs_mm": [2.7] * 6 + [0.01] * 3,  # varies only in the held-out experiment
        "defocus_a": [1e4, 2e4, 3e4] * 3,  # varies within experiments but not across their means
        "detector": ["K2"] * 3 + ["K3"] * 3 + ["Falcon"] * 3,
    })
    train = np.array([True] * 6 + [False] * 3)
    m, names = acquisition_matrix(frame, train)
    assert names == ["voltage_kv", "detector=K2", "detector=K3"]
    np.testing.assert_allclose(m[:6, 0], [1, 1, 1, -1, -1, -1])
    np.testing.assert_allclose(m[6:, 1:], 0.0)  # unseen detector: all zero


def test_no_nuisance_is_identity() -> None:
    x, *_ = _planted()
    ro = fit_regress_out(x, np.zeros((len(x), 0)))
    assert ro.rank == 0
    np.testing.assert_allclose(ro.apply(x), x, rtol=1e-6)


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        fit_regress_out(np.zeros((3, 2)), np.zeros((4, 1)))
