"""Density maps at a resolution: analytic widths, filter shape, MRC output, a real deposited map."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from cryoset.io.mrc import read_map
from cryoset.provenance import read_provenance
from cryoset.simulate.density import (
    SIGMA_PER_RESOLUTION,
    lowpass_filter,
    resolution_b_factor_a2,
    simulate_map,
)
from cryoset.simulate.potential import potential_volume
from cryoset.simulate.scattering import PENG_1996
from cryoset.testing import require_shared_data
from cryoset.workflows.simulate import write_simulated_map


def test_gaussian_method_has_the_predicted_width() -> None:
    # One atom: the map is Σ a_i N(0, σ_i²) with σ_i² = (b_i + B)/(8π²) + σ_res² + v²/12.
    voxel, n, res, b_atom = 0.5, 81, 4.0, 10.0
    origin = (-20.0, -20.0, -20.0)
    vol = simulate_map([[0.0, 0.0, 0.0]], ["N"], [b_atom], shape=(n, n, n), voxel_size_a=voxel,
                       origin_a=origin, resolution_a=res).astype(np.float64)
    a, b = (np.asarray(x) for x in PENG_1996["N"])
    var_i = (b + b_atom) / (8 * math.pi**2) + (SIGMA_PER_RESOLUTION * res) ** 2 + voxel**2 / 12
    expected_var = float(np.sum(a * var_i) / np.sum(a))
    x = origin[2] + np.arange(n) * voxel
    profile = vol.sum(axis=(0, 1))
    var_x = float(np.sum(profile * x**2) / profile.sum())
    assert var_x == pytest.approx(expected_var, rel=5e-3)
    assert SIGMA_PER_RESOLUTION == pytest.approx(0.2251, abs=1e-4)
    assert resolution_b_factor_a2(res) == pytest.approx(8 * math.pi**2 * (0.2251 * res) ** 2, rel=1e-3)


def test_lowpass_method_removes_high_frequencies(rng: np.random.Generator) -> None:
    xyz = rng.normal(0.0, 5.0, (30, 3))
    elements = ["C"] * 30
    kwargs = {"shape": (40, 40, 40), "voxel_size_a": 1.0, "origin_a": (-20.0, -20.0, -20.0)}
    raw = potential_volume(xyz, elements, 20.0, kwargs["shape"], 1.0, kwargs["origin_a"])  # type: ignore[arg-type]
    low = simulate_map(xyz, elements, 20.0, resolution_a=5.0, method="lowpass", **kwargs)  # type: ignore[arg-type]
    f_raw = np.fft.fftn(raw)
    f_low = np.fft.fftn(low)
    q = np.sqrt(sum(g**2 for g in np.meshgrid(*([np.fft.fftfreq(40)] * 3), indexing="ij")))
    width = 2.0 / 40
    assert np.abs(f_low[q > 0.2 + width / 2 + 1e-9]).max() < 1e-4 * np.abs(f_raw).max()
    keep = q < 0.2 - width / 2 - 1e-9
    np.testing.assert_allclose(f_low[keep], f_raw[keep], rtol=0, atol=1e-4 * np.abs(f_raw).max())
    # the filter is 0.5 at exactly 1/d
    assert lowpass_filter(np.ones((4, 4, 4)), 1.0, 2.0).mean() == pytest.approx(1.0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="resolution_a"):
        simulate_map([[0.0, 0.0, 0.0]], ["C"], [0.0], shape=(4, 4, 4), voxel_size_a=1.0,
                     resolution_a=0.0)
    with pytest.raises(ValueError, match="method"):
        simulate_map([[0.0, 0.0, 0.0]], ["C"], [0.0], shape=(4, 4, 4), voxel_size_a=1.0,
                     resolution_a=5.0, method="fsc")  # type: ignore[arg-type]


def test_write_round_trip_with_provenance(tmp_path: Path) -> None:
    vol = simulate_map([[1.0, 2.0, 3.0]], ["O"], [15.0], shape=(10, 12, 14), voxel_size_a=1.25,
                       origin_a=(-5.0, -6.0, -7.0), resolution_a=4.0)
    out = write_simulated_map(tmp_path / "sim.mrc", vol, 1.25, (-5.0, -6.0, -7.0),
                              parameters={"resolution_a": 4.0, "method": "gaussian"})
    back = read_map(out)
    np.testing.assert_array_equal(back.data, vol)
    np.testing.assert_allclose(back.voxel_size_a, (1.25, 1.25, 1.25))
    np.testing.assert_allclose(back.origin_a, (-5.0, -6.0, -7.0))
    assert read_provenance(out)["parameters"]["resolution_a"] == 4.0


def _read_model(path: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    import gemmi

    st = gemmi.read_structure(str(path))
    atoms = [a for res in st[0][0] for a in res]
    xyz = np.array([[a.pos.x, a.pos.y, a.pos.z] for a in atoms])
    return xyz, [a.element.name for a in atoms], np.array([a.b_iso for a in atoms])


def _mask_around(xyz: np.ndarray, shape: tuple[int, ...], origin: tuple[float, ...], voxel: float,
                 radius_a: float) -> np.ndarray:
    idx = np.rint((xyz[:, ::-1] - np.asarray(origin)) / voxel).astype(int)
    inside = np.all((idx >= 0) & (idx < np.asarray(shape)), axis=1)
    seeds = np.zeros(shape, dtype=bool)
    seeds[tuple(idx[inside].T)] = True
    return np.asarray(ndimage.distance_transform_edt(~seeds, sampling=voxel) <= radius_a)


@pytest.mark.shared_data
def test_emd_5168_from_3mfp() -> None:
    root = require_shared_data("maps", "emd_5168")
    xyz, elements, b = _read_model(root / "3MFP.pdb")
    deposited = read_map(root / "emd_5168.map")
    voxel = deposited.voxel_size_a[0]
    # frame check: nstart -50 at 1.742 Å puts voxel [0, 0, 0] at -87.1 Å
    np.testing.assert_allclose(deposited.origin_a, (-87.1, -87.1, -87.1), atol=1e-3)
    mask = _mask_around(xyz, deposited.data.shape, deposited.origin_a, voxel, 3.0)
    floors = {"gaussian": 0.57, "lowpass": 0.63}  # measured 0.593 / 0.654
    for method, floor in floors.items():
        sim = simulate_map(xyz, elements, b, shape=deposited.data.shape, voxel_size_a=voxel,
                           origin_a=deposited.origin_a, resolution_a=6.6, method=method)  # type: ignore[arg-type]
        cc_mask = np.corrcoef(sim[mask], deposited.data[mask])[0, 1]
        assert cc_mask > floor, (method, cc_mask)
        # a one-voxel shift of the simulation must correlate worse (the frame is right)
        shifted = np.roll(sim, 1, axis=0)
        assert np.corrcoef(shifted[mask], deposited.data[mask])[0, 1] < cc_mask - 0.05
    # the monomer cut of the map (non-zero origin in the header) without any mask
    monomer = read_map(root / "emd_5168_monomer.mrc")
    sim = simulate_map(xyz, elements, b, shape=monomer.data.shape, voxel_size_a=voxel,
                       origin_a=monomer.origin_a, resolution_a=6.6, method="lowpass")
    assert np.corrcoef(sim.ravel(), monomer.data.ravel())[0, 1] > 0.62  # measured 0.653
