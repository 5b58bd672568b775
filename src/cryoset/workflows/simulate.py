"""``cryoset simulate …``: procedural proteins, density maps, micrographs and particle stacks
written to files, with their truth and provenance.

One function per command (:func:`simulate_protein`, :func:`simulate_density_map`,
:func:`simulate_micrograph_set`, :func:`simulate_particle_set`) and the writers they use
(:func:`write_structure`, :func:`write_simulated_map`, :func:`write_micrograph_set`,
:func:`write_particle_set`). The physics and scenes are the kernels of :mod:`cryoset.simulate`
(arrays in, arrays out).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from cryoset.errors import InputError
from cryoset.io.atomic import atomic_directory, atomic_path
from cryoset.provenance import make_provenance, write_provenance
from cryoset.simulate.micrograph import AtomSet, MicrographSettings, SimulatedMicrograph
from cryoset.simulate.particles import ParticleSettings, SimulatedParticles
from cryoset.simulate.protein import Protein, to_gemmi_structure

__all__ = [
    "simulate_density_map",
    "simulate_micrograph_set",
    "simulate_particle_set",
    "simulate_protein",
    "write_micrograph_set",
    "write_particle_set",
    "write_simulated_map",
    "write_structure",
]


# ------------------------------------------------------------------------------ writers
def write_structure(protein: Protein, path: str | os.PathLike[str], *,
                    provenance: dict[str, Any] | None = None) -> Path:
    """Write ``protein`` as PDB (``.pdb``/``.ent``) or mmCIF (``.cif``/``.mmcif``), atomically.

    PDB output carries HELIX/SHEET records, mmCIF output ``_struct_conf`` and
    ``_struct_sheet_range``. A provenance record (if given) is written as the sidecar
    ``<path>.provenance.json``.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    st = to_gemmi_structure(protein)
    if suffix in (".pdb", ".ent"):
        text = st.make_pdb_string()
    elif suffix in (".cif", ".mmcif"):
        text = st.make_mmcif_document().as_string()
    else:
        raise InputError(out, "unknown structure suffix (use .pdb or .cif)")
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    if provenance is not None:
        from cryoset.provenance import write_provenance

        write_provenance(out, provenance)
    return out


