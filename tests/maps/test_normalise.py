"""Percentile normalisation (the paper's rule)."""

from __future__ import annotations

import numpy as np
import pytest

from cryoset.maps.normalise import normalise, positive_percentile
from cryoset.maps.validate import check_normalised


def test_95th_percentile_of_positive_values_maps_to_one(rng: np.random.Generator) -> None:
    data = rng.normal(size=(30, 30, 30)).astype(np.float32)
    out = normalise(data)
    pos = data > 0
    p95 = np.percentile(data[pos].astype(np.float64), 95)
    np.testing.assert_allclose(out[pos & (data < p95)], (data / np.float32(p95))[pos & (data < p95)], rtol=1e-6)
    assert np.all(out[~pos] == 0)
    # 5 % of the positive voxels saturate at 1
    assert abs(np.mean(out[pos] == 1.0) - 0.05) < 0.002
    assert check_normalised(out)["ok"]


def test_scale_invariance(rng: np.random.Generator) -> None:
    data = rng.normal(size=(10, 11, 12)).astype(np.float32)
    np.testing.assert_allclose(normalise(data), normalise(data * 1234.5), atol=1e-6)


def test_configurable_percentile_and_no_clip() -> None:
    data = np.array([[[-2.0, 1.0, 2.0, 3.0, 4.0]]])
    assert positive_percentile(data, 50) == 2.5
    out = normalise(data, percentile=50, clip=None)
    np.testing.assert_allclose(out.ravel(), [-0.8, 0.4, 0.8, 1.2, 1.6])


def test_map_without_positive_values_is_refused() -> None:
    with pytest.raises(ValueError, match="no positive"):
        normalise(-np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="percentile"):
        positive_percentile(np.ones(3), 0)
