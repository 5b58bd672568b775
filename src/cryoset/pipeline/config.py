"""The build configuration: parsed with ``yaml.safe_load`` and validated key by key.

Errors name the file and the dotted key, e.g.
``config.yaml: pick.diameter_a: must be a positive number``; unknown keys are rejected.
Keys are the command-line option names in snake_case (``--pixel-size-out-a`` →
``pixel_size_out_a``; docs/cli.md); keys renamed since the previous release are still
accepted with a one-line notice on stderr. See docs/build.md for every key.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cryoset.deprecation import notify_deprecated
from cryoset.errors import InputError
from cryoset.picking.base import available_pickers
from cryoset.workflows.classify2d import Classify2DParams
from cryoset.workflows.ctf import CtfParams
from cryoset.workflows.curate import CurateParams
from cryoset.workflows.params import AbinitioParams, RefineParams
from cryoset.workflows.pick import ExtractParams, PickParams

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# key → (kind, default, required). kinds: posnum, nonneg, posint, int, bool, str, range,
# grid ("NxM"), choice:a|b|c. The defaults of the step sections are those of the workflow
# parameter classes, the very ones the commands' options use: defined once, in workflows/.
def _from(params: type[Any], kinds: Mapping[str, str]) -> dict[str, tuple[str, Any, bool]]:
    """A config section whose keys and defaults are fields of a workflow parameter class."""
    defaults = {f.name: f.default for f in dataclasses.fields(params)}
    unknown = sorted(set(kinds) - set(defaults))
    if unknown:  # pragma: no cover - a programming error
        raise KeyError(f"{params.__name__} has no field {unknown[0]}")
    return {key: (kind, defaults[key], False) for key, kind in kinds.items()}


_SECTIONS: dict[str, dict[str, tuple[str, Any, bool]]] = {
    # optics come from the experiment; parallelism from execution.workers
    "ctf": _from(CtfParams, {
        "patches": "grid", "surface": "choice:plane|quadratic|constant", "min_resolution_a": "posnum",
        "max_resolution_a": "posnum", "defocus_min_a": "posnum", "defocus_max_a": "posnum",
        "phase_shift": "bool", "tile_px": "posint", "plots": "bool"}),
    # the CTF STAR of inspection is the build's own; templates / import_dir / mask_dir are
    # paths relative to the configuration file
    "pick": _from(PickParams, {
        "diameter_a": "posnum", "method": "choice:" + "|".join(sorted(available_pickers())), "templates": "str",
        "template_pixel_size_a": "posnum", "import_dir": "str", "threshold": "number",
        "min_distance_fraction": "nonneg", "min_ncc": "number", "min_power": "number",
        "max_power": "number", "mask_dir": "str", "max_ctf_resolution_a": "posnum",
        "light_particles": "bool", "format": "choice:star|box|csv|cbox|topaz|cs"}),
    # the box defaults from the particle diameter; the CTF is the build's own
    "extract": _from(ExtractParams, {
        "box_px": "posint", "pixel_size_out_a": "posnum", "invert": "bool", "norm": "bool",
        "bg_radius_px": "posnum", "phase_flip": "bool", "local_defocus": "bool"}),
    # the mask diameter is the particle diameter
    "classify": _from(Classify2DParams, {
        "n_classes": "posint", "n_iter": "posint", "psi_step_deg": "posnum",
        "offset_range_px": "nonneg_int", "offset_recentre": "bool", "max_offset_px": "nonneg",
        "box_px": "nonneg_int", "tau2_fudge": "posnum", "hard": "bool", "ctf": "bool",
        "recover": "bool", "min_population": "nonneg_int", "resolution_factor": "posnum",
        "power_fraction": "nonneg", "max_power_ratio": "posnum", "recover_percentile": "percent",
        "seed": "int", "rounds": "posint"}),
    # 3D (optional: the abinitio and refine stages run when the configuration has `refine:`);
    # ab initio makes one map on the full box with refine.symmetry; the particles are the last
    # classify round's kept ones
    "abinitio": {"n_iter": ("posint", AbinitioParams.n_iterations, False),  # --n-iter
                 **_from(AbinitioParams, {
                     "batch_size": "posint", "initial_resolution_a": "posnum", "final_resolution_a": "posnum",
                     "angular_step_deg": "posnum", "final_angular_step_deg": "posnum", "max_shift_a": "nonneg",
                     "ctf": "bool", "seed": "int"})},
    "refine": _from(RefineParams, {
        "symmetry": "str", "ctf": "bool", "initial_lowpass_a": "posnum", "angular_step_deg": "posnum",
        "final_angular_step_deg": "posnum", "shift_range_px": "nonneg", "iterations": "posint", "seed": "int",
        "n_best_poses": "posint"}),
    "duplicates": _from(CurateParams, {"min_distance_a": "nonneg"}),
    "store": {"encoding": ("encoding", "uint8", False), "chunk_particles": ("posint", 256, False)},
    # where the store stage reads the archive records an experiment names (emdb_id, pdb_id):
    # the `cryoset fetch` cache (default $CRYOSET_CACHE or ~/.cache/cryoset); offline: cache only
    "archives": {"cache": ("str", None, False), "offline": ("bool", False, False)},
    "execution": {"workers": ("posint", 2, False), "retries": ("nonneg_int", 2, False)},
}
_SIMULATED: dict[str, tuple[str, Any, bool]] = {
    "seed": ("int", None, True), "protein_length": ("posint", None, True),
    "micrographs": ("posint", None, True), "size_px": ("posint", 512, False),
    "pixel_size_a": ("posnum", 1.5, False), "particles_per_micrograph": ("posint", 20, False),
    "defocus_min_a": ("posnum", 10000.0, False), "defocus_max_a": ("posnum", 25000.0, False),
    "voltage_kv": ("posnum", 300.0, False), "cs_mm": ("nonneg", 2.7, False),
    "amplitude_contrast": ("fraction", 0.07, False), "dose_e_per_a2": ("posnum", 40.0, False),
}
_LOCAL: dict[str, tuple[str, Any, bool]] = {
    "micrographs": ("str", None, True), "pixel_size_a": ("posnum", None, True),
    "voltage_kv": ("posnum", None, True), "cs_mm": ("nonneg", None, True),
    "amplitude_contrast": ("fraction", 0.1, False),
    # the authors' picks (a directory of coordinate files), for pick.method: import
    "import_dir": ("str", None, False),
}
#: Upper bounds (dotted key suffix → largest value) that keep a simulated experiment within
#: memory: a 8192² micrograph is 0.5 GB in float64; larger sizes are typos, refused up front
#: instead of failing (and being retried) with a MemoryError deep in a worker.
_MAXIMA: dict[str, int] = {
    "simulated.size_px": 8192,
    "simulated.micrographs": 100_000,
    "simulated.protein_length": 5_000,
    "simulated.particles_per_micrograph": 10_000,
    "ctf.tile_px": 4096,
    "extract.box_px": 4096,
}
#: section → {old key: new key}: renamed keys, accepted for one release with a notice.
_OLD_KEYS: dict[str, dict[str, str]] = {
    "extract": {"pixel_size_a": "pixel_size_out_a"},  # the output pixel size (--pixel-size-out-a)
}
_MESSAGES = {
    "posnum": "must be a positive number", "nonneg": "must be a number >= 0",
    "number": "must be a number", "posint": "must be a positive integer",
    "nonneg_int": "must be an integer >= 0", "int": "must be an integer",
    "bool": "must be true or false", "str": "must be a non-empty string",
    "fraction": "must be a number in [0, 1)", "encoding": "must be 'uint8' or 'float16'",
    "grid": "must be a patch grid NxM, e.g. '3x3'", "percent": "must be a number in [0, 100]",
}


#: Archive accessions an experiment may name (filled into the store by the store stage).
_ARCHIVE_IDS: tuple[str, ...] = ("emdb_id", "pdb_id", "empiar_id")


def _archive_ids(src: Path | str, where: str, exp: Mapping[str, Any]) -> dict[str, str]:
    """The experiment's archive accessions, normalised (``EMD-5168``, ``3MFP``, ``EMPIAR-10028``)."""
    from cryoset.archives.emdb import normalise_emdb_id
    from cryoset.archives.empiar import normalise_empiar_id
    from cryoset.archives.pdb import normalise_pdb_id

    out: dict[str, str] = {}
    for key, norm, prefix in (("emdb_id", normalise_emdb_id, "EMD-"), ("pdb_id", normalise_pdb_id, ""),
                              ("empiar_id", normalise_empiar_id, "EMPIAR-")):
        value = exp.get(key)
        if value is None:
            continue
        try:
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise ValueError
            out[key] = prefix + norm(str(value))
        except ValueError:
            raise InputError(src, f"{where}.{key}: not an accession, got {value!r}") from None
    return out


