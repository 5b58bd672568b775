"""The extraction step, ``cryoset extract`` and the build's ``extract`` stage: micrographs and
coordinate files in; ``OUT/<micrograph>.mrcs`` stacks, ``particles.star`` (RELION 3.1),
``particles.csv`` (CryoVirusDB), ``false_positives.csv`` and ``provenance.json`` out.

:func:`run_extract` takes one of two routes to the same files, byte for byte (apart from the
provenance record's time stamp and command line):

* the **fast path** (numpy and the standard library; no pandas) for plain inputs: no CTF
  (``--ctf``/``--phase-flip``), RELION coordinate STAR files whose loop holds only
  ``rlnCoordinateX/Y`` and optionally ``rlnMicrographName`` and ``rlnAutopickFigureOfMerit``,
  every pick on its micrograph, every micrograph with picks and the same pixel size, and an
  earlier step's ``false_positives.csv`` beside the picks (``cryoset pick`` writes one) only
  when it is plain (CryoVirusDB columns, plain numbers; its rows are carried into ours, as the
  table path carries them). Coordinates are read by
  :func:`cryoset.io.lean.read_star_blocks`, particles cut by
  :func:`cryoset.particles.extract.extract_boxes`, and the STAR and CSV files written by
  :mod:`cryoset.io.lean`. Importing pandas costs ~0.4 s, more than ``relion_preprocess
  --extract`` takes for a small data set (``benchmarks/bench_extract.py``);
* the **table path** (:func:`cryoset.workflows.pick.extract_tables`, pandas) for everything
  else: local or micrograph CTF and phase flipping, any coordinate format, extra coordinate
  columns, mixed pixel sizes, and every input error (which it reports).

``tests/workflows/test_extract.py`` runs both routes on the same inputs and compares the files.
"""

from __future__ import annotations

import json
import math
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryoset.errors import InputError
from cryoset.io.lean import COORDINATE_SUFFIXES
from cryoset.workflows.params import ExtractParams

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = ["ExtractOutcome", "ExtractParams", "check_extract_params", "coord_files", "micrograph_key",
           "read_micrograph", "run_extract"]

_IMAGE_SUFFIXES = (".mrc", ".mrcs", ".map", ".png", ".tif", ".tiff", ".jpg", ".jpeg", ".gz", ".bz2")

#: Labels of a coordinate STAR loop the fast path handles (anything else: the table path).
_LEAN_LABELS = frozenset({"rlnCoordinateX", "rlnCoordinateY", "rlnMicrographName", "rlnAutopickFigureOfMerit"})
#: "No score" values of coordinate files (as :mod:`cryoset.io.coords`).
_SENTINELS = (-999.0, -9999.0)
#: Slack beyond the micrograph's pixel area before a pick is outside (as :mod:`cryoset.io.coords`).
_EDGE_TOLERANCE_PX = 0.5


def progress_bar(enabled: bool = True) -> Any:
    """The rich progress bar of the picking and extraction steps (on stderr, transient)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=True,
                    disable=not enabled)


def micrograph_key(name: str) -> str:
    """A micrograph name without directory and image suffixes (``a/b/mic_01.mrc`` → ``mic_01``)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    while True:
        stem, dot, suffix = base.rpartition(".")
        if dot and ("." + suffix.lower()) in _IMAGE_SUFFIXES + COORDINATE_SUFFIXES:
            base = stem
        else:
            return base


def read_micrograph(path: Path, pixel_size: float | None) -> tuple[Any, float]:
    """A micrograph's pixels and pixel size (Å), checked: 2-D, finite, not constant."""
    import numpy as np

    from cryoset.io.images import read_image

    img = read_image(path, pixel_size_a=pixel_size)
    if img.pixel_size_a is None:
        raise InputError(path, "has no pixel size: give --pixel-size-a")
    if img.data.ndim != 2 or min(img.data.shape) < 16:
        raise InputError(path, f"is not a micrograph (shape {img.data.shape})")
    bad = int(img.data.size - np.count_nonzero(np.isfinite(img.data)))
    if bad:
        raise InputError(path, f"{bad} of {img.data.size} pixels are NaN or infinite")
    if not float(img.data.std()) > 0:
        raise InputError(path, "is empty (constant image)")
    return img.data, float(img.pixel_size_a)


