"""Map post-processing and validation (``cryoset postprocess``, ``cryoset mask-create``).

:func:`postprocess_maps` works on arrays (refinement's report calls it); :func:`run_postprocess`
reads two half maps, writes into ``OUT_DIR``:

``postprocess.mrc``            the sharpened map (average of the halves, FSC-weighted, B-factor, low-pass)
``postprocess_masked.mrc``     the same times the mask
``mask.mrc``, ``mask_loose.mrc``  the mask used (and the loose auto-mask)
``postprocess_fsc.csv``        every FSC curve per shell
``postprocess.json``           resolutions (Å) at 0.143 and 0.5 of every curve, B-factor, mask parameters
``local_resolution.mrc``      with ``local_resolution``: sliding-window FSC resolution (Å) per voxel
``postprocess_fsc.png``, ``postprocess_guinier.png``, ``angular_distribution.png``, ``index.html``

with a provenance sidecar beside every map and the JSON. Everything is written into a staged
folder first and moved into ``OUT_DIR`` only when complete. Algorithms and formulas:
:mod:`cryoset.recon.validate`, :mod:`cryoset.recon.masks`; docs/postprocess.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cryoset.errors import InputError
from cryoset.recon.fsc import CorrelationCurve
from cryoset.recon.validate import AngularDistribution, CorrectedFsc, GuinierFit
from cryoset.workflows.params import PostprocessParams

__all__ = ["PostprocessParams", "PostprocessResult", "postprocess_maps", "run_mask_create", "run_postprocess"]


@dataclass
class PostprocessResult:
    """Everything :func:`postprocess_maps` computes.

    Attributes
    ----------
    sharpened, sharpened_masked : ndarray, float32, (n, n, n)
    mask, mask_loose : ndarray or None
    curves : dict
        Name → :class:`CorrelationCurve`: ``unmasked`` always; ``masked``, ``randomised``,
        ``corrected`` with a mask; ``masked_loose``, ``corrected_loose`` with an auto-mask;
        ``reference`` with a reference.
    final : str
        The curve whose 0.143 crossing is the resolution (``corrected`` with a mask).
    resolution_a
        The final resolution (Å, 0.143).
    bfactor_a2
        The B-factor applied (negative sharpens).
    guinier : GuinierFit or None
        The fit (also made when the B-factor was given, for the report), None when the range
        holds fewer than 3 shells.
    summary : dict
        JSON-ready record (resolutions, B-factor, mask parameters).
    local_resolution_a : ndarray or None
        Local resolution map (Å; 0 where not evaluated), with ``p.local_resolution``.
    """

    sharpened: NDArray[np.float32]
    sharpened_masked: NDArray[np.float32]
    mask: NDArray[np.float32] | None
    mask_loose: NDArray[np.float32] | None
    curves: dict[str, CorrelationCurve]
    final: str
    resolution_a: float
    bfactor_a2: float
    guinier: GuinierFit | None
    angles: AngularDistribution | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    local_resolution_a: NDArray[np.float32] | None = None


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def check_params(p: PostprocessParams) -> None:
    """InputError naming the option for a parameter out of range."""
    for name, value, low in (("--extend-px", p.extend_px, 0.0), ("--loose-extend-px", p.loose_extend_px, 0.0),
                             ("--soft-edge-px", p.soft_edge_px, 0.0)):
        if not (math.isfinite(value) and value >= low):
            raise InputError(name, f"must be >= 0, got {value}")
    for name, value in (("--mask-lowpass-a", p.mask_lowpass_a), ("--bfactor-low-a", p.bfactor_low_a)):
        if not (math.isfinite(value) and value > 0):
            raise InputError(name, f"must be > 0, got {value}")
    if p.local_window_px < 8:
        raise InputError("--local-window-px", f"must be >= 8, got {p.local_window_px}")
    if p.bfactor_high_a is not None and not (math.isfinite(p.bfactor_high_a) and p.bfactor_high_a > 0):
        raise InputError("--bfactor-high-a", f"must be > 0, got {p.bfactor_high_a}")
    if not 0.0 < p.randomise_below_fsc < 1.0:
        raise InputError("--randomise-below-fsc", f"must lie in (0, 1), got {p.randomise_below_fsc}")
    if p.mask_threshold is not None and not math.isfinite(p.mask_threshold):
        raise InputError("--mask-threshold", f"must be finite, got {p.mask_threshold}")
    if p.bfactor_a2 is not None and not math.isfinite(p.bfactor_a2):
        raise InputError("--bfactor", f"must be 'auto' or a number, got {p.bfactor_a2}")


def _auto_masks(average: NDArray[np.float64], voxel_size_a: float, p: PostprocessParams
                ) -> tuple[NDArray[np.float32], NDArray[np.float32], dict[str, Any]]:
    from cryoset.recon.masks import auto_mask, soft_extend
    from cryoset.recon.validate import lowpass

    try:
        tight = auto_mask(average, voxel_size_a, lowpass_a=p.mask_lowpass_a, threshold=p.mask_threshold,
                          extend_px=p.extend_px, soft_edge_px=p.soft_edge_px)
    except ValueError as exc:
        raise InputError("--mask-threshold", str(exc)) from None
    seed = lowpass(average, voxel_size_a, p.mask_lowpass_a) > tight.threshold
    loose = soft_extend(seed, p.loose_extend_px, p.soft_edge_px)
    info = {"source": "auto", "threshold": tight.threshold, "lowpass_a": p.mask_lowpass_a,
            "extend_px": p.extend_px, "loose_extend_px": p.loose_extend_px, "soft_edge_px": p.soft_edge_px,
            "seed_fraction": tight.seed_fraction, "volume_fraction": float(tight.mask.mean()),
            "loose_volume_fraction": float(loose.mean())}
    return tight.mask, loose, info


def postprocess_maps(half1: NDArray[np.floating], half2: NDArray[np.floating], voxel_size_a: float,
                     p: PostprocessParams = PostprocessParams(), *, mask: NDArray[np.floating] | None = None,
                     reference: NDArray[np.floating] | None = None,
                     rotations: NDArray[np.float64] | None = None,
                     progress: Callable[[int, int], None] | None = None) -> PostprocessResult:
    """Validate and sharpen two half maps (cubic, same shape) of voxel size ``voxel_size_a``.

    ``mask`` (values in [0, 1]) is used as given; without one ``p.auto_mask`` makes tight and
    loose soft masks; with neither only the unmasked FSC is computed. ``reference`` must already
    be on the half maps' grid (:func:`cryoset.recon.validate.align_reference`). ``rotations``
    (RELION matrices) give the angular distribution. ``progress(done, total)`` follows the
    local-resolution windows.

    Raises
    ------
    InputError
        Parameters out of range, or half maps that do not correlate at all.
    """
    from cryoset.recon.fsc import fourier_shell_correlation
    from cryoset.recon.validate import (
        angular_distribution,
        corrected_fsc,
        guinier_fit,
        local_resolution,
        reference_fsc,
        resolutions,
        sharpen,
    )

    check_params(p)
    h1 = np.asarray(half1, dtype=np.float64)
    h2 = np.asarray(half2, dtype=np.float64)
    v = float(voxel_size_a)
    n = h1.shape[0]
    average = 0.5 * (h1 + h2)
    curves: dict[str, CorrelationCurve] = {"unmasked": fourier_shell_correlation(h1, h2, voxel_size_a=v)}
    mask_info: dict[str, Any] = {"source": None}
    loose: NDArray[np.float32] | None = None
    m: NDArray[np.float32] | None = None
    randomise_from: int | None = None
    if mask is not None:
        m = np.asarray(mask, dtype=np.float32)
        mask_info = {"source": "given", "volume_fraction": float(m.mean())}
    elif p.auto_mask:
        m, loose, mask_info = _auto_masks(average, v, p)
    final = "unmasked"
    if m is not None:
        cf: CorrectedFsc = corrected_fsc(h1, h2, m, v, randomise_below_fsc=p.randomise_below_fsc, seed=p.seed)
        curves.update(masked=cf.masked, randomised=cf.randomised, corrected=cf.corrected)
        randomise_from = cf.randomise_from_shell
        final = "corrected"
        if loose is not None:
            cl = corrected_fsc(h1, h2, loose, v, randomise_below_fsc=p.randomise_below_fsc, seed=p.seed)
            curves.update(masked_loose=cl.masked, corrected_loose=cl.corrected)
    if reference is not None:
        curves["reference"] = reference_fsc(average, reference, v, mask=m)
    res = resolutions(curves[final])["0.143"]
    if not math.isfinite(res):
        raise InputError(None, "the half maps do not correlate: their FSC is below 0.143 from the first shell")
    weights = curves[final].correlation
    weighted = sharpen(average, v, fsc=weights)  # RELION fits the unmasked, FSC-weighted average
    guinier: GuinierFit | None
    guinier_note = None
    try:
        high = res if p.bfactor_high_a is None else max(p.bfactor_high_a, 2.0 * v)
        guinier = guinier_fit(weighted, v, high_a=high, low_a=p.bfactor_low_a)
    except ValueError as exc:
        guinier, guinier_note = None, str(exc)
    if p.bfactor_a2 is not None:
        bfactor, source = float(p.bfactor_a2), "given"
    elif guinier is not None:
        bfactor, source = guinier.bfactor_a2, "guinier"
    else:
        bfactor, source = 0.0, f"none ({guinier_note})"
    sharpened = sharpen(average, v, bfactor_a2=bfactor, fsc=weights, lowpass_a=res)
    sharpened_masked = (sharpened * m).astype(np.float32) if m is not None else sharpened
    angles = angular_distribution(rotations) if rotations is not None else None
    local = None
    if p.local_resolution:
        local = local_resolution(h1, h2, v, window_px=min(p.local_window_px, n), mask=m, progress=progress)
    summary: dict[str, Any] = {
        "box": n, "voxel_size_a": v, "nyquist_a": 2.0 * v,
        "resolution_a": res, "final_curve": final,
        "fsc": {name: {k: _finite(x) for k, x in resolutions(c).items()} for name, c in curves.items()},
        "randomise_from_shell": randomise_from,
        "randomise_from_a": None if randomise_from is None else n * v / randomise_from,
        "bfactor_a2": bfactor, "bfactor_source": source,
        "guinier": None if guinier is None else {"bfactor_a2": guinier.bfactor_a2, "correlation": guinier.correlation,
                                                 "low_a": guinier.low_a, "high_a": guinier.high_a,
                                                 "shells": int(guinier.fitted.sum())},
        "mask": mask_info,
        "parameters": asdict(p),
    }
    if angles is not None:
        summary["angular_distribution"] = angles.summary()
    if local is not None:
        q = np.percentile(local.resolution_a, [5, 50, 95]) if local.resolution_a.size else [math.nan] * 3
        summary["local_resolution"] = {"window_px": min(p.local_window_px, n), "windows": int(local.centres.shape[0]),
                                       "p5_a": _finite(q[0]), "median_a": _finite(q[1]), "p95_a": _finite(q[2])}
    return PostprocessResult(sharpened, sharpened_masked, m, loose, curves, final, res, bfactor, guinier,
                             angles, summary, None if local is None else local.map_a)


# ----------------------------------------------------------------------------- files


def _read_halves(half1: Path, half2: Path, permissive: bool) -> tuple[Any, Any, float]:
    from cryoset.io.mrc import read_map

    a = read_map(half1, permissive=permissive)
    b = read_map(half2, permissive=permissive)
    for path, m in ((half1, a), (half2, b)):
        if len(set(m.data.shape)) != 1 or m.data.shape[0] < 8:
            raise InputError(path, f"is not a cubic map of edge >= 8 (shape {m.data.shape})")
        if not np.allclose(m.voxel_size_a, m.voxel_size_a[0], rtol=1e-4):
            raise InputError(path, f"has anisotropic voxels {m.voxel_size_a} Å")
    if b.data.shape != a.data.shape:
        raise InputError(half2, f"shape {b.data.shape} differs from {half1.name}'s {a.data.shape}")
    if not np.allclose(b.voxel_size_a, a.voxel_size_a, rtol=1e-3):
        raise InputError(half2, f"voxel size {b.voxel_size_a[0]:.4f} Å differs from {half1.name}'s "
                                f"{a.voxel_size_a[0]:.4f} Å")
    return a, b, float(a.voxel_size_a[0])


def _read_mask(path: Path, shape: tuple[int, ...], voxel_size_a: float, permissive: bool) -> NDArray[np.float32]:
    from cryoset.io.mrc import read_map

    m = read_map(path, permissive=permissive)
    if m.data.shape != shape:
        raise InputError(path, f"mask shape {m.data.shape} differs from the half maps' {shape}")
    if not np.allclose(m.voxel_size_a, voxel_size_a, rtol=1e-3):
        raise InputError(path, f"mask voxel size {m.voxel_size_a[0]:.4f} Å differs from the half maps' "
                               f"{voxel_size_a:.4f} Å")
    lo, hi = float(np.nanmin(m.data)), float(np.nanmax(m.data))
    if not (np.isfinite(m.data).all() and lo >= -1e-3 and hi <= 1.0 + 1e-3):
        raise InputError(path, f"mask values must lie in [0, 1] (found {lo:.4g} … {hi:.4g})")
    if hi <= 0:
        raise InputError(path, "the mask is empty (all zero)")
    return np.clip(m.data, 0.0, 1.0).astype(np.float32)


def _read_rotations(path: Path, permissive: bool) -> NDArray[np.float64]:
    from cryoset.geometry import euler_to_matrix
    from cryoset.io.particles import read_particles

    t = read_particles(path, permissive=permissive, require=("rot_deg", "tilt_deg", "psi_deg")).table
    ang = t[["rot_deg", "tilt_deg", "psi_deg"]].to_numpy(np.float64)
    if len(ang) == 0:
        raise InputError(path, "holds no particles")
    if not np.isfinite(ang).all():
        raise InputError(path, "has missing or non-finite angles (rlnAngleRot/Tilt/Psi)")
    return euler_to_matrix(ang[:, 0], ang[:, 1], ang[:, 2])


def _fsc_table(result: PostprocessResult) -> Any:
    import pandas as pd

    first = next(iter(result.curves.values()))
    with np.errstate(divide="ignore"):
        res = np.where(first.freq_per_a > 0, 1.0 / np.where(first.freq_per_a > 0, first.freq_per_a, 1.0), np.inf)
    cols: dict[str, Any] = {"shell": np.arange(first.freq_per_a.size), "freq_per_a": first.freq_per_a,
                            "resolution_a": res}
    for name, c in result.curves.items():
        cols[f"fsc_{name}"] = c.correlation
    return pd.DataFrame(cols)


_LABELS = {"unmasked": "unmasked", "masked": "masked", "randomised": "phase-randomised (masked)",
           "corrected": "corrected", "masked_loose": "masked, loose", "corrected_loose": "corrected, loose",
           "reference": "vs reference"}


def _html(out: Path, result: PostprocessResult, figures: list[tuple[str, str]], prov: dict[str, Any]) -> None:
    import pandas as pd

    from cryoset.report.html import Report

    rep = Report("Post-processing and validation")
    s = result.summary
    rep.paragraph(f"Resolution {s['resolution_a']:.2f} Å (FSC 0.143, {s['final_curve']}); "
                  f"B-factor {s['bfactor_a2']:.1f} Å² ({s['bfactor_source']}); voxel {s['voxel_size_a']:.3f} Å, "
                  f"box {s['box']}.")
    rows = [{"curve": _LABELS.get(k, k), "0.143 (Å)": v["0.143"], "0.5 (Å)": v["0.5"]} for k, v in s["fsc"].items()]
    rep.heading("Resolutions")
    rep.table(pd.DataFrame(rows).astype({"0.143 (Å)": float, "0.5 (Å)": float}), float_format="{:.2f}")
    rep.heading("Mask")
    rep.mapping({k: v for k, v in s["mask"].items()})
    if "local_resolution" in s:
        rep.heading("Local resolution")
        rep.mapping(dict(s["local_resolution"]))
    rep.heading("Figures")
    for name, caption in figures:
        rep.figure(out / name, caption, relative_to=out)
    rep.provenance(prov)
    rep.write(out / "index.html")


def run_postprocess(half1: Path, half2: Path, out_dir: Path, p: PostprocessParams = PostprocessParams(), *,
                    mask: Path | None = None, reference: Path | None = None, particles: Path | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """Post-process two half maps into ``out_dir`` (module docstring); returns the summary.

    Raises
    ------
    InputError
        Bad inputs or parameters (before anything is written).
    """
    from rich.console import Console
    from rich.progress import Progress

    from cryoset.io.atomic import staged_directory, write_text_atomic
    from cryoset.io.mrc import read_map, write_map
    from cryoset.provenance import make_provenance, write_provenance
    from cryoset.recon.validate import align_reference
    from cryoset.report.validation import plot_angular_distribution, plot_fsc_curves, plot_guinier

    check_params(p)
    if mask is not None and p.auto_mask:
        raise InputError("--mask", "give either --mask or --auto-mask, not both")
    a, b, v = _read_halves(half1, half2, p.permissive)
    n = a.data.shape[0]
    m = _read_mask(mask, a.data.shape, v, p.permissive) if mask is not None else None
    ref = None
    if reference is not None:
        rmap = read_map(reference, permissive=p.permissive)
        ref = align_reference(rmap.data, rmap.voxel_size_a, n, v)
    rotations = _read_rotations(particles, p.permissive) if particles is not None else None
    with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar:
        task = bar.add_task("post-processing", total=None)
        def advance(done: int, total: int) -> None:
            bar.update(task, description="local resolution", completed=done, total=total)

        result = postprocess_maps(a.data, b.data, v, p, mask=m, reference=ref, rotations=rotations,
                                  progress=advance)
        bar.update(task, description="writing", total=None)
        inputs = [x for x in (half1, half2, mask, reference, particles) if x is not None]
        record = {**asdict(p), "mask": None if mask is None else str(mask),
                  "reference": None if reference is None else str(reference)}
        prov = make_provenance("postprocess", record, inputs)
        summary = dict(result.summary)
        summary.update(half1=str(half1), half2=str(half2), reference=None if reference is None else str(reference),
                       particles=None if particles is None else str(particles))
        if mask is not None:
            summary["mask"] = {**summary["mask"], "path": str(mask)}
        with staged_directory(out_dir) as tmp:
            written: list[str] = []

            def put_map(name: str, data: NDArray[np.float32]) -> None:
                write_map(tmp / name, data, (v, v, v), provenance=prov)
                write_provenance(tmp / name, prov)
                written.append(name)

            put_map("postprocess.mrc", result.sharpened)
            put_map("postprocess_masked.mrc", result.sharpened_masked)
            if result.mask is not None:
                put_map("mask.mrc", result.mask)
            if result.mask_loose is not None:
                put_map("mask_loose.mrc", result.mask_loose)
            if result.local_resolution_a is not None:
                put_map("local_resolution.mrc", result.local_resolution_a)
            _fsc_table(result).to_csv(tmp / "postprocess_fsc.csv", index=False)
            written.append("postprocess_fsc.csv")
            curves = [(_LABELS[k], c) for k, c in result.curves.items() if k != "randomised"]
            if "randomised" in result.curves:
                curves.append((_LABELS["randomised"], result.curves["randomised"]))
            plot_fsc_curves(curves, tmp / "postprocess_fsc.png")
            figures = [("postprocess_fsc.png", "FSC curves (dashed: 0.143 and 0.5)")]
            if result.guinier is not None:
                plot_guinier([("average, FSC-weighted", result.guinier)], tmp / "postprocess_guinier.png")
                figures.append(("postprocess_guinier.png", "Guinier plot and B-factor fit"))
            if result.angles is not None:
                plot_angular_distribution(result.angles, tmp / "angular_distribution.png")
                figures.append(("angular_distribution.png", "Angular distribution of the particles"))
            written += [f for f, _ in figures]
            summary["outputs"] = sorted([*written, "postprocess.json", "index.html"])
            clean = json.loads(json.dumps(summary, default=str), parse_constant=lambda _c: None)
            write_text_atomic(tmp / "postprocess.json", json.dumps(clean, indent=2, allow_nan=False) + "\n")
            write_provenance(tmp / "postprocess.json", prov)
            _html(tmp, result, figures, prov)
        bar.update(task, completed=1, total=1)
    return clean | {"out_dir": str(out_dir)}


def run_mask_create(map_path: Path, out: Path, p: PostprocessParams = PostprocessParams()) -> dict[str, Any]:
    """A soft auto-mask of the map at ``map_path`` (tight: ``p.extend_px``) written to ``out``."""
    from cryoset.io.mrc import read_map, write_map
    from cryoset.provenance import make_provenance, write_provenance
    from cryoset.recon.masks import auto_mask

    check_params(p)
    if out.suffix.lower() not in (".mrc", ".map"):
        raise InputError(out, "output mask must end in .mrc or .map")
    mp = read_map(map_path, permissive=p.permissive)
    if len(set(mp.data.shape)) != 1 or not np.allclose(mp.voxel_size_a, mp.voxel_size_a[0], rtol=1e-4):
        raise InputError(map_path, f"is not a cubic map with isotropic voxels (shape {mp.data.shape}, "
                                   f"voxel {mp.voxel_size_a} Å)")
    v = float(mp.voxel_size_a[0])
    try:
        made = auto_mask(mp.data, v, lowpass_a=p.mask_lowpass_a, threshold=p.mask_threshold,
                         extend_px=p.extend_px, soft_edge_px=p.soft_edge_px)
    except ValueError as exc:
        raise InputError("--mask-threshold", str(exc)) from None
    record = {"threshold": made.threshold, "lowpass_a": p.mask_lowpass_a, "extend_px": p.extend_px,
              "soft_edge_px": p.soft_edge_px}
    prov = make_provenance("mask-create", record, [map_path])
    write_map(out, made.mask, mp.voxel_size_a, mp.origin_a, provenance=prov)
    write_provenance(out, prov)
    return {**record, "seed_fraction": made.seed_fraction, "volume_fraction": float(made.mask.mean()),
            "box": mp.data.shape[0], "voxel_size_a": v, "mask": str(out)}