def _message(kind: str) -> str:
    if kind.startswith("choice:"):
        return "must be one of " + ", ".join(kind.removeprefix("choice:").split("|"))
    return _MESSAGES[kind]


def _ok(kind: str, value: Any) -> bool:
    if kind.startswith("choice:"):
        return isinstance(value, str) and value in kind.removeprefix("choice:").split("|")
    is_num = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value))
    is_int = isinstance(value, int) and not isinstance(value, bool)
    checks = {
        "posnum": is_num and value > 0,
        "nonneg": is_num and value >= 0,
        "number": is_num,
        "posint": is_int and value > 0,
        "nonneg_int": is_int and value >= 0,
        "int": is_int,
        "bool": isinstance(value, bool),
        "str": isinstance(value, str) and value.strip() != "",
        "fraction": is_num and 0 <= value < 1,
        "encoding": value in ("uint8", "float16"),
        "grid": isinstance(value, str) and re.fullmatch(r"\s*[1-9]\d*\s*[xX]\s*[1-9]\d*\s*", value) is not None,
        "percent": is_num and 0 <= value <= 100,
    }
    return bool(checks[kind])


def _renamed_keys(src: Path | str, prefix: str, given: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """``given`` with the old spellings of ``prefix``'s keys replaced (one notice each)."""
    renames = _OLD_KEYS.get(prefix, {})
    if not any(old in given for old in renames):
        return given
    out = dict(given)
    for old, new in renames.items():
        if old in out:
            if new in out:
                raise InputError(src, f"{prefix}.{old}: is the old name of {prefix}.{new}; give only {new}")
            notify_deprecated(f"{src}: {prefix}.{old}", f"{prefix}.{new}")
            out[new] = out.pop(old)
    return out


def _section(src: Path | str, prefix: str, given: Any, spec: Mapping[str, tuple[str, Any, bool]]
             ) -> dict[str, Any]:
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise InputError(src, f"{prefix}: must be a mapping")
    given = _renamed_keys(src, prefix, given)
    unknown = sorted(set(map(str, given)) - set(spec))
    if unknown:
        raise InputError(src, f"{prefix}.{unknown[0]}: unknown key (allowed: {', '.join(spec)})")
    out: dict[str, Any] = {}
    for key, (kind, default, required) in spec.items():
        if key not in given or given[key] is None:
            if required:
                raise InputError(src, f"{prefix}.{key}: is required")
            out[key] = default
            continue
        value = given[key]
        if not _ok(kind, value):
            raise InputError(src, f"{prefix}.{key}: {_message(kind)}, got {value!r}")
        limit = next((m for k, m in _MAXIMA.items() if f"{prefix}.{key}".endswith(k)), None)
        if limit is not None and value > limit:
            raise InputError(src, f"{prefix}.{key}: must be at most {limit}, got {value!r}")
        out[key] = float(value) if kind in ("posnum", "nonneg", "number", "fraction", "percent") else value
    return out


def load_config(config: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """Read and validate a build configuration.

    Parameters
    ----------
    config
        A YAML file or an already-parsed mapping.

    Returns
    -------
    dict
        The validated configuration with every default filled in, plus ``base_dir`` (the
        directory relative paths are resolved against).

    Raises
    ------
    InputError
        ``<file>: <dotted.key>: <what is wrong>`` for the first problem found.
    """
    if isinstance(config, Mapping):
        raw: Any = copy.deepcopy(dict(config))
        src: Path | str = "config"
        base = Path.cwd()
    else:
        path = Path(config)
        if not path.is_file():
            raise InputError(path, "no such file")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise InputError(path, "is not a text file (a build configuration is YAML)") from None
        except yaml.YAMLError as exc:
            raise InputError(path, f"is not valid YAML ({str(exc).splitlines()[0]})") from None
        src = path.name
        base = path.resolve().parent
    if not isinstance(raw, Mapping):
        raise InputError(src, "must be a YAML mapping")
    allowed = {"name", "experiments", "curation", *_SECTIONS}
    unknown = sorted(set(map(str, raw)) - allowed)
    if unknown:
        raise InputError(src, f"{unknown[0]}: unknown key (allowed: {', '.join(sorted(allowed))})")
    out: dict[str, Any] = {"name": str(raw.get("name") or "cryoset build"), "base_dir": str(base)}
    curation = raw.get("curation")
    if curation is not None and not _ok("str", curation):
        raise InputError(src, f"curation: {_message('str')} (a `cryoset catalog curate` output), got {curation!r}")
    out["curation"] = curation
    for name, spec in _SECTIONS.items():
        out[name] = _section(src, name, raw.get(name), spec)
    # the 3D stages run only when asked for (`refine:`, even empty); without it builds hash as before
    out["reconstruct3d"] = "refine" in raw
    if "abinitio" in raw and not out["reconstruct3d"]:
        raise InputError(src, "abinitio: configures the ab initio of the 3D stages, which run only with a "
                         "refine: section (add `refine: {}`)")
    if out["abinitio"]["initial_resolution_a"] < out["abinitio"]["final_resolution_a"]:
        raise InputError(src, "abinitio.initial_resolution_a: must be >= abinitio.final_resolution_a")
    if out["refine"]["final_angular_step_deg"] > out["refine"]["angular_step_deg"]:
        raise InputError(src, "refine.final_angular_step_deg: must be <= refine.angular_step_deg")
    from cryoset.recon.symmetry import parse_point_group

    try:
        parse_point_group(out["refine"]["symmetry"])
    except InputError as exc:
        raise InputError(src, f"refine.symmetry: {exc.message}") from None
    ctf = out["ctf"]
    if ctf["max_resolution_a"] >= ctf["min_resolution_a"]:
        raise InputError(src, "ctf.max_resolution_a: must be smaller than ctf.min_resolution_a")
    if ctf["defocus_min_a"] >= ctf["defocus_max_a"]:
        raise InputError(src, "ctf.defocus_min_a: must be smaller than ctf.defocus_max_a")
    if ctf["tile_px"] < 128:
        raise InputError(src, "ctf.tile_px: must be at least 128")
    pick = out["pick"]
    if pick["method"] == "import" and pick["import_dir"] is None and any(
            isinstance(e, Mapping) and "local" in e and not (e.get("local") or {}).get("import_dir")
            for e in (raw.get("experiments") or [])):
        raise InputError(src, "pick.import_dir: is required for pick.method import (or give each local "
                         "experiment its import_dir)")
    exps = raw.get("experiments")
    if not isinstance(exps, list) or not exps:
        raise InputError(src, "experiments: must be a non-empty list")
    seen: set[str] = set()
    out["experiments"] = []
    for k, exp in enumerate(exps):
        where = f"experiments[{k}]"
        if not isinstance(exp, Mapping):
            raise InputError(src, f"{where}: must be a mapping")
        unknown = sorted(set(map(str, exp)) - {"id", "simulated", "local", *_ARCHIVE_IDS})
        if unknown:
            raise InputError(src, f"{where}.{unknown[0]}: unknown key (allowed: id, simulated, local, "
                             f"{', '.join(_ARCHIVE_IDS)})")
        eid = exp.get("id")
        if not isinstance(eid, str) or not _ID.match(eid):
            raise InputError(src, f"{where}.id: must be letters, digits, '.', '_' or '-', got {eid!r}")
        if eid in seen:
            raise InputError(src, f"{where}.id: duplicate experiment id {eid!r}")
        seen.add(eid)
        kinds = [key for key in ("simulated", "local") if key in exp]
        if len(kinds) != 1:
            raise InputError(src, f"{where}: needs exactly one of 'simulated' or 'local'")
        kind = kinds[0]
        spec = _SIMULATED if kind == "simulated" else _LOCAL
        params = _section(src, f"{where}.{kind}", exp[kind], spec)
        if kind == "simulated":
            if params["defocus_min_a"] > params["defocus_max_a"]:
                raise InputError(src, f"{where}.simulated.defocus_min_a: must not exceed defocus_max_a")
            if params["size_px"] < 128:
                raise InputError(src, f"{where}.simulated.size_px: must be at least 128")
            if params["protein_length"] < 5:
                raise InputError(src, f"{where}.simulated.protein_length: must be at least 5")
        elif out["pick"]["diameter_a"] is None:
            raise InputError(src, f"pick.diameter_a: is required for local experiment {eid!r}")
        out["experiments"].append({"id": eid, "kind": kind, "params": params,
                                   "archive": _archive_ids(src, where, exp)})
    return out
