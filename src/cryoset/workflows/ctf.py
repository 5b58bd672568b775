"""The CTF step: micrograph files in, CTF tables, STAR, landscape and plots out.

:func:`run_ctf` is ``cryoset ctf`` and the build's ``ctf`` stage: it reads the micrographs
(MRC, PNG/TIFF with a pixel size, or a RELION micrograph STAR), fits each one
(:func:`process_micrograph`, what the process pool runs), and writes in ``out``:

- ``micrographs_ctf.star`` — RELION 3.1 micrograph STAR;
- ``ctf.csv`` — every fitted quantity per micrograph;
- ``defocus_surfaces.json`` — each micrograph's defocus surface (constant without patches), so
  that later steps can give every particle its local defocus (:func:`local_ctfs`);
- ``defocus_landscape.csv`` — with patches: per-patch defoci and the surface;
- ``picks_local_defocus.csv`` — with a picks table: the table with local defocus columns;
- ``plots/<name>_ctf.png`` (and ``_landscape.png``), ``failed.csv``, ``provenance.json``.

Every parameter, with its one default, is a field of :class:`CtfParams`; the command's
options and the build's ``ctf:`` section are both made from it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoset.ctf.estimate import EstimateOptions, estimate_ctf
from cryoset.ctf.model import CTFParams
from cryoset.ctf.patches import DefocusSurface, LocalCTF, estimate_patches
from cryoset.errors import InputError
from cryoset.io.atomic import atomic_path
from cryoset.workflows.params import CtfParams

__all__ = [
    "CtfOutcome",
    "CtfParams",
    "MicrographInput",
    "RunSettings",
    "local_ctf_from_result",
    "local_ctfs",
    "micrographs_from_star",
    "process_micrograph",
    "process_micrograph_safe",
    "run_ctf",
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
    params = CTFParams.from_row(record)
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

    Read by :func:`cryoset.io.micrograph_star.read_micrograph_star`: relative
    ``rlnMicrographName`` paths are resolved against the current directory (the RELION
    project) and, failing that, against the STAR file's directory.
    """
    from cryoset.io.micrograph_star import MICROGRAPH_PATH, read_micrograph_star

    table = read_micrograph_star(path)

    def value(v: Any) -> float | None:
        return None if pd.isna(v) else float(v)

    return [
        MicrographInput(
            path=str(row[MICROGRAPH_PATH]),
            name=str(row["micrograph"]),
            pixel_size_a=value(row["pixel_size_a"]),
            voltage_kv=value(row["voltage_kv"]),
            cs_mm=value(row["cs_mm"]),
            amplitude_contrast=value(row["amplitude_contrast"]),
            optics_group=int(row["optics_group"]),
        )
        for row in table.to_dict("records")
    ]


#: Columns of the micrograph STAR written by :func:`write_micrograph_star`, in order.
_STAR_COLUMNS = (
    "micrograph", "pixel_size_a", "voltage_kv", "cs_mm", "amplitude_contrast", "defocus_u_a",
    "defocus_v_a", "defocus_angle_deg", "ctf_astigmatism_a", "figure_of_merit", "fit_resolution_a",
    "phase_shift_deg",
)  # fmt: skip


def write_micrograph_star(
    path: str | os.PathLike[str], records: Sequence[Mapping[str, Any]], *, comment: str | None = None
) -> Path:
    """Write a RELION 3.1 micrograph STAR (``data_optics`` + ``data_micrographs``).

    One optics group per distinct (pixel size, voltage, Cs, amplitude contrast). Columns:
    ``rlnMicrographName``, ``rlnOpticsGroup``, ``rlnDefocusU/V/Angle``,
    ``rlnCtfAstigmatism``, ``rlnCtfFigureOfMerit``, ``rlnCtfMaxResolution``, ``rlnPhaseShift``
    (written by :func:`cryoset.io.micrograph_star.write_micrograph_star`).
    """
    from cryoset.io.micrograph_star import write_micrograph_star as write_star_table

    table = pd.DataFrame(
        {c: [r[c] if c == "micrograph" else float(r[c]) for r in records] for c in _STAR_COLUMNS},
        columns=list(_STAR_COLUMNS),
    )
    return write_star_table(path, table, comment=comment)


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


