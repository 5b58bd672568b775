"""Reader and writer for the CryoPPP / CryoVirusDB per-EMPIAR layout.

One EMPIAR set is a directory (the archive's content) holding::

    micrographs/<mic>.mrc            motion-corrected micrographs (or <mic>.jpg/.png "lite")
    particles_stack/<mic>.mrc        the expert particles of <mic>, one image per CSV row
    ground_truth/particle_coordinates/<mic>.csv   per-micrograph particle CSV
    ground_truth/<...>_particles_selected.csv     all particles, the 14-column CSV
    ground_truth/**/<...false...>.csv             false positives (14 columns + Reason)
    ground_truth/**/*.star                        RELION STAR exports

Frames and names:

* Coordinates are converted to the canonical frame by :mod:`cryoset.io.cryovirusdb` /
  :mod:`cryoset.io.coords`: the CSV y axis is flipped, ``y_px = (ny - 1) - Y``, where
  ``ny`` is the height of the **original** micrograph. For MRC micrographs the shape comes
  from the header; "lite" JPG/PNG micrographs may be downsampled, so pass
  ``original_shape=(ny, nx)`` when they are (default: the image's own shape).
* ``micrograph`` is the file stem (``<mic>``, no directory, no suffix), so an MRC, its JPG
  lite version and the ``Micrographs Filename`` of the 14-column CSV name the same thing;
  the name as written is kept in the extra column ``micrograph_file`` (and written back).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoset.errors import InputError
from cryoset.io import schema as S
from cryoset.io.cryovirusdb import read_cryovirusdb, write_cryovirusdb

MICROGRAPH_SUFFIXES: tuple[str, ...] = (".mrc", ".jpg", ".jpeg", ".png", ".tif", ".tiff")
_MRC = (".mrc", ".mrcs", ".map")
#: Extra column keeping the ``Micrographs Filename`` as written (the writer puts it back).
MICROGRAPH_FILE = "micrograph_file"


def micrograph_stem(name: str) -> str:
    """``"dir/abc.mrc"`` → ``"abc"`` (the canonical micrograph key of this layout)."""
    base = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (*MICROGRAPH_SUFFIXES, ".mrcs", ".csv"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def image_shape(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(ny, nx)`` of a micrograph file, from its header only."""
    p = Path(path)
    if p.suffix.lower() in _MRC:
        from cryoset.io.mrc import read_header

        h = read_header(p)
        return int(h["ny"]), int(h["nx"])
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            nx, ny = im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(p, f"is not a readable image ({exc})") from None
    return int(ny), int(nx)