def write_simulated_map(path: str | os.PathLike[str], volume: ArrayLike, voxel_size_a: float,
                        origin_a: Sequence[float] = (0.0, 0.0, 0.0), *,
                        parameters: Mapping[str, Any] | None = None,
                        inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Write a simulated map as MRC (atomic, with a provenance sidecar).

    Parameters
    ----------
    path
        Output ``.mrc`` path.
    volume : array, shape (nz, ny, nx)
    voxel_size_a, origin_a
        Grid as passed to :func:`cryoset.simulate.density.simulate_map`.
    parameters
        Simulation parameters recorded in the provenance (resolution, method, …).
    inputs
        Input files (e.g. the model) hashed into the provenance.

    Returns
    -------
    Path
    """
    from cryoset.io.mrc import write_map

    record = make_provenance("simulate map", parameters, inputs)
    return write_map(path, volume, voxel_size_a, origin_a, provenance=record)


def write_micrograph_set(out_dir: Path, micrographs: list[SimulatedMicrograph],
                         settings: MicrographSettings, *,
                         provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write simulated micrographs and their truth into ``out_dir`` (which must exist).

    Layout::

        micrographs/<name>.mrc     counts, float32 (one image, ISPG 0)
        coords/<stem>.star         truth coordinates: rlnCoordinateX/Y, rlnAngleRot/Tilt/Psi,
                                   rlnDefocusU/V/Angle (local CTF) per particle
        micrographs_ctf.star       RELION 3.1 optics + micrographs blocks (CTF at the centre)
        truth_picks.csv            all particles: canonical picks columns + pose + defocus
        masks/<stem>.png           carbon ∪ contamination, 255 = reject (for ``pick --mask-dir``)

    Coordinates follow :mod:`cryoset.io.particles` (``rlnCoordinateX`` = ``x_px``).

    Returns
    -------
    dict
        Counts and paths (relative to ``out_dir``), JSON-serialisable.
    """
    from cryoset.io.micrograph_star import write_micrograph_star
    from cryoset.io.mrc import write_stack
    from cryoset.io.relion_labels import TRUTH_COORDINATE_LABELS
    from cryoset.io.star import write_star

    comment = None
    if provenance is not None:
        comment = f"cryoset {provenance.get('cryoset_version', '')} {provenance.get('command', '')}"
    (out_dir / "micrographs").mkdir(exist_ok=True)
    (out_dir / "coords").mkdir(exist_ok=True)
    (out_dir / "masks").mkdir(exist_ok=True)
    from PIL import Image

    from cryoset.io.atomic import atomic_path

    rows: list[dict[str, Any]] = []
    for mic in micrographs:
        name = mic.name
        write_stack(out_dir / "micrographs" / name, mic.image, settings.pixel_size_a)
        coords = pd.DataFrame({label: mic.picks[col].to_numpy() for col, label in TRUTH_COORDINATE_LABELS})
        write_star(out_dir / "coords" / (Path(name).stem + ".star"), {"": coords}, comment=comment)
        reject = (mic.carbon_mask | mic.contamination_mask).astype(np.uint8) * 255
        with atomic_path(out_dir / "masks" / (Path(name).stem + ".png")) as tmp:
            Image.fromarray(reject).save(tmp, format="PNG")
        c = mic.ctf
        rows.append({
            "micrograph": f"micrographs/{name}",
            "defocus_u_a": c.defocus_u_a,
            "defocus_v_a": c.defocus_v_a,
            "ctf_astigmatism_a": c.astigmatism_a,
            "defocus_angle_deg": c.defocus_angle_deg,
            "phase_shift_deg": c.phase_shift_deg,
        })
    ctf_table = pd.DataFrame(rows, columns=["micrograph", "defocus_u_a", "defocus_v_a", "ctf_astigmatism_a",
                                            "defocus_angle_deg", "phase_shift_deg"])
    ctf_table["pixel_size_a"] = settings.pixel_size_a
    ctf_table["voltage_kv"] = settings.voltage_kv
    ctf_table["cs_mm"] = settings.cs_mm
    ctf_table["amplitude_contrast"] = settings.amplitude_contrast
    write_micrograph_star(out_dir / "micrographs_ctf.star", ctf_table, comment=comment)
    picks = pd.concat([m.picks for m in micrographs], ignore_index=True) if micrographs else \
        pd.DataFrame(columns=["micrograph", "x_px", "y_px", "score", "diameter_px"])
    with atomic_path(out_dir / "truth_picks.csv") as tmp:
        picks.to_csv(tmp, index=False)
    return {
        "micrographs": len(micrographs),
        "particles": len(picks),
        "micrograph_star": "micrographs_ctf.star",
        "truth_picks": "truth_picks.csv",
    }


def write_particle_set(out_dir: Path, result: SimulatedParticles, *,
                       stack_name: str = "particles.mrcs",
                       provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a simulated stack into ``out_dir`` (which must exist).

    Files: ``particles.mrcs`` (float32 stack), ``particles.star`` (RELION 3.1, optics +
    particles, via :func:`cryoset.io.particles.write_particles`; junk images included, the
    ``kind`` column is left out of the STAR file) and ``truth.csv`` (the full table with
    ``kind``).

    Returns
    -------
    dict
        Counts per kind and file names, JSON-serialisable.
    """
    from cryoset.io.atomic import atomic_path
    from cryoset.io.mrc import write_stack
    from cryoset.io.particles import write_particles

    pixel = float(result.table["pixel_size_a"].iloc[0])
    write_stack(out_dir / stack_name, result.images, pixel)
    table = result.table.copy()
    table.insert(1, "image_path", stack_name)
    star = table.drop(columns=["kind"]).fillna(
        {"rot_deg": 0.0, "tilt_deg": 0.0, "psi_deg": 0.0, "shift_x_a": 0.0, "shift_y_a": 0.0})
    star["optics_group"] = 1
    star["optics_group_name"] = "opticsGroup1"
    write_particles(out_dir / "particles.star", star, provenance=provenance)
    with atomic_path(out_dir / "truth.csv") as tmp:
        table.to_csv(tmp, index=False)
    counts = {str(k): int(v) for k, v in table["kind"].value_counts().items()}
    return {"images": len(table), "kinds": counts, "stack": stack_name,
            "star": "particles.star", "truth": "truth.csv"}



# ------------------------------------------------------------------------------ commands
@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    """A rich progress bar on stderr (transient), or a silent stand-in."""
    if not enabled:
        class _Quiet:
            def add_task(self, *a: Any, **k: Any) -> int:
                return 0

            def advance(self, *a: Any, **k: Any) -> None:
                pass

            def update(self, *a: Any, **k: Any) -> None:
                pass

        yield _Quiet()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        yield bar


def _atoms(model: Path | None, protein_length: int | None, seed: int) -> tuple[AtomSet, Protein | None]:
    """The structure to image: a model file, or a procedural protein (also returned)."""
    from cryoset.simulate.micrograph import atoms_from_file, atoms_from_protein
    from cryoset.simulate.protein import build_protein

    if model is not None and protein_length is not None:
        raise InputError("--model", "give either --model or --protein-length, not both")
    if model is not None:
        if not model.is_file():
            raise InputError(model, "no such file")
        return atoms_from_file(str(model)), None
    protein = build_protein(protein_length or 200, seed)
    return atoms_from_protein(protein), protein


def _seeds(seed: int, n: int) -> list[int]:
    """Independent child seeds of ``seed`` (stable: micrograph k gets the same seed for any n)."""
    children = np.random.SeedSequence(seed).spawn(n)
    return [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]


def simulate_protein(out: Path, length: int = 120, seed: int = 0) -> dict[str, Any]:
    """``cryoset simulate protein``: a procedural protein written as PDB/mmCIF; its summary."""
    from cryoset.simulate.protein import build_protein

    if out.suffix.lower() not in (".pdb", ".ent", ".cif", ".mmcif"):
        raise InputError(out, "unknown structure suffix (use .pdb or .cif)")
    protein = build_protein(length, seed)
    record = make_provenance("simulate protein", {"length": length, "seed": seed})
    write_structure(protein, out, provenance=record)
    segments = protein.segments()
    return {
        "output": str(out), "residues": protein.n_residues, "atoms": protein.n_atoms,
        "sequence": protein.sequence, "secondary_structure": protein.secondary_structure,
        "helices": sum(k == "H" for k, _, _ in segments),
        "strands": sum(k == "E" for k, _, _ in segments),
        "radius_of_gyration_a": round(protein.radius_of_gyration_a(), 3), "seed": seed,
    }


def simulate_density_map(out: Path, *, model: Path | None = None, protein_length: int | None = None,
                         resolution_a: float = 6.0, voxel_size_a: float = 1.0, box_px: int | None = None,
                         seed: int = 0) -> dict[str, Any]:
    """``cryoset simulate map``: the density map of a model (or procedural protein) at a target
    resolution, its centroid on voxel ``(box//2,)*3``; its summary."""
    from cryoset.simulate.density import simulate_map

    if not resolution_a > 0:
        raise InputError("--resolution-a", f"must be > 0 Å, got {resolution_a}")
    if not voxel_size_a > 0:
        raise InputError("--voxel-size-a", f"must be > 0 Å, got {voxel_size_a}")
    atoms, protein = _atoms(model, protein_length, seed)
    centre = atoms.xyz_a.mean(axis=0)
    box = box_px or int(2 * math.ceil((atoms.radius_a + 2 * resolution_a + 5) / voxel_size_a))
    if box < 8:
        raise InputError("--box-px", f"must be >= 8, got {box}")
    origin = tuple(float(c - (box // 2) * voxel_size_a) for c in centre[::-1])
    vol = simulate_map(atoms.xyz_a, atoms.elements, atoms.b_factors_a2, shape=(box,) * 3,
                       voxel_size_a=voxel_size_a, origin_a=origin, resolution_a=resolution_a,
                       permissive=True)
    params = {"resolution_a": resolution_a, "voxel_size_a": voxel_size_a, "box_px": box,
              "seed": seed, "protein_length": None if protein is None else protein.n_residues}
    write_simulated_map(out, vol, voxel_size_a, origin, parameters=params,
                        inputs=[model] if model is not None else [])
    return {"output": str(out), "box_px": box, "voxel_size_a": voxel_size_a,
            "resolution_a": resolution_a, "origin_a": list(origin)}


def simulate_micrograph_set(out: Path, settings: MicrographSettings, *, n: int = 1, model: Path | None = None,
                            protein_length: int | None = None, seed: int = 0,
                            progress: bool = True) -> dict[str, Any]:
    """``cryoset simulate micrographs``: ``n`` micrographs written by :func:`write_micrograph_set`
    (plus ``model.pdb`` of a procedural protein and ``provenance.json``), atomically; the summary."""
    from cryoset.simulate.micrograph import simulate_micrograph

    if n < 1:
        raise InputError("--micrographs", f"must be >= 1, got {n}")
    settings.check()
    atoms, protein = _atoms(model, protein_length, seed)
    params = {k: getattr(settings, k) for k in settings.__dataclass_fields__}
    params.update(n=n, seed=seed, model=None if model is None else str(model),
                  protein_length=None if protein is None else protein.n_residues)
    record = make_provenance("simulate micrographs", params, [model] if model is not None else [])
    results = []
    with atomic_directory(out) as tmp:
        with _progress(progress) as bar:
            task = bar.add_task("simulating micrographs", total=n)
            for k, s in enumerate(_seeds(seed, n)):
                results.append(simulate_micrograph(atoms, settings, s, name=f"micrograph_{k:04d}.mrc"))
                bar.advance(task)
        summary = write_micrograph_set(tmp, results, settings, provenance=record)
        if protein is not None:
            write_structure(protein, tmp / "model.pdb")
        write_provenance(tmp, record)
    summary.update(output=str(out), size_px=settings.shape_px[1], pixel_size_a=settings.pixel_size_a,
                   defocus_a=[float(r.ctf.defocus_mean_a) for r in results], seed=seed)
    return summary


def simulate_particle_set(out: Path, settings: ParticleSettings, *, model: Path | None = None,
                          protein_length: int | None = None, seed: int = 0,
                          progress: bool = True) -> dict[str, Any]:
    """``cryoset simulate particles``: a particle stack written by :func:`write_particle_set`
    (plus ``model.pdb`` of a procedural protein and ``provenance.json``), atomically; the summary."""
    from cryoset.simulate.particles import simulate_particles

    settings.check()
    atoms, protein = _atoms(model, protein_length, seed)
    params = {k: getattr(settings, k) for k in settings.__dataclass_fields__}
    params.update(seed=seed, model=None if model is None else str(model),
                  protein_length=None if protein is None else protein.n_residues)
    record = make_provenance("simulate particles", params, [model] if model is not None else [])
    with _progress(progress) as bar:
        task = bar.add_task("simulating particles", total=settings.n)
        result = simulate_particles(atoms, settings, seed,
                                    progress=lambda done: bar.update(task, completed=done))
    with atomic_directory(out) as tmp:
        summary = write_particle_set(tmp, result, provenance=record)
        if protein is not None:
            write_structure(protein, tmp / "model.pdb")
        write_provenance(tmp, record)
    summary.update(output=str(out), box_px=settings.box_px, pixel_size_a=settings.pixel_size_a,
                   snr=settings.snr, seed=seed)
    return summary
