"""The picking and extraction steps: micrographs in, coordinate files and particle stacks out.

:func:`run_pick` is ``cryoset pick`` and the build's ``pick`` stage; :func:`run_extract` is
``cryoset extract`` and the build's ``extract`` stage. Their parameters, with their one set
of defaults, are :class:`PickParams` and :class:`ExtractParams` (the command's options and
the build's ``pick:`` / ``extract:`` sections are both made from them).

``run_pick`` writes ``OUT/<micrograph>.<format>`` (accepted picks with scores, NCC and power),
``OUT/false_positives.csv`` (rejected picks with ``Reason``, CryoVirusDB layout),
``OUT/picks_scores.parquet`` (every pick with score, diameter, NCC, power and ``Reason``) and
``OUT/provenance.json``. ``run_extract`` writes ``OUT/<micrograph>.mrcs`` stacks,
``particles.star`` (RELION 3.1), ``particles.csv`` (CryoVirusDB), ``false_positives.csv`` and
``provenance.json``; with ``--ctf`` from :func:`cryoset.workflows.ctf.run_ctf` every particle
gets its local defocus from the micrograph's defocus surface (``defocus_surfaces.json`` beside
the STAR).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cryoset.errors import InputError
from cryoset.io.coords import COORDINATE_FORMATS, COORDINATE_SUFFIXES
from cryoset.io.relion_labels import MICROGRAPH_NAME
from cryoset.workflows.extract import (
    ExtractOutcome,
    coord_files,
    micrograph_key,
    progress_bar,
    read_micrograph,
    run_extract,
)
from cryoset.workflows.params import ExtractParams, PickParams

__all__ = [
    "SCORES_FILE",
    "ExtractOutcome",
    "ExtractParams",
    "PickOutcome",
    "PickParams",
    "coord_files",
    "extract_tables",
    "micrograph_key",
    "read_picks",
    "run_extract",
    "run_pick",
]

_COORD_SUFFIXES = COORDINATE_SUFFIXES
_progress = progress_bar
_read_micrograph = read_micrograph


def read_picks(source: Path) -> Any:
    import pandas as pd

    from cryoset.io.coords import read_coords

    frames = [read_coords(p) for p in coord_files(source)]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    df["micrograph"] = df["micrograph"].astype(str).map(micrograph_key)
    return df


def _picks_for(picks_dir: Path, key: str, shape: tuple[int, int]) -> Any:
    from cryoset.io.coords import read_coords

    for p in coord_files(picks_dir):
        if micrograph_key(p.name) == key:
            df = read_coords(p, micrograph=None, micrograph_shape=shape)
            df["micrograph"] = df["micrograph"].astype(str).map(micrograph_key)
            return df[df["micrograph"] == key].reset_index(drop=True)
    return None


def _mask_for(mask_dir: Path, key: str, shape: tuple[int, ...]) -> Any:
    """The boolean mask (True = reject) of a micrograph, or None when the directory has none."""
    from cryoset.io.images import read_image

    if not mask_dir.is_dir():
        raise InputError(mask_dir, "is not a directory")
    for p in sorted(mask_dir.iterdir()):
        if p.is_file() and micrograph_key(p.name) == key:
            data = read_image(p, permissive=True).data
            if data.shape != tuple(shape):
                raise InputError(p, f"mask shape {data.shape} differs from the micrograph {tuple(shape)}")
            return data != 0
    return None


def _micrograph_table(path: Path) -> Any:
    """The micrograph STAR as a canonical table, or None when it has no micrograph table."""
    from cryoset.io.micrograph_star import read_micrograph_star

    try:
        return read_micrograph_star(path)
    except InputError as exc:
        if "rlnMicrographName" in str(exc):
            return None
        raise


def _ctf_resolutions(path: Path) -> dict[str, float]:
    table = _micrograph_table(path)
    if table is None or "fit_resolution_a" not in table.columns:
        raise InputError(path, "has no table with rlnMicrographName and rlnCtfMaxResolution")
    return {micrograph_key(str(m)): float(r)
            for m, r in zip(table["micrograph"], table["fit_resolution_a"], strict=True)}


def _ctf_table(path: Path) -> dict[str, Any]:
    from cryoset.ctf.model import CTFParams

    table = _micrograph_table(path)
    if table is None or "defocus_u_a" not in table.columns:
        raise InputError(path, "has no table with rlnMicrographName and rlnDefocusU")
    out: dict[str, Any] = {}
    for row in table.to_dict("records"):
        try:
            out[micrograph_key(str(row["micrograph"]))] = CTFParams.from_row(row)
        except ValueError as exc:
            raise InputError(path, str(exc)) from exc
    return out


def _height_of(heights: dict[str, int]) -> Any:
    """The height of a micrograph named in a CryoVirusDB table (NaN when unknown)."""
    return lambda m: float(heights.get(micrograph_key(m), float("nan")))


def _write_cvdb(path: Path, table: Any, heights: dict[str, int], variant: str) -> None:
    """Write a CryoVirusDB CSV in its own (y-flipped) frame, each row with its micrograph's height."""
    from cryoset.io.cryovirusdb import write_cryovirusdb

    write_cryovirusdb(path, table.reset_index(drop=True), variant=variant,  # type: ignore[arg-type]
                      micrograph_heights=_height_of(heights))