# ------------------------------------------------------------------------------ the step


@dataclass
class CtfOutcome:
    """What :func:`run_ctf` wrote: the records of the fitted micrographs, the failures."""

    out: Path
    records: list[dict[str, Any]]
    failures: list[tuple[str, str]]
    star_path: Path | None = None
    annotated_path: Path | None = None


class _NothingFitted(Exception):
    """Every micrograph failed: the staged output is discarded."""


SURFACES_FILE = "defocus_surfaces.json"


def _inputs(paths: Sequence[Path]) -> list[MicrographInput]:
    items: list[MicrographInput] = []
    for p in paths:
        if p.suffix.lower() == ".star":
            if not p.exists():
                raise InputError(p, "no such file")
            items.extend(micrographs_from_star(p))
        else:
            items.append(MicrographInput(path=str(p), name=p.name))
    return items


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise InputError(path, "no such file")
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the table ({exc})") from None
    missing = [c for c in ("micrograph", "x_px", "y_px") if c not in table.columns]
    if missing:
        raise InputError(path, f"lacks column(s) {', '.join(missing)}")
    return table


def run_ctf(micrographs: Sequence[Path], out: Path, params: CtfParams, *, picks: Path | None = None,
            argv: list[str] | None = None, progress: bool = True) -> CtfOutcome:
    """Fit the CTF of micrograph files and write the step's products in ``out``.

    Micrographs that cannot be processed are named on stderr and listed in ``failed.csv``;
    when every one fails nothing is written and the outcome has no records.

    Raises
    ------
    InputError
        Bad parameters or unreadable inputs (before anything is written).
    """
    import concurrent.futures as cf
    import multiprocessing

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cryoset.ctf.patches import SURFACE_KINDS, add_local_defocus, parse_patch_grid
    from cryoset.io.atomic import staged_directory
    from cryoset.provenance import make_provenance, write_provenance

    jobs = params.workers
    if jobs < 1:
        raise InputError("--workers", f"must be at least 1, got {jobs}")
    if params.pixel_size_a is not None and not params.pixel_size_a > 0:
        raise InputError("--pixel-size-a", f"must be positive, got {params.pixel_size_a}")
    if params.surface not in SURFACE_KINDS:
        raise InputError("--surface", f"must be one of {', '.join(SURFACE_KINDS)}, got {params.surface!r}")
    grid = parse_patch_grid(params.patches) if params.patches else None
    try:
        options = EstimateOptions(
            tile_px=params.tile_px, min_resolution_a=params.min_resolution_a,
            max_resolution_a=params.max_resolution_a, defocus_min_a=params.defocus_min_a,
            defocus_max_a=params.defocus_max_a, fit_phase_shift=params.phase_shift,
        )  # fmt: skip
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    picks_table = _read_table(picks) if picks is not None else None
    items = _inputs(micrographs)
    if not items:
        raise InputError(None, "no micrographs given")
    outcome = CtfOutcome(out=out, records=[], failures=[])
    # everything goes to a temporary folder first: when every micrograph is rejected, no output
    # folder is left behind; plots of earlier runs in OUT/plots are kept
    try:
        with staged_directory(out, merge=("plots",)) as staged:
            cpus = os.cpu_count() or 1
            settings = RunSettings(
                pixel_size_a=params.pixel_size_a, voltage_kv=params.voltage_kv, cs_mm=params.cs_mm,
                amplitude_contrast=params.amplitude_contrast, patches=grid, surface=params.surface,
                options=options, plots_dir=str(staged / "plots") if params.plots else None,
                fft_workers=max(1, cpus // jobs),
            )  # fmt: skip
            results: dict[int, dict[str, Any]] = {}
            failures = outcome.failures
            console = Console(stderr=True)
            with Progress(
                TextColumn("ctf"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=console, transient=True, disable=not (progress and console.is_terminal),
            ) as bar:  # fmt: skip
                task = bar.add_task("ctf", total=len(items))

                def record(i: int, result: tuple[bool, Any]) -> None:
                    ok, value = result
                    if ok:
                        results[i] = value
                    else:
                        failures.append((items[i].name, str(value)))
                        print(f"error: {items[i].path}: {value}", file=sys.stderr)
                    bar.advance(task)

                if jobs == 1 or len(items) == 1:
                    for i, item in enumerate(items):
                        record(i, process_micrograph_safe(item, settings))
                else:
                    ctx = multiprocessing.get_context("spawn")
                    with cf.ProcessPoolExecutor(max_workers=min(jobs, len(items)), mp_context=ctx) as pool:
                        futures = {pool.submit(process_micrograph_safe, item, settings): i
                                   for i, item in enumerate(items)}
                        for fut in cf.as_completed(futures):
                            record(futures[fut], fut.result())

            ordered = [results[i] for i in sorted(results)]
            if not ordered:  # every micrograph failed (each said why on stderr): write nothing
                raise _NothingFitted
            outcome.records = ordered
            prov = make_provenance(
                "ctf",
                {
                    "pixel_size_a": params.pixel_size_a, "voltage_kv": params.voltage_kv,
                    "cs_mm": params.cs_mm, "amplitude_contrast": params.amplitude_contrast,
                    "patches": params.patches, "surface": params.surface,
                    "options": asdict(options), "micrographs": [it.path for it in items],
                },
                inputs=[Path(it.path) for it in items if Path(it.path).is_file()]
                + [p for p in micrographs if p.suffix.lower() == ".star"],
                argv=argv,
            )  # fmt: skip
            comment = (f"written by cryoset {prov['cryoset_version']} ctf ({prov['created_utc']}); "
                       "see provenance.json")
            outcome.star_path = out / write_micrograph_star(staged / "micrographs_ctf.star", ordered,
                                                            comment=comment).name
            write_results_csv(staged / "ctf.csv", ordered)
            write_surfaces_json(staged / SURFACES_FILE, ordered)
            if grid is not None:
                write_landscape_csv(staged / "defocus_landscape.csv", ordered)
            write_failed_csv(staged / "failed.csv", failures)
            if picks_table is not None:
                local = {r["micrograph"]: local_ctf_from_result(r) for r in ordered}
                annotated = add_local_defocus(picks_table, local)
                outcome.annotated_path = out / "picks_local_defocus.csv"
                with atomic_path(staged / outcome.annotated_path.name) as tmp:
                    annotated.to_csv(tmp, index=False)
            write_provenance(staged, prov)
    except _NothingFitted:
        outcome.records = []
    return outcome


def write_surfaces_json(path: str | os.PathLike[str], records: Sequence[Mapping[str, Any]]) -> Path:
    """``defocus_surfaces.json``: per micrograph, what :func:`local_ctf_from_result` needs."""
    keys = ("micrograph", "defocus_u_a", "defocus_v_a", "defocus_angle_deg", "voltage_kv", "cs_mm",
            "amplitude_contrast", "phase_shift_deg", "shape", "surface_kind", "surface_coefficients")
    rows = [{k: r[k] for k in keys if k in r} for r in records]
    out = Path(path)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(rows, indent=1) + "\n")
    return out


def local_ctfs(ctf_dir: str | os.PathLike[str]) -> dict[str, LocalCTF]:
    """The local CTF (defocus surface) of every micrograph fitted by :func:`run_ctf` in ``ctf_dir``."""
    path = Path(ctf_dir) / SURFACES_FILE
    if not path.is_file():
        raise InputError(path, "no such file (written by cryoset ctf)")
    try:
        rows = json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(path, f"is not valid JSON ({exc})") from None
    return {str(r["micrograph"]): local_ctf_from_result(r) for r in rows}

