"""``cryoset simulate``: procedural proteins, density maps, micrographs and particle stacks
with exact truth — demo and test data without any download.

Examples
--------
cryoset simulate protein --protein-length 200 --seed 1 --out protein.pdb

cryoset simulate map --protein-length 150 --resolution-a 6 --out map.mrc

cryoset simulate micrographs --micrographs 4 --size-px 1024 --pixel-size-a 1.0 --particles-per-micrograph 50 --protein-length 300 --defocus-min-a 10000 --defocus-max-a 25000 --dose-e-per-a2 40 --seed 0 --out sim_mics

cryoset simulate particles --particles 2000 --box-px 96 --pixel-size-a 1.5 --junk-fraction 0.2 --snr 0.05 --out sim_particles
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cryoset.cli._options import json_option, option

simulate_app = typer.Typer(
    name="simulate",
    help="Simulate proteins, maps, micrographs and particle stacks with known truth.",
    no_args_is_help=True,
)


def _emit(summary: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        from cryoset.io.jsontext import json_safe

        typer.echo(json.dumps(json_safe(summary), indent=2, sort_keys=True, allow_nan=False))
    else:
        for line in lines:
            typer.echo(line)


@simulate_app.command("protein")
def protein_cmd(
    length: int = option("protein_length", 120, help="Number of residues."),
    seed: int = option("seed", 0, help="Random seed (same seed, same protein)."),
    out: Path = option("out", ..., help="Output .pdb or .cif."),
    as_json: bool = json_option(),
) -> None:
    """Build a compact procedural protein (backbone + Cβ) with exact secondary structure.

    HELIX/SHEET records (mmCIF: _struct_conf/_struct_sheet_range) hold the true
    secondary structure.

    Examples
    --------
    cryoset simulate protein --protein-length 200 --seed 1 --out protein.pdb
    """
    from cryoset.workflows.simulate import simulate_protein

    summary = simulate_protein(out, length, seed)
    _emit(summary, as_json, [
        f"wrote {out}: {summary['residues']} residues, {summary['atoms']} atoms, "
        f"{summary['helices']} helices, {summary['strands']} strands, "
        f"Rg {summary['radius_of_gyration_a']:.1f} Å"])


@simulate_app.command("map")
def map_cmd(
    out: Path = option("out", ..., help="Output .mrc map."),
    model: Path | None = typer.Option(None, "--model", metavar="PATH", help="PDB/mmCIF model (else a procedural protein)."),
    protein_length: int | None = option("protein_length", None, help="Residues of the procedural protein."),
    resolution_a: float = option("resolution_a", 6.0, help="Target resolution, Å."),
    voxel_size_a: float = option("voxel_size_a", 1.0, help="Voxel size, Å."),
    box_px: int | None = option("box_px", None, help="Cubic box edge, voxels (default: fits the model)."),
    seed: int = option("seed", 0, help="Seed of the procedural protein."),
    as_json: bool = json_option(),
) -> None:
    """Simulate a density map (potential in volts) of a model at a target resolution.

    The model's centroid lands on voxel (box//2, box//2, box//2).

    Examples
    --------
    cryoset simulate map --model model.pdb --resolution-a 6 --voxel-size-a 1.2 --out map.mrc
    """
    from cryoset.workflows.simulate import simulate_density_map

    summary = simulate_density_map(out, model=model, protein_length=protein_length, resolution_a=resolution_a,
                                   voxel_size_a=voxel_size_a, box_px=box_px, seed=seed)
    box = summary["box_px"]
    _emit(summary, as_json, [f"wrote {out}: {box}³ voxels of {voxel_size_a} Å at {resolution_a} Å"])


@simulate_app.command("micrographs")
def micrographs_cmd(
    out: Path = option("out", ..., help="Output directory."),
    n: int = option("micrographs", 1, help="Number of micrographs."),
    size: int = option("size_px", 1024, help="Micrograph edge (square), pixels."),
    pixel_size_a: float = option("pixel_size_a", 1.0, help="Pixel size, Å."),
    particles: int = option("particles_per_micrograph", 50, help="Particles per micrograph."),
    model: Path | None = typer.Option(None, "--model", metavar="PATH", help="PDB/mmCIF model (else a procedural protein)."),
    protein_length: int | None = option("protein_length", None, help="Residues of the procedural protein (default 200)."),
    defocus_min_a: float = option("defocus_min_a", 10000.0, help="Smallest defocus, Å (underfocus positive)."),
    defocus_max_a: float = option("defocus_max_a", 25000.0, help="Largest defocus, Å (underfocus positive)."),
    dose: float = option("dose_e_per_a2", 40.0, help="Electron dose, e/Å²."),
    tilt_deg: float = option("tilt_deg", 0.0, help="Specimen tilt (defocus gradient), degrees."),
    ice_thickness_a: float = option("ice_thickness_a", 300.0, help="Mean ice thickness, Å."),
    carbon_fraction: float = typer.Option(0.15, "--carbon-fraction", metavar="FRACTION", help="Fraction covered by carbon."),
    contaminations: int = typer.Option(2, "--contaminations", metavar="N", help="Dark blobs per micrograph."),
    mtf: bool = typer.Option(True, "--mtf/--no-mtf", help="Apply the detector MTF."),
    voltage_kv: float = option("voltage_kv", 300.0, help="Accelerating voltage, kV."),
    seed: int = option("seed", 0),
    as_json: bool = json_option(),
) -> None:
    """Simulate micrographs with particles, ice, carbon, contamination and shot noise.

    Writes micrographs/*.mrc, coords/*.star (truth: x, y, rot, tilt, psi, local defocus),
    micrographs_ctf.star (RELION 3.1), truth_picks.csv, masks/*.png (carbon and contamination,
    255 = reject, for `pick --mask-dir`), model.pdb (procedural protein) and
    provenance.json.

    Examples
    --------
    cryoset simulate micrographs --micrographs 4 --size-px 1024 --particles-per-micrograph 50 --protein-length 300 --defocus-min-a 10000 --defocus-max-a 25000 --seed 0 --out sim
    """
    from cryoset.simulate.micrograph import MicrographSettings
    from cryoset.workflows.simulate import simulate_micrograph_set

    settings = MicrographSettings(
        shape_px=(size, size), pixel_size_a=pixel_size_a, n_particles=particles,
        defocus_range_a=(defocus_min_a, defocus_max_a), tilt_deg=tilt_deg, voltage_kv=voltage_kv,
        dose_e_per_a2=dose, ice_thickness_a=ice_thickness_a, carbon_fraction=carbon_fraction,
        n_contaminations=contaminations, mtf=mtf)
    summary = simulate_micrograph_set(out, settings, n=n, model=model, protein_length=protein_length, seed=seed)
    _emit(summary, as_json, [f"wrote {out}: {n} micrographs of {size}² px, "
                             f"{summary['particles']} particles"])


@simulate_app.command("particles")
def particles_cmd(
    out: Path = option("out", ..., help="Output directory."),
    n: int = option("particles", 100, help="Number of particle images."),
    box: int = option("box_px", 96, help="Box edge, pixels (even)."),
    pixel_size_a: float = option("pixel_size_a", 1.5, help="Pixel size, Å."),
    junk_fraction: float = typer.Option(0.0, "--junk-fraction", metavar="FRACTION", help="Fraction of junk images (noise, ice, pair)."),
    snr: float = typer.Option(0.1, "--snr", metavar="RATIO", help="Signal-to-noise variance ratio (inf: no noise)."),
    model: Path | None = typer.Option(None, "--model", metavar="PATH", help="PDB/mmCIF model (else a procedural protein)."),
    protein_length: int | None = option("protein_length", None, help="Residues of the procedural protein (default 200)."),
    defocus_min_a: float = option("defocus_min_a", 10000.0, help="Smallest defocus, Å (underfocus positive)."),
    defocus_max_a: float = option("defocus_max_a", 25000.0, help="Largest defocus, Å (underfocus positive)."),
    max_shift_a: float = option("max_shift_a", 2.0),
    voltage_kv: float = option("voltage_kv", 300.0, help="Accelerating voltage, kV."),
    seed: int = option("seed", 0),
    as_json: bool = json_option(),
) -> None:
    """Simulate a particle stack with poses, per-particle CTF, junk and controlled SNR.

    Writes particles.mrcs, particles.star (RELION 3.1), truth.csv (with the `kind` column:
    particle / noise / ice / pair), model.pdb (procedural protein) and provenance.json.

    Examples
    --------
    cryoset simulate particles --particles 2000 --box-px 96 --pixel-size-a 1.5 --junk-fraction 0.2 --out sim_particles
    """
    from cryoset.simulate.particles import ParticleSettings
    from cryoset.workflows.simulate import simulate_particle_set

    settings = ParticleSettings(n=n, box_px=box, pixel_size_a=pixel_size_a,
                                defocus_range_a=(defocus_min_a, defocus_max_a), voltage_kv=voltage_kv,
                                snr=snr, junk_fraction=junk_fraction, max_shift_a=max_shift_a)
    summary = simulate_particle_set(out, settings, model=model, protein_length=protein_length, seed=seed)
    _emit(summary, as_json, [f"wrote {out}: {summary['images']} images "
                             + ", ".join(f"{v} {k}" for k, v in sorted(summary["kinds"].items()))])


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command group."""
    app.add_typer(simulate_app, name="simulate")