# ------------------------------------------------------------------------------ pick


#: Every pick with its scores and inspection verdict, written by :func:`run_pick` beside the
#: coordinate files (read by :func:`cryoset.workflows.curate.particle_annotations`).
SCORES_FILE = "picks_scores.parquet"
SUFFIXES = {name: f.suffixes[0] for name, f in COORDINATE_FORMATS.items() if f.implied_by_suffix}


@dataclass
class PickOutcome:
    """What :func:`run_pick` wrote: per micrograph ``{"micrograph", "picks", "rejected"}``."""

    out: Path
    micrographs: list[dict[str, Any]]

    @property
    def picks(self) -> int:
        return int(sum(m["picks"] for m in self.micrographs))

    @property
    def rejected(self) -> int:
        return int(sum(m["rejected"] for m in self.micrographs))


def run_pick(micrographs: list[Path], out: Path, params: PickParams, *, progress: bool = True) -> PickOutcome:
    """Pick particles (blob / template / imported), inspect them and write the coordinates.

    Raises
    ------
    InputError
        Bad parameters or inputs; nothing is written.
    """
    from cryoset.io.atomic import staged_directory
    from cryoset.io.coords import FORMATS, write_coords
    from cryoset.picking.base import PickerInputs, available_pickers
    from cryoset.picking.base import picker_class as find_picker
    from cryoset.picking.inspection import InspectionSettings, inspect_picks
    from cryoset.provenance import make_provenance, write_provenance

    diameter_a = params.diameter_a
    if diameter_a is None or not (math.isfinite(diameter_a) and diameter_a > 0):
        raise InputError("--diameter-a", f"must be a positive number of Å, got {diameter_a}")
    method, threshold, fmt = params.method, params.threshold, params.format
    # only the chosen picker's module is imported (start-up time of the command)
    picker_class = find_picker(method)
    if picker_class is None:
        pickers = available_pickers()
        raise InputError("--method", f"must be one of {', '.join(sorted(pickers))}, not {method!r}")
    if fmt not in FORMATS or fmt == "cryoppp":
        raise InputError("--format", f"unknown coordinate format {fmt!r}")
    templates = params.templates
    tmpl: Any = None
    tmpl_px = 0.0
    if "templates" in picker_class.needs:
        from cryoset.io.mrc import read_stack
        from cryoset.picking.template import check_templates

        if templates is None:
            raise InputError("--templates", f"--method {method} needs --templates")
        st = read_stack(templates)
        tmpl = check_templates(st.data[:], templates)
        tmpl_px = float(params.template_pixel_size_a or st.pixel_size_a or 0.0)
    import_dir = params.import_dir
    if "picks" in picker_class.needs and import_dir is None:
        raise InputError("--import-dir", f"--method {method} needs --import-dir")
    featurizer: Any = None
    featurizer_px: int | None = None
    ckpt: Path | None = None
    if "featurizer" in picker_class.needs:
        featurizer, featurizer_px, ckpt = window_featurizer(params.checkpoint, dark=not params.light_particles)
    inspection = InspectionSettings(min_ncc=params.min_ncc, min_power=params.min_power,
                                    max_power=params.max_power,
                                    max_ctf_resolution_a=params.max_ctf_resolution_a)
    ctf = params.ctf
    ctf_res = _ctf_resolutions(ctf) if ctf is not None else None
    if params.max_ctf_resolution_a is not None and ctf_res is None:
        raise InputError("--max-ctf-resolution-a", "needs --ctf with rlnCtfMaxResolution")
    suffix = SUFFIXES[fmt]
    dark = not params.light_particles
    record = {"diameter_a": diameter_a, "method": method, "threshold": threshold,
              "min_distance_fraction": params.min_distance_fraction, "min_ncc": params.min_ncc,
              "min_power": params.min_power, "max_power": params.max_power, "dark_particles": dark,
              "format": fmt}
    record.update({"max_ctf_resolution_a": params.max_ctf_resolution_a, "mask_dir": params.mask_dir})
    if ckpt is not None:
        record["checkpoint"] = str(ckpt)
    prov = make_provenance("pick", record, [*micrographs, *([templates] if templates else []),
                                            *([ctf] if ctf else []), *([ckpt] if ckpt else [])])
    rejected_all: list[pd.DataFrame] = []
    scored: list[pd.DataFrame] = []
    heights: dict[str, int] = {}
    summary: list[dict[str, Any]] = []
    # everything goes to a temporary folder first: a rejected input leaves no output behind
    with staged_directory(out) as staged:
        with _progress(progress) as bar:
            task = bar.add_task("picking", total=len(micrographs))
            for path in micrographs:
                image, px = _read_micrograph(path, params.pixel_size_a)
                name = path.name
                heights[micrograph_key(name)] = int(image.shape[0])
                imp = None
                if "picks" in picker_class.needs:
                    if import_dir is None:  # checked above; keeps the type checker informed
                        raise InputError("--import-dir", f"--method {method} needs --import-dir")
                    imp = _picks_for(import_dir, micrograph_key(name), image.shape)
                    if imp is None:
                        raise InputError(import_dir, f"has no picks for {name}")
                    imp["micrograph"] = name
                picker = picker_class.from_inputs(PickerInputs(
                    diameter_a, px, threshold=threshold, min_distance_fraction=params.min_distance_fraction,
                    dark_particles=dark, templates=tmpl, template_pixel_size_a=tmpl_px or px,
                    template_source=templates or "templates", picks=imp, featurizer=featurizer,
                    featurizer_input_px=featurizer_px))
                df = picker.pick(image, px, micrograph=name)
                df["micrograph_pixel_size_a"] = px
                masks = None
                if params.mask_dir is not None:
                    mask = _mask_for(params.mask_dir, micrograph_key(name), image.shape)
                    masks = {name: mask} if mask is not None else None
                res_map = ({name: ctf_res[micrograph_key(name)]}
                           if ctf_res and micrograph_key(name) in ctf_res else None)
                accepted, rejected = inspect_picks(df, inspection, ctf_resolution_a=res_map, masks=masks)
                write_coords(staged / (micrograph_key(name) + suffix), accepted,
                             micrograph_shape=image.shape, provenance=prov)
                rejected_all.append(rejected)
                scored.append(pd.concat([accepted.assign(Reason=""), rejected], ignore_index=True))
                summary.append({"micrograph": name, "picks": len(accepted), "rejected": len(rejected)})
                bar.update(task, advance=1, description=f"{name}: {len(accepted)} picks")
        rej = pd.concat(rejected_all, ignore_index=True)
        _write_cvdb(staged / "false_positives.csv", rej, heights, "false_positives")
        _write_scores(staged / SCORES_FILE, scored)
        write_provenance(staged / "false_positives.csv", prov)
        write_provenance(staged, prov)
    return PickOutcome(out, summary)