def coord_files(source: Path) -> list[Path]:
    """The coordinate files of a picks folder (sorted), or ``[source]`` for a file."""
    if source.is_dir():
        files = sorted(p for p in source.iterdir()
                       if p.is_file() and p.suffix.lower() in COORDINATE_SUFFIXES
                       and not p.name.endswith(".provenance.json")
                       and p.name not in ("false_positives.csv", "particles.csv", "particles.star"))
        if not files:
            raise InputError(source, "holds no coordinate files")
        return files
    if not source.exists():
        raise InputError(source, "no such file or directory")
    return [source]


@dataclass
class ExtractOutcome:
    """What :func:`run_extract` wrote."""

    out: Path
    particles: int
    micrographs: int
    skipped_at_edge: int
    star: Path


def check_extract_params(params: ExtractParams) -> None:
    """Raise InputError for parameters no extraction can use."""
    box, diameter_a, ctf = params.box_px, params.diameter_a, params.ctf
    if box is None and diameter_a is None:
        raise InputError("--box-px", "give --box-px or --diameter-a")
    if params.phase_flip and ctf is None:
        raise InputError("--ctf", "--phase-flip needs --ctf")
    if params.image_paths not in ("project", "star"):
        raise InputError("--image-paths", f"must be 'project' or 'star', got {params.image_paths!r}")
    for name, value in (("--pixel-size-out-a", params.pixel_size_out_a), ("--box-px", box),
                        ("--diameter-a", diameter_a), ("--pixel-size-a", params.pixel_size_a),
                        ("--voltage-kv", params.voltage_kv)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(name, f"must be a positive number, got {value}")
    if not (math.isfinite(params.cs_mm) and params.cs_mm >= 0):
        raise InputError("--cs-mm", f"must be >= 0 mm, got {params.cs_mm}")
    if not 0 <= params.amplitude_contrast < 1:
        raise InputError("--amplitude-contrast", f"must be in [0, 1), got {params.amplitude_contrast}")


def run_extract(micrographs: list[Path], picks: Path, out: Path, params: ExtractParams, *,
                progress: bool = True, fast: bool | None = None) -> ExtractOutcome:
    """Extract the picked particles of ``micrographs`` (coordinate files in ``picks``).

    ``fast`` None takes the fast path whenever the inputs allow it (the module docstring);
    False always takes the table path; True requires the fast path (ValueError when the inputs
    need the table path). Both write the same files.

    Raises
    ------
    InputError
        Bad parameters or inputs; nothing is written.
    """
    check_extract_params(params)
    plan = _fast_plan(micrographs, picks, params) if fast is not False else None
    if plan is not None:
        try:
            return _run_fast(plan, micrographs, picks, out, params, progress)
        except _NeedsTables:
            pass  # nothing was written
    if fast:
        raise ValueError("these inputs need the table path (fast=True)")
    from cryoset.workflows.pick import extract_tables

    return extract_tables(micrographs, picks, out, params, progress=progress)


# ------------------------------------------------------------------------------ fast path


@dataclass
class _Picks:
    """One micrograph's picks for the fast path."""

    x: NDArray[np.float64]
    y: NDArray[np.float64]
    score: NDArray[np.float64]
    #: every coordinate of the file (the bounds check covers them all, as the table path's)
    file_xy: NDArray[np.float64] | None = None


def _coordinate_file(files: list[Path], key: str) -> Path | None:
    for p in files:
        if micrograph_key(p.name) == key:
            return p
    return None


def _read_fast_picks(path: Path, key: str) -> _Picks | None:
    """The picks of micrograph ``key`` in a plain coordinate STAR file; None when the file is
    anything else (the table path then reads it, or reports what is wrong with it)."""
    import numpy as np

    from cryoset.io.lean import read_star_blocks

    if path.suffix.lower() != ".star":
        return None
    with open(path, "rb") as fh:
        head = fh.read(8192).decode("utf-8", errors="replace")
    if "data_" not in head or "rlnCoordinateX" not in head:  # the format detection's rule
        return None
    try:
        blocks = read_star_blocks(path)
    except InputError:
        return None
    block = next((b for b in blocks.values() if "rlnCoordinateX" in b.columns), None)
    if block is None or "rlnCoordinateY" not in block.columns or not set(block.labels) <= _LEAN_LABELS:
        return None
    cols = block.columns
    numeric = [cols[lab] for lab in ("rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit")
               if lab in cols]
    if any(isinstance(c, list) for c in numeric):
        return None
    x = np.asarray(cols["rlnCoordinateX"], dtype=np.float64)
    y = np.asarray(cols["rlnCoordinateY"], dtype=np.float64)
    if "rlnAutopickFigureOfMerit" in cols:
        score = np.asarray(cols["rlnAutopickFigureOfMerit"], dtype=np.float64).copy()
        score[np.isin(score, _SENTINELS)] = np.nan
    else:
        score = np.full(len(x), np.nan)
    if "rlnMicrographName" in cols:
        names = cols["rlnMicrographName"]
        assert isinstance(names, list)
        mine = np.array([micrograph_key(n) == key for n in names], dtype=bool)
    else:
        mine = np.full(len(x), micrograph_key(path.stem) == key)
    if not mine.any() or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return None
    return _Picks(x[mine], y[mine], score[mine], np.stack([x, y], axis=1))


@dataclass
class _Prior:
    """An earlier step's ``false_positives.csv`` beside the picks (carried into ours)."""

    names: list[str]
    x: NDArray[np.float64]
    y_file: NDArray[np.float64]  # the file's (y-flipped) Y
    numbers: dict[str, NDArray[np.float64]]  # other numeric CSV columns present
    reasons: list[str]


#: Numeric columns of a false-positive CSV besides the coordinates; the last two hold integers.
_PRIOR_NUMBERS = ("Diameter", "Angle-Psi", "Origin X (Ang)", "Origin Y (Ang)", "Defocus U", "Defocus V",
                  "Defocus Angle", "Phase Shift", "CTF B Factor", "Optics Group", "Class Number")


def _read_prior(path: Path) -> _Prior | None:
    """A plain false-positive CSV (the 15 CryoVirusDB columns or a subset with the file name, the
    coordinates and ``Reason``), or None (the table path then reads it, or reports it)."""
    import numpy as np

    from cryoset.io.lean import CVDB_FALSE_POSITIVE_COLUMNS, parse_plain_number, read_csv_cells

    cells = read_csv_cells(path)
    if cells is None:
        return None
    header, rows = cells
    needed = ("Micrographs Filename", "X-Coordinate", "Y-Coordinate", "Reason")
    if len(set(header)) != len(header) or not set(header) <= set(CVDB_FALSE_POSITIVE_COLUMNS) or not all(
            c in header for c in needed):
        return None
    cols = {name: [r[i] for r in rows] for i, name in enumerate(header)}
    numbers: dict[str, NDArray[np.float64]] = {}
    for name in ("X-Coordinate", "Y-Coordinate", *[c for c in _PRIOR_NUMBERS if c in cols]):
        parsed = [parse_plain_number(v) for v in cols[name]]
        if any(v is None for v in parsed):
            return None
        arr = np.array(parsed, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        if name in ("X-Coordinate", "Y-Coordinate") and len(finite) != len(arr):
            return None
        if name in ("Optics Group", "Class Number") and not np.array_equal(finite, np.round(finite)):
            return None
        numbers[name] = arr
    return _Prior(cols["Micrographs Filename"], numbers.pop("X-Coordinate"), numbers.pop("Y-Coordinate"),
                  numbers, cols["Reason"])


@dataclass
class _Plan:
    picks: dict[str, _Picks]
    prior: _Prior | None = None


def _fast_plan(micrographs: list[Path], picks: Path, params: ExtractParams) -> _Plan | None:
    """The fast path's reading of the coordinates, or None when the inputs need the table path."""
    if params.ctf is not None or params.phase_flip or not micrographs:
        return None
    prior = None
    if picks.is_dir() and (picks / "false_positives.csv").exists():
        prior = _read_prior(picks / "false_positives.csv")  # an earlier step's rejected picks
        if prior is None:
            return None
    try:
        files = coord_files(picks)
    except InputError:
        return None
    out: dict[str, _Picks] = {}
    for path in micrographs:
        key = micrograph_key(path.name)
        if key in out:
            return None
        source = _coordinate_file(files, key)
        found = _read_fast_picks(source, key) if source is not None else None
        if found is None:
            return None
        out[key] = found
    return _Plan(out, prior)


def _null_bar() -> Any:
    class _Bar:
        def add_task(self, *args: Any, **kwargs: Any) -> int:
            return 0

        def update(self, *args: Any, **kwargs: Any) -> None:
            return None

    return _Bar()


def _bar(progress: bool) -> AbstractContextManager[Any]:
    # a transient bar shows nothing off a terminal: skip importing rich there
    if progress and sys.stderr.isatty():
        return progress_bar(True)  # type: ignore[no-any-return]
    return nullcontext(_null_bar())


def _run_fast(plan: _Plan, micrographs: list[Path], picks: Path, out: Path, params: ExtractParams,
              progress: bool) -> ExtractOutcome:
    import numpy as np

    from cryoset.io.atomic import atomic_path, staged_directory
    from cryoset.io.lean import (
        PathStyle,
        cvdb_number_tokens,
        float_tokens,
        format_csv,
        format_star_loops,
        relion_path,
        star_text_token,
    )
    from cryoset.io.mrc import write_stack
    from cryoset.io.provenance import make_provenance, write_provenance
    from cryoset.particles.extract import box_size_for_diameter, extract_boxes

    box, diameter_a = params.box_px, params.diameter_a
    star_out = out / "particles.star"
    style: PathStyle = "star" if params.image_paths == "star" else "project"
    record = {"box": box, "diameter_a": diameter_a, "pixel_size_out_a": params.pixel_size_out_a,
              "invert": params.invert, "normalise": params.norm, "bg_radius_px": params.bg_radius_px,
              "phase_flip": params.phase_flip, "image_paths": params.image_paths}
    prov = make_provenance("extract", record, [*micrographs, picks])
    image_names: list[str] = []
    mic_names: list[str] = []
    kept_parts: list[tuple[str, str, _Picks]] = []  # (micrograph file name, key, kept picks)
    skipped_parts: list[tuple[str, str, _Picks]] = []
    heights: dict[str, int] = {}
    geometry: tuple[float, int, float] | None = None  # (micrograph px, output box, output px)
    from cryoset.particles.extract import output_box_size

    n_skipped = 0
    with staged_directory(out) as staged:
        with _bar(progress) as bar:
            task = bar.add_task("extracting", total=len(micrographs))
            for path in micrographs:
                image, px = read_micrograph(path, params.pixel_size_a)
                key = micrograph_key(path.name)
                heights[key] = int(image.shape[0])
                p = plan.picks[key]
                ny, nx = image.shape
                lo = -0.5 - _EDGE_TOLERANCE_PX
                assert p.file_xy is not None
                fx, fy = p.file_xy[:, 0], p.file_xy[:, 1]
                outside = (fx < lo) | (fx > nx - 0.5 + _EDGE_TOLERANCE_PX) | (fy < lo) | (
                    fy > ny - 0.5 + _EDGE_TOLERANCE_PX)
                b = box if box is not None else box_size_for_diameter(float(diameter_a or 0) / px)
                if outside.any() or b > min(image.shape) or (geometry is not None and geometry[0] != px):
                    raise _NeedsTables  # the table path reports it, or handles mixed pixel sizes
                stack, kept, out_px = extract_boxes(
                    image, np.stack([p.x, p.y], axis=1), b, px, pixel_size_out_a=params.pixel_size_out_a,
                    invert=params.invert, normalise=params.norm, bg_radius_px=params.bg_radius_px)
                geometry = (px, output_box_size(int(b), px, params.pixel_size_out_a), out_px)
                stack_name = key + ".mrcs"
                if len(stack):
                    write_stack(staged / stack_name, stack, out_px)
                mic = relion_path(path, star_out, style)
                img = relion_path(out / stack_name, star_out, style)
                mic_names += [mic] * int(kept.sum())
                image_names += [f"{i + 1:06d}@{img}" for i in range(int(kept.sum()))]
                kept_parts.append((path.name, key, _Picks(p.x[kept], p.y[kept], p.score[kept])))
                if not kept.all():
                    skipped_parts.append((path.name, key, _Picks(p.x[~kept], p.y[~kept], p.score[~kept])))
                n_skipped += int((~kept).sum())
                bar.update(task, advance=1, description=f"{path.name}: {int(kept.sum())} particles")
        if not image_names:
            raise InputError(picks, f"no particle box fits: all {n_skipped} picks lie within half a "
                             "box of the micrograph edge")
        assert geometry is not None
        px, m, out_px = geometry
        x = np.concatenate([k[2].x for k in kept_parts])
        y = np.concatenate([k[2].y for k in kept_parts])
        score = np.concatenate([k[2].score for k in kept_parts])

        def number(v: float | int) -> str:  # a Python int parameter stays an integer column
            return str(v) if isinstance(v, int) and not isinstance(v, bool) else repr(float(v))

        optics_labels = ["rlnOpticsGroup", "rlnOpticsGroupName", "rlnAmplitudeContrast",
                         "rlnSphericalAberration", "rlnVoltage", "rlnImagePixelSize", "rlnImageSize",
                         "rlnImageDimensionality", "rlnCtfDataArePhaseFlipped", "rlnMicrographPixelSize"]
        optics = [["1"], ["opticsGroup1"], [number(params.amplitude_contrast)], [number(params.cs_mm)],
                  [number(params.voltage_kv)], [repr(float(out_px))], [str(m)], ["2"], ["0"], [repr(float(px))]]
        n = len(x)
        labels = ["rlnImageName", "rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]
        columns = [[star_text_token(s) for s in image_names], [star_text_token(s) for s in mic_names],
                   float_tokens(x), float_tokens(y)]
        if not np.isnan(score).all():
            labels.append("rlnAutopickFigureOfMerit")
            columns.append(float_tokens(score))
        labels.append("rlnOpticsGroup")
        columns.append(["1"] * n)
        comment = "cryoset provenance: " + json.dumps(prov, sort_keys=True, default=str)
        text = format_star_loops([("optics", optics_labels, optics), ("particles", labels, columns)],
                                 comment=comment, version=30001)
        with atomic_path(staged / star_out.name) as tmp:
            tmp.write_text(text, encoding="utf-8")

        def cvdb(parts: list[tuple[str, str, _Picks]], optics_group: bool, reason: str | None,
                 prior: _Prior | None = None) -> bytes:
            names = [name for name, _, q in parts for _ in range(len(q.x))]
            xs = np.concatenate([np.zeros(0), *[q.x for _, _, q in parts]])
            ys = np.concatenate([np.zeros(0), *[q.y for _, _, q in parts]])
            ny = np.concatenate([np.zeros(0), *[np.full(len(q.x), float(heights[k])) for _, k, q in parts]])
            n_new = len(xs)
            extra: dict[str, NDArray[np.float64]] = {}
            reasons = [reason or ""] * n_new
            if prior is not None:  # its rows first, y back in the micrograph frame and out again
                old_ny = np.array([float(heights.get(micrograph_key(m), float("nan"))) for m in prior.names])
                names = [*prior.names, *names]
                xs = np.concatenate([prior.x, xs])
                ys = np.concatenate([(old_ny - 1) - prior.y_file, ys])
                ny = np.concatenate([old_ny, ny])
                extra = {c: np.concatenate([v, np.full(n_new, np.nan)]) for c, v in prior.numbers.items()}
                reasons = [*prior.reasons, *reasons]
            flipped = np.round((ny - 1) - ys, 9)
            nothing = np.full(len(xs), np.nan)
            header = ["Micrographs Filename", "X-Coordinate", "Y-Coordinate", "Diameter", "Angle-Psi",
                      "Origin X (Ang)", "Origin Y (Ang)", "Defocus U", "Defocus V", "Defocus Angle",
                      "Phase Shift", "CTF B Factor", "Optics Group", "Class Number"]
            cols = [names, cvdb_number_tokens(xs, True), cvdb_number_tokens(flipped, True)]
            cols += [cvdb_number_tokens(extra.get(c, nothing), c == "Diameter") for c in header[3:12]]
            if optics_group:
                cols.append(["1"] * len(xs))
            else:
                cols.append(cvdb_number_tokens(extra.get("Optics Group", nothing), True))
            cols.append(cvdb_number_tokens(extra.get("Class Number", nothing), True))
            if reason is not None:
                header.append("Reason")
                cols.append(reasons)
            return format_csv(header, cols)

        for name, data in (("particles.csv", cvdb(kept_parts, True, None)),
                           ("false_positives.csv",
                            cvdb(skipped_parts, False, "box crosses the micrograph edge", plan.prior))):
            with atomic_path(staged / name) as tmp:
                tmp.write_bytes(data)
            write_provenance(staged / name, prov)
        write_provenance(staged, prov)
    return ExtractOutcome(out, n, len(micrographs), n_skipped, star_out)


class _NeedsTables(Exception):
    """Raised inside the fast path when a micrograph turns out to need the table path."""
