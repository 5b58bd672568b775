"""Pick evaluation on hand-made cases, NMS and duplicate removal properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryoset.errors import InputError
from cryoset.picking.evaluate import average_precision, evaluate_picks, prefix_match_counts
from cryoset.picking.inspection import InspectionSettings, inspect_picks
from cryoset.picking.match import match_counts
from cryoset.picking.peaks import find_peaks, non_max_suppression, remove_duplicates


def _picks(rows: list[tuple[str, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["micrograph", "x_px", "y_px", "score"]).assign(diameter_px=10.0)


def test_hand_made_precision_recall_f1_ap() -> None:
    truth = _picks([("a", 0, 0, np.nan), ("a", 100, 0, np.nan), ("a", 200, 0, np.nan),
                    ("b", 0, 0, np.nan)])
    # a: ranks 1 (TP), 2 (FP), 3 (TP); b: no picks. Match radius 5 px (0.5 × 10).
    picks = _picks([("a", 1, 1, 0.9), ("a", 50, 50, 0.8), ("a", 104, 3, 0.7), ("a", 300, 0, 0.1)])
    per, pooled = evaluate_picks(picks, truth)
    a = per.set_index("micrograph").loc["a"]
    assert (a.n_picks, a.n_truth, a.n_matched) == (4, 3, 2)
    assert a.precision == pytest.approx(0.5)
    assert a.recall == pytest.approx(2 / 3)
    assert a.f1 == pytest.approx(2 * 2 / 7)
    assert a.average_precision == pytest.approx((1 / 1 + 2 / 3) / 3)
    b = per.set_index("micrograph").loc["b"]
    assert (b.n_picks, b.n_matched, b.recall, b.average_precision) == (0, 0, 0.0, 0.0)
    assert (pooled.n_picks, pooled.n_truth, pooled.n_matched) == (4, 4, 2)
    assert pooled.f1 == pytest.approx(0.5)
    assert pooled.average_precision == pytest.approx((1 + 2 / 3) / 4)


def test_match_is_one_to_one_at_half_diameter() -> None:
    truth = _picks([("m", 0, 0, np.nan)])
    picks = _picks([("m", 5, 0, 0.5), ("m", -5, 0, 0.9), ("m", 0, 5.01, 1.0)])
    _, pooled = evaluate_picks(picks, truth)
    assert pooled.n_matched == 1  # two picks within 5 px, one reference: one match
    # AP: the best pick (5.01 px away) misses, the second matches → precision 1/2 at recall 1
    assert pooled.average_precision == pytest.approx(0.5)
    assert average_precision([1, 0, 1], 2) == pytest.approx((1 + 2 / 3) / 2)


def test_evaluate_needs_a_distance() -> None:
    p = pd.DataFrame({"micrograph": ["m"], "x_px": [1.0], "y_px": [1.0]})
    with pytest.raises(InputError):
        evaluate_picks(p, p)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_prefix_counts_equal_hungarian_on_every_prefix(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 30, (int(rng.integers(0, 15)), 2))
    t = rng.uniform(0, 30, (int(rng.integers(0, 15)), 2))
    pre = prefix_match_counts(p, t, 4.0)
    for k in range(len(p)):
        assert pre[k] == match_counts(p[: k + 1], t, 4.0)[0]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(1.0, 20.0))
def test_nms_properties(seed: int, dist: float) -> None:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (40, 2))
    s = rng.normal(size=40)
    keep = non_max_suppression(xy, s, dist)
    assert keep[0] == int(np.argmax(s))  # best pick always kept
    kx = xy[keep]
    d = np.hypot(*(kx[:, None] - kx[None]).transpose(2, 0, 1))
    assert (d[np.triu_indices(len(kx), 1)] >= dist * (1 - 1e-9)).all()
    # every dropped pick lies within dist of a kept pick with a higher score
    dropped = np.setdiff1d(np.arange(40), keep)
    for i in dropped:
        near = np.hypot(*(kx - xy[i]).T) < dist
        assert near.any() and (s[keep][near] >= s[i]).any()


def test_remove_duplicates_per_micrograph_and_find_peaks() -> None:
    df = _picks([("a", 0, 0, 1.0), ("a", 2, 0, 2.0), ("b", 1, 0, 0.5), ("a", 50, 0, 0.1)])
    out = remove_duplicates(df, 5.0)
    assert sorted(map(tuple, out[["micrograph", "x_px"]].to_numpy().tolist())) == [
        ("a", 2.0), ("a", 50.0), ("b", 1.0)]
    r = np.zeros((40, 40))
    r[10, 10], r[10, 13], r[30, 30], r[2, 20] = 5.0, 4.0, 3.0, 9.0
    xy, v = find_peaks(r, 5.0, threshold=1.0, exclude_border_px=4)
    assert xy.tolist() == [[10.0, 10.0], [30.0, 30.0]] and v.tolist() == [5.0, 3.0]


def test_inspection_rejects_with_reasons() -> None:
    df = _picks([("a", 5, 5, 1.0), ("a", 20, 20, 1.0), ("a", 30, 30, 1.0), ("b", 5, 5, 1.0)])
    df["ncc"] = [0.5, 0.1, 0.5, 0.5]
    df["power"] = [1.5, 1.5, 9.0, 1.5]
    mask = np.zeros((40, 40), dtype=bool)
    mask[:10, :10] = True  # carbon in the corner of micrograph a
    acc, rej = inspect_picks(df, InspectionSettings(min_ncc=0.2, max_power=5.0, max_ctf_resolution_a=8.0),
                             ctf_resolution_a={"b": 12.0}, masks={"a": mask})
    assert acc.empty
    assert rej["Reason"].tolist() == ["on carbon/ice mask", "NCC below 0.2", "power above 5",
                                      "CTF fit worse than 8 A"]