def window_featurizer(checkpoint: Path | None, *, dark: bool = True) -> tuple[Any, int, Path]:
    """``(featurize, input size, checkpoint)`` for ``--method features``: micrograph windows
    ``(B, w, w)`` → ViT features ``[CLS, patch mean]`` ``(B, 2D)``, the windows normalised as
    :func:`cryoset.workflows.featuremap.prepare_windows` does (contrast inverted when ``dark``).
    The model is loaded once; ``checkpoint`` None is the shipped one."""
    import torch

    from cryoset.learn.vit_weights import load_vit, resolve_vit_checkpoint
    from cryoset.workflows.featuremap import prepare_windows

    path = resolve_vit_checkpoint(checkpoint)
    model, meta = load_vit(path)
    model = model.eval()
    norm, size = meta["normalization"], int(meta["input_size"])

    def featurize(windows: Any) -> Any:
        with torch.inference_mode():
            return model.features(prepare_windows(windows, norm, size, invert=dark), "both").float().numpy()

    return featurize, size, path


def _write_scores(path: Path, frames: list[pd.DataFrame]) -> None:
    """Every pick, accepted (``Reason`` empty) or rejected, with its scores (``picks_scores.parquet``)."""
    from cryoset.io.atomic import atomic_path

    cols = ["micrograph", "x_px", "y_px", "score", "diameter_px", "ncc", "power", "Reason"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    table = table[[c for c in cols if c in table.columns]].copy()
    table["micrograph"] = table["micrograph"].astype(str)
    table["Reason"] = table["Reason"].fillna("").astype(str)
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


# ------------------------------------------------------------------------------ extract


def _local_defocus(ctf: Path | None, enabled: bool) -> dict[str, Any] | None:
    """The defocus surfaces written by ``cryoset ctf`` beside its STAR, when present and wanted."""
    if ctf is None or not enabled:
        return None
    from cryoset.workflows.ctf import SURFACES_FILE, local_ctfs

    if not (ctf.parent / SURFACES_FILE).is_file():
        return None
    return local_ctfs(ctf.parent)


def extract_tables(micrographs: list[Path], picks: Path, out: Path, params: ExtractParams, *,
                   progress: bool = True) -> ExtractOutcome:
    """:func:`cryoset.workflows.extract.run_extract` through pandas tables: every input it
    accepts (CTF, phase flipping, any coordinate format); the fast path writes the same files.

    Raises
    ------
    InputError
        Bad parameters or inputs; nothing is written.
    """
    from cryoset.io.atomic import staged_directory
    from cryoset.io.mrc import write_stack
    from cryoset.io.particles import PathStyle, relion_path, write_particles
    from cryoset.particles.extract import box_size_for_diameter, extract_particles
    from cryoset.provenance import make_provenance, write_provenance
    from cryoset.workflows.extract import check_extract_params

    check_extract_params(params)
    box, diameter_a, ctf = params.box_px, params.diameter_a, params.ctf
    phase_flip, image_paths = params.phase_flip, params.image_paths
    star_out = out / "particles.star"
    style: PathStyle = "star" if image_paths == "star" else "project"
    ctfs = _ctf_table(ctf) if ctf is not None else {}
    local = _local_defocus(ctf, params.local_defocus)
    record = {"box": box, "diameter_a": diameter_a, "pixel_size_out_a": params.pixel_size_out_a,
              "invert": params.invert, "normalise": params.norm, "bg_radius_px": params.bg_radius_px,
              "phase_flip": phase_flip, "image_paths": image_paths}
    if local is not None:
        record["local_defocus"] = True
    prov = make_provenance("extract", record, [*micrographs, picks, *([ctf] if ctf else [])])
    tables: list[pd.DataFrame] = []
    skipped: list[pd.DataFrame] = []
    n_skipped = 0
    heights: dict[str, int] = {}
    # everything goes to a temporary folder first: a rejected input leaves no output behind
    with staged_directory(out) as staged:
        with _progress(progress) as bar:
            task = bar.add_task("extracting", total=len(micrographs))
            for path in micrographs:
                image, px = _read_micrograph(path, params.pixel_size_a)
                key = micrograph_key(path.name)
                heights[key] = int(image.shape[0])
                df = _picks_for(picks, key, image.shape)
                if df is None:
                    raise InputError(picks, f"has no picks for {path.name}")
                if local is not None:
                    mine = {k: v for k, v in local.items() if micrograph_key(k) == key}
                    if mine:
                        from cryoset.ctf.patches import add_local_defocus  # scipy: only when used

                        df = add_local_defocus(df, mine)
                b = box if box is not None else box_size_for_diameter(float(diameter_a or 0) / px)
                if b > min(image.shape):
                    raise InputError("--box-px" if box is not None else "--diameter-a",
                                     f"a {b} px box does not fit in {path} ({image.shape[0]}×"
                                     f"{image.shape[1]} px)")
                mic_ctf = ctfs.get(key)
                if phase_flip and mic_ctf is None and "defocus_u_a" not in df.columns:
                    raise InputError(ctf, f"has no CTF for {path.name}")
                res = extract_particles(image, df, b, px, pixel_size_out_a=params.pixel_size_out_a,
                                        invert=params.invert, normalise=params.norm,
                                        bg_radius_px=params.bg_radius_px, ctf=mic_ctf,
                                        phase_flip_ctf=phase_flip)
                stack_name = key + ".mrcs"
                if len(res.stack):  # every box of this micrograph may cross its edge
                    write_stack(staged / stack_name, res.stack, res.pixel_size_a)
                t = res.table
                t["micrograph"] = path.name
                t[MICROGRAPH_NAME] = relion_path(path, star_out, style)
                t["image_path"] = relion_path(out / stack_name, star_out, style)
                if mic_ctf is not None and "defocus_u_a" not in t.columns:
                    t["defocus_u_a"] = mic_ctf.defocus_u_a
                    t["defocus_v_a"] = mic_ctf.defocus_v_a
                    t["defocus_angle_deg"] = mic_ctf.defocus_angle_deg
                for col, val in (("voltage_kv", mic_ctf.voltage_kv if mic_ctf else params.voltage_kv),
                                 ("cs_mm", mic_ctf.cs_mm if mic_ctf else params.cs_mm),
                                 ("amplitude_contrast",
                                  mic_ctf.amplitude_contrast if mic_ctf else params.amplitude_contrast)):
                    if col not in t.columns:
                        t[col] = val
                tables.append(t)
                if len(res.skipped_edge):
                    skipped.append(res.skipped_edge.assign(
                        micrograph=path.name, Reason="box crosses the micrograph edge"))
                n_skipped += len(res.skipped_edge)
                bar.update(task, advance=1, description=f"{path.name}: {len(t)} particles")
        table = pd.concat(tables, ignore_index=True)
        if table.empty:
            raise InputError(picks, f"no particle box fits: all {n_skipped} picks lie within half a "
                             "box of the micrograph edge")
        table["optics_group"] = 1
        table["optics_group_name"] = "opticsGroup1"
        keep = [c for c in table.columns if c not in ("ncc", "power", "template")]
        table = table[keep]
        write_particles(staged / star_out.name, table, provenance=prov)
        _write_cvdb(staged / "particles.csv", table, heights, "particles")
        write_provenance(staged / "particles.csv", prov)
        fp = [pd.DataFrame(s) for s in skipped]
        prior = picks / "false_positives.csv" if picks.is_dir() else None
        if prior is not None and prior.exists():
            from cryoset.io.cryovirusdb import read_cryovirusdb

            old = read_cryovirusdb(prior, micrograph_heights=_height_of(heights))
            fp.insert(0, old)
        fps = pd.concat(fp, ignore_index=True) if fp else pd.DataFrame(
            {"micrograph": pd.Series(dtype=str), "x_px": pd.Series(dtype=float),
             "y_px": pd.Series(dtype=float), "Reason": pd.Series(dtype=str)})
        _write_cvdb(staged / "false_positives.csv", fps, heights, "false_positives")
        write_provenance(staged / "false_positives.csv", prov)
        write_provenance(staged, prov)
    return ExtractOutcome(out, len(table), len(micrographs), n_skipped, star_out)


def params_dict(params: PickParams | ExtractParams) -> dict[str, Any]:
    """The parameters as a plain mapping (paths as text)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(params).items()}
