"""Batch CTF estimation of micrograph files: reading, fitting, per-micrograph plots, outputs.

This module joins IO and the numeric kernels for the ``cryoset ctf`` command:
:func:`process_micrograph` handles one file (and is what the process pool runs),
:func:`micrographs_from_star` reads a RELION micrograph STAR, and the ``write_*`` helpers
write the RELION micrograph STAR, the CSV tables and ``failed.csv``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoset.ctf.estimate import EstimateOptions, estimate_ctf
from cryoset.ctf.model import CTFParams
from cryoset.ctf.patches import DefocusSurface, LocalCTF, estimate_patches
from cryoset.errors import InputError
from cryoset.io.atomic import atomic_path

__all__ = [
    "MicrographInput",
    "RunSettings",
    "local_ctf_from_result",
    "micrographs_from_star",
    "process_micrograph",
    "process_micrograph_safe",
    "write_failed_csv",
    "write_landscape_csv",
    "write_micrograph_star",
    "write_results_csv",
]


@dataclass(frozen=True)
class MicrographInput:
    """One micrograph to process, with optics from a STAR file where known."""

    path: str
    name: str
    pixel_size_a: float | None = None
    voltage_kv: float | None = None
    cs_mm: float | None = None
    amplitude_contrast: float | None = None
    optics_group: int = 1


@dataclass(frozen=True)
class RunSettings:
    """Settings shared by every micrograph of a run (flags override STAR optics)."""

    pixel_size_a: float | None = None
    voltage_kv: float | None = None
    cs_mm: float | None = None
    amplitude_contrast: float | None = None
    patches: tuple[int, int] | None = None
    surface: str = "plane"
    options: EstimateOptions = field(default_factory=EstimateOptions)
    plots_dir: str | None = None
    fft_workers: int = 1


def _first(*values: float | None, default: float) -> float:
    for v in values:
        if v is not None:
            return float(v)
    return default


def process_micrograph(item: MicrographInput, settings: RunSettings) -> dict[str, Any]:
    """Estimate the CTF of one micrograph file; write its plots when ``plots_dir`` is set.

    Returns
    -------
    dict
        JSON-friendly record: ``micrograph``, ``path``, ``pixel_size_a``, the CTF parameters,
        ``ctf_astigmatism_a``, ``fit_resolution_a``, ``figure_of_merit``, ``ice_ring_ratio``,
        ``band_low_a``/``band_high_a``, ``n_tiles``, ``bin_factor``, ``seconds``, and in patch
        mode ``patches`` (list of rows), ``surface_kind``, ``surface_coefficients``, ``shape``.

    Raises
    ------
    InputError
        Naming the file, for unreadable or unusable micrographs.
    """
    from cryoset.io.images import read_image

    start = time.perf_counter()
    pixel = settings.pixel_size_a if settings.pixel_size_a is not None else item.pixel_size_a
    try:
        image = read_image(item.path, pixel_size_a=pixel)
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(item.path, f"cannot read the micrograph ({exc})") from None
    if image.pixel_size_a is None:
        raise InputError(item.path, "no pixel size (give --pixel-size-a for PNG/TIFF/JPEG)")
    voltage = _first(settings.voltage_kv, item.voltage_kv, default=300.0)
    cs = _first(settings.cs_mm, item.cs_mm, default=2.7)
    ac = _first(settings.amplitude_contrast, item.amplitude_contrast, default=0.1)
    try:
        CTFParams(1.0, 1.0, 0.0, voltage, cs, ac)
        est = estimate_ctf(
            image.data, image.pixel_size_a, voltage_kv=voltage, cs_mm=cs,
            amplitude_contrast=ac, options=settings.options, workers=settings.fft_workers,
        )  # fmt: skip
        patch_fit = None
        if settings.patches is not None:
            patch_fit = estimate_patches(
                image.data, image.pixel_size_a, settings.patches, voltage_kv=voltage, cs_mm=cs,
                amplitude_contrast=ac, options=settings.options, global_estimate=est,
                surface=settings.surface, workers=settings.fft_workers,
            )  # fmt: skip
    except InputError as exc:
        raise InputError(item.path, exc.message) from None
    except ValueError as exc:
        raise InputError(item.path, str(exc)) from None
    p = est.params
    record: dict[str, Any] = {
        "micrograph": item.name,
        "path": item.path,
        "optics_group": item.optics_group,
        # MRC headers store float32: 1.3 reads back as 1.2999999523…; keep 6 significant digits.
        "pixel_size_a": float(f"{image.pixel_size_a:.6g}"),
        "voltage_kv": voltage,
        "cs_mm": cs,
        "amplitude_contrast": ac,
        "defocus_u_a": p.defocus_u_a,
        "defocus_v_a": p.defocus_v_a,
        "defocus_angle_deg": p.defocus_angle_deg,
        "ctf_astigmatism_a": p.astigmatism_a,
        "phase_shift_deg": p.phase_shift_deg,
        "fit_resolution_a": est.fit_resolution_a,
        "figure_of_merit": est.figure_of_merit,
        "ice_ring_ratio": est.ice_ring_ratio,
        "band_low_a": est.band_a[0],
        "band_high_a": est.band_a[1],
        "n_tiles": est.spectrum.n_tiles,
        "bin_factor": est.spectrum.bin_factor,
        "shape": [int(image.data.shape[0]), int(image.data.shape[1])],
    }
    if patch_fit is not None:
        record["patches"] = patch_fit.patches.to_dict(orient="records")
        record["surface_kind"] = patch_fit.local.surface.kind
        record["surface_coefficients"] = list(patch_fit.local.surface.coefficients)
        gx, gy = patch_fit.local.surface.gradient_a_per_px()
        record["defocus_gradient_x_a_per_px"] = gx
        record["defocus_gradient_y_a_per_px"] = gy
    if settings.plots_dir is not None:
        from cryoset.report.ctf_plots import plot_ctf_fit, plot_defocus_landscape

        stem = Path(item.name).stem
        plots = Path(settings.plots_dir)
        plot_ctf_fit(est, plots / f"{stem}_ctf.png", title=item.name)
        if patch_fit is not None:
            plot_defocus_landscape(
                patch_fit.patches, patch_fit.local.surface, plots / f"{stem}_landscape.png", title=item.name
            )
    record["seconds"] = time.perf_counter() - start
    return record


def process_micrograph_safe(item: MicrographInput, settings: RunSettings) -> tuple[bool, Any]:
    """:func:`process_micrograph` for a process pool: ``(True, record)`` or ``(False, reason)``.

    Exceptions are turned into values because :class:`InputError` does not survive
    pickling across processes; numeric failures on strange data are reported, not raised.
    """
    try:
        return True, process_micrograph(item, settings)
    except InputError as exc:
        return False, exc.message
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        return False, f"estimation failed ({type(exc).__name__}: {exc})"


def local_ctf_from_result(record: Mapping[str, Any]) -> LocalCTF:
    """Rebuild the :class:`LocalCTF` of a :func:`process_micrograph` record.

    Without patches the surface is the constant global mean defocus.
    """
    params = CTFParams(
        float(record["defocus_u_a"]), float(record["defocus_v_a"]), float(record["defocus_angle_deg"]),
        float(record["voltage_kv"]), float(record["cs_mm"]), float(record["amplitude_contrast"]),
        float(record["phase_shift_deg"]),
    )  # fmt: skip
    shape = (int(record["shape"][0]), int(record["shape"][1]))
    if "surface_kind" in record:
        surface = DefocusSurface(
            str(record["surface_kind"]), tuple(float(c) for c in record["surface_coefficients"]), shape
        )
    else:
        surface = DefocusSurface("constant", (params.defocus_mean_a,), shape)
    return LocalCTF(params, surface)


def micrographs_from_star(path: str | os.PathLike[str]) -> list[MicrographInput]:
    """Micrographs and optics from a RELION micrograph STAR file (3.0 or 3.1 with optics).

    Relative ``rlnMicrographName`` paths are resolved against the current directory (the
    RELION project) and, failing that, against the STAR file's directory.
    """
    from cryoset.io.star import read_star

    star = Path(path)
    blocks = read_star(star)
    table = next((df for df in blocks.values() if "rlnMicrographName" in df.columns), None)
    if table is None:
        raise InputError(star, "no table with an rlnMicrographName column")
    optics: dict[int, dict[str, float | None]] = {}
    opt = blocks.get("optics")
    if opt is not None and "rlnOpticsGroup" in opt.columns:
        for _, row in opt.iterrows():

            def get(col: str, row: pd.Series = row) -> float | None:
                return float(row[col]) if col in row.index and pd.notna(row[col]) else None

            pixel = get("rlnMicrographPixelSize")
            if pixel is None:
                pixel = get("rlnMicrographOriginalPixelSize") or get("rlnImagePixelSize")
            optics[int(row["rlnOpticsGroup"])] = {
                "pixel": pixel,
                "voltage": get("rlnVoltage"),
                "cs": get("rlnSphericalAberration"),
                "ac": get("rlnAmplitudeContrast"),
            }
    items = []
    for _, row in table.iterrows():
        name = str(row["rlnMicrographName"])
        candidate = Path(name)
        if not candidate.is_absolute() and not candidate.exists() and (star.parent / name).exists():
            candidate = star.parent / name
        group = int(row["rlnOpticsGroup"]) if "rlnOpticsGroup" in table.columns else 1
        o = optics.get(group, {})

        def value(key: str, col: str, row: pd.Series = row, o: dict[str, float | None] = o) -> float | None:
            if col in table.columns and pd.notna(row[col]):
                return float(row[col])
            return o.get(key)

        items.append(
            MicrographInput(
                path=str(candidate),
                name=name,
                pixel_size_a=value("pixel", "rlnMicrographPixelSize"),
                voltage_kv=value("voltage", "rlnVoltage"),
                cs_mm=value("cs", "rlnSphericalAberration"),
                amplitude_contrast=value("ac", "rlnAmplitudeContrast"),
                optics_group=group,
            )
        )
    return items


def write_micrograph_star(
    path: str | os.PathLike[str], records: Sequence[Mapping[str, Any]], *, comment: str | None = None
) -> Path:
    """Write a RELION 3.1 micrograph STAR (``data_optics`` + ``data_micrographs``).

    One optics group per distinct (pixel size, voltage, Cs, amplitude contrast). Columns:
    ``rlnMicrographName``, ``rlnOpticsGroup``, ``rlnDefocusU/V/Angle``,
    ``rlnCtfAstigmatism``, ``rlnCtfFigureOfMerit``, ``rlnCtfMaxResolution``, ``rlnPhaseShift``.
    """
    from cryoset.io.star import LOOP_ATTR, write_star

    keys: dict[tuple[float, float, float, float], int] = {}
    groups = []
    for r in records:
        key = (float(r["pixel_size_a"]), float(r["voltage_kv"]), float(r["cs_mm"]), float(r["amplitude_contrast"]))
        if key not in keys:
            keys[key] = len(keys) + 1
        groups.append(keys[key])
    optics = pd.DataFrame(
        {
            "rlnOpticsGroupName": [f"opticsGroup{g}" for g in keys.values()],
            "rlnOpticsGroup": list(keys.values()),
            "rlnMicrographPixelSize": [k[0] for k in keys],
            "rlnVoltage": [k[1] for k in keys],
            "rlnSphericalAberration": [k[2] for k in keys],
            "rlnAmplitudeContrast": [k[3] for k in keys],
        }
    )
    optics.attrs[LOOP_ATTR] = True
    mics = pd.DataFrame(
        {
            "rlnMicrographName": [str(r["micrograph"]) for r in records],
            "rlnOpticsGroup": groups,
            "rlnDefocusU": [float(r["defocus_u_a"]) for r in records],
            "rlnDefocusV": [float(r["defocus_v_a"]) for r in records],
            "rlnDefocusAngle": [float(r["defocus_angle_deg"]) for r in records],
            "rlnCtfAstigmatism": [float(r["ctf_astigmatism_a"]) for r in records],
            "rlnCtfFigureOfMerit": [float(r["figure_of_merit"]) for r in records],
            "rlnCtfMaxResolution": [float(r["fit_resolution_a"]) for r in records],
            "rlnPhaseShift": [float(r["phase_shift_deg"]) for r in records],
        }
    )
    mics.attrs[LOOP_ATTR] = True
    return write_star(path, {"optics": optics, "micrographs": mics}, comment=comment, version=30001)


_RESULT_COLUMNS = [
    "micrograph", "path", "optics_group", "pixel_size_a", "voltage_kv", "cs_mm", "amplitude_contrast",
    "defocus_u_a", "defocus_v_a", "defocus_angle_deg", "ctf_astigmatism_a", "phase_shift_deg",
    "fit_resolution_a", "figure_of_merit", "ice_ring_ratio", "band_low_a", "band_high_a",
    "n_tiles", "bin_factor", "surface_kind", "defocus_gradient_x_a_per_px",
    "defocus_gradient_y_a_per_px", "seconds",
]  # fmt: skip


def _write_csv(path: str | os.PathLike[str], df: pd.DataFrame) -> Path:
    out = Path(path)
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    return out


def write_results_csv(path: str | os.PathLike[str], records: Sequence[Mapping[str, Any]]) -> Path:
    """One row per micrograph with every fitted quantity (``ctf.csv``)."""
    rows = [{c: r.get(c, math.nan) for c in _RESULT_COLUMNS} for r in records]
    return _write_csv(path, pd.DataFrame(rows, columns=_RESULT_COLUMNS))


def write_landscape_csv(path: str | os.PathLike[str], records: Sequence[Mapping[str, Any]]) -> Path:
    """The defocus landscape: one row per patch of every micrograph (``defocus_landscape.csv``)."""
    frames = []
    for r in records:
        if "patches" not in r:
            continue
        df = pd.DataFrame(r["patches"])
        df.insert(0, "micrograph", r["micrograph"])
        frames.append(df)
    columns = [
        "micrograph", "patch_col", "patch_row", "x_px", "y_px", "defocus_a", "figure_of_merit",
        "used", "surface_defocus_a", "error",
    ]  # fmt: skip
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return _write_csv(path, table[columns])


def write_failed_csv(path: str | os.PathLike[str], failures: Sequence[tuple[str, str]]) -> Path:
    """``failed.csv``: ``micrograph,reason`` for every micrograph that could not be processed."""
    df = pd.DataFrame(list(failures), columns=["micrograph", "reason"])
    return _write_csv(path, df)


def stable_float(value: Any) -> float:
    """A float for JSON (NaN stays NaN)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def finite_or_none(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    v = stable_float(value)
    return v if np.isfinite(v) else None