def find_entry_root(path: str | os.PathLike[str], max_depth: int = 3) -> Path:
    """The directory holding ``micrographs/`` or ``ground_truth/`` at or below ``path``."""
    base = Path(path)
    if not base.is_dir():
        raise InputError(base, "is not a directory")
    frontier = [base]
    for _ in range(max_depth + 1):
        for d in frontier:
            if (d / "micrographs").is_dir() or (d / "ground_truth").is_dir():
                return d
        frontier = sorted(c for d in frontier for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
    raise InputError(base, "is not a CryoPPP/CryoVirusDB entry (no micrographs/ or ground_truth/ folder)")


@dataclass
class CryopppEntry:
    """One EMPIAR set in the CryoPPP / CryoVirusDB layout, read into canonical tables.

    Attributes
    ----------
    root
        The entry directory.
    micrographs
        Micrograph stem → file.
    shapes
        Micrograph stem → ``(ny, nx)`` of the file.
    original_shape
        ``(ny, nx)`` of the original micrographs when the files are downsampled "lite" images.
    particles
        Canonical particle table (``x_px``, ``y_px`` in original micrograph pixels,
        un-flipped) from the per-micrograph CSVs (or, without them, the 14-column CSV).
    selected
        The 14-column ``*_particles_selected.csv`` (canonical), when present.
    false_positives
        The false-positive CSVs (canonical, with ``Reason``), when present.
    stacks
        Micrograph stem → particle stack ``.mrc``.
    star_files
        STAR files under ``ground_truth/``.
    variants
        CSV variant of each table read (``"per_micrograph"``, ``"particles"``, ...).
    """

    root: Path
    micrographs: dict[str, Path]
    shapes: dict[str, tuple[int, int]]
    original_shape: tuple[int, int] | None
    particles: pd.DataFrame
    selected: pd.DataFrame | None
    false_positives: pd.DataFrame | None
    stacks: dict[str, Path]
    star_files: list[Path]
    variants: dict[str, str] = field(default_factory=dict)

    def coordinate_shape(self, micrograph: str) -> tuple[int, int]:
        """``(ny, nx)`` of the frame the coordinates of ``micrograph`` are in."""
        if self.original_shape is not None:
            return self.original_shape
        if micrograph not in self.shapes:
            raise InputError(self.root, f"no micrograph file for {micrograph!r}")
        return self.shapes[micrograph]

    def scale(self, micrograph: str) -> tuple[float, float]:
        """Image pixels per original pixel ``(sy, sx)`` (1, 1 unless the file is downsampled)."""
        ny, nx = self.shapes[micrograph]
        oy, ox = self.coordinate_shape(micrograph)
        return ny / oy, nx / ox


def _uniform_shape(shapes: dict[str, tuple[int, int]], where: Path) -> tuple[int, int] | None:
    distinct = set(shapes.values())
    if len(distinct) > 1:
        raise InputError(where, f"micrographs have different shapes {sorted(distinct)}: pass original_shape")
    return next(iter(distinct)) if distinct else None


def _read_csv(path: Path, shape: tuple[int, int] | None, micrograph: str | None,
              permissive: bool) -> pd.DataFrame:
    if shape is None:
        raise InputError(path, "cannot undo the CryoPPP y flip: no micrograph to take the height from "
                         "(pass original_shape)")
    table = read_cryovirusdb(path, micrograph=micrograph, micrograph_shape=shape, permissive=permissive)
    variant = table.attrs.get("cryovirusdb_variant", "")
    if variant != "per_micrograph":
        table[MICROGRAPH_FILE] = table[S.MICROGRAPH].astype(str).to_numpy()
    table[S.MICROGRAPH] = [micrograph_stem(m) for m in table[S.MICROGRAPH].astype(str)]
    table.attrs["cryovirusdb_variant"] = variant
    return table


def _concat(tables: list[pd.DataFrame]) -> pd.DataFrame | None:
    if not tables:
        return None
    variant = tables[0].attrs.get("cryovirusdb_variant", "")
    out = pd.concat(tables, ignore_index=True)
    out.attrs = {"cryovirusdb_variant": variant}
    return out


def read_cryoppp(path: str | os.PathLike[str], *, original_shape: tuple[int, int] | None = None,
                 permissive: bool = False) -> CryopppEntry:
    """Read one CryoPPP / CryoVirusDB EMPIAR set.

    Parameters
    ----------
    path
        The entry directory (or a directory up to three levels above it).
    original_shape
        ``(ny, nx)`` of the original micrographs when ``micrographs/`` holds downsampled
        lite images; default: each file's own shape.
    permissive
        Drop off-micrograph picks instead of raising (see :func:`cryoset.io.coords.read_coords`).

    Raises
    ------
    InputError
        No entry, a CSV that is not a CryoVirusDB CSV, picks off the micrograph, or a
        per-micrograph CSV without a micrograph when no ``original_shape`` is given.
    """
    root = find_entry_root(path)
    mic_dir = root / "micrographs"
    micrographs: dict[str, Path] = {}
    if mic_dir.is_dir():
        for f in sorted(mic_dir.iterdir()):
            if f.is_file() and f.suffix.lower() in MICROGRAPH_SUFFIXES:
                stem = micrograph_stem(f.name)
                if stem not in micrographs or f.suffix.lower() == ".mrc":
                    micrographs[stem] = f
    shapes = {k: image_shape(v) for k, v in micrographs.items()}
    gt = root / "ground_truth"
    csvs = sorted(gt.rglob("*.csv")) if gt.is_dir() else []
    false_csvs = [c for c in csvs if "false" in c.as_posix().lower().replace(str(gt).lower(), "")]
    per_mic = [c for c in csvs if c.parent.name == "particle_coordinates" and c not in false_csvs]
    selected_csvs = [c for c in csvs if c not in false_csvs and c not in per_mic]
    default_shape = original_shape or (_uniform_shape(shapes, root) if shapes else None)
    variants: dict[str, str] = {}
    per_tables = []
    for c in per_mic:
        stem = micrograph_stem(c.name)
        shape = original_shape or shapes.get(stem) or default_shape
        per_tables.append(_read_csv(c, shape, stem, permissive))
    particles_pm = _concat(per_tables)
    selected = _concat([_read_csv(c, default_shape, None, permissive) for c in selected_csvs])
    false_pos = _concat([_read_csv(c, default_shape, None, permissive) for c in false_csvs])
    for name, table in (("particles", particles_pm), ("selected", selected), ("false_positives", false_pos)):
        if table is not None:
            variants[name] = str(table.attrs.get("cryovirusdb_variant", ""))
    particles = particles_pm if particles_pm is not None else selected
    if particles is None:
        particles = S.empty_picks()
    stack_dir = root / "particles_stack"
    stacks = ({micrograph_stem(f.name): f for f in sorted(stack_dir.iterdir())
               if f.is_file() and f.suffix.lower() in (".mrc", ".mrcs")} if stack_dir.is_dir() else {})
    stars = sorted(gt.rglob("*.star")) if gt.is_dir() else []
    return CryopppEntry(root, micrographs, shapes, original_shape, particles, selected, false_pos,
                        stacks, stars, variants)


def write_cryoppp(entry: CryopppEntry, out_dir: str | os.PathLike[str]) -> Path:
    """Re-export the ground truth of ``entry`` in the same layout (CSV files only).

    Writes ``ground_truth/particle_coordinates/<mic>.csv`` (per-micrograph rows, the
    variant they were read as), ``ground_truth/<root name>_particles_selected.csv`` and
    ``ground_truth/false_positives/<root name>_false_positives.csv`` when present, all
    y-flipped back with each micrograph's coordinate frame. Reading the result with
    :func:`read_cryoppp` (same ``original_shape``) gives identical tables.
    """
    out = Path(out_dir)
    gt = out / "ground_truth"
    variant = entry.variants.get("particles", "per_micrograph")
    if entry.selected is None or entry.particles is not entry.selected:
        for mic, rows in entry.particles.groupby(S.MICROGRAPH, sort=True):
            shape = entry.coordinate_shape(str(mic))
            write_cryovirusdb(gt / "particle_coordinates" / f"{mic}.csv", rows, micrograph_shape=shape,
                              variant=variant if variant in ("per_micrograph", "particles", "collective") else None)  # type: ignore[arg-type]
    name = entry.root.name
    # CryoVirusDB's selected file is the collective CSV (Particles Filename, no Diameter): kept so
    selected_kind = "collective" if entry.variants.get("selected") == "collective" else "particles"
    for table, rel, kind in ((entry.selected, f"{name}_particles_selected.csv", selected_kind),
                             (entry.false_positives, f"false_positives/{name}_false_positives.csv",
                              "false_positives")):
        if table is None:
            continue
        shapes = {entry.coordinate_shape(str(m)) for m in table[S.MICROGRAPH].unique()}
        if len(shapes) != 1:
            raise InputError(out, f"{rel}: micrographs of different shapes cannot share one flipped CSV")
        if MICROGRAPH_FILE in table:
            table = table.assign(**{S.MICROGRAPH: table[MICROGRAPH_FILE]})
        write_cryovirusdb(gt / rel, table, micrograph_shape=shapes.pop(), variant=kind)  # type: ignore[arg-type]
    return out


def stack_particles(entry: CryopppEntry) -> tuple[list[str], list[pd.DataFrame]]:
    """Micrographs that have both a particle stack and CSV rows, and those rows (stack order).

    Raises InputError when a stack's image count differs from its CSV row count.
    """
    from cryoset.io.mrc import read_header

    names: list[str] = []
    tables: list[pd.DataFrame] = []
    for mic, rows in entry.particles.groupby(S.MICROGRAPH, sort=True):
        stack = entry.stacks.get(str(mic))
        if stack is None:
            continue
        n = int(read_header(stack)["nz"])
        if n != len(rows):
            raise InputError(stack, f"holds {n} particle images but the CSV of {mic} has {len(rows)} rows")
        t = rows.reset_index(drop=True).copy()
        t[S.IMAGE_INDEX] = np.arange(n, dtype=np.int64)
        t[S.IMAGE_PATH] = str(stack)
        names.append(str(mic))
        tables.append(t)
    return names, tables


def import_cryoppp_stacks(entry: CryopppEntry, store: Any, experiment_id: str, *,
                          provenance: dict[str, Any] | None = None) -> int:
    """Add the particle stacks of ``entry`` to a :class:`cryoset.store.ParticleStore`.

    The annotations are the canonical particle rows of each stack's micrograph, in stack
    order (``image_index``, ``image_path`` added). Returns the number of particles.
    """
    from cryoset.io.mrc import read_stack

    names, tables = stack_particles(entry)
    if not names:
        raise InputError(entry.root, "no micrograph has both a particle stack and CSV rows")

    def blocks() -> Any:
        for mic in names:
            yield np.asarray(read_stack(entry.stacks[mic]).data[:], dtype=np.float32)

    table = pd.concat(tables, ignore_index=True)
    return int(store.add_experiment(experiment_id, blocks(), table, provenance=provenance))
