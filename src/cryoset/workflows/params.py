"""The workflows' parameter dataclasses: every step's parameters with their one default.

Kept apart from the workflow modules (which import numpy, pandas and the kernels) so that the
command line can show the defaults in ``--help`` without importing any of that: this module
imports the standard library only (``tests/cli/test_startup.py`` checks it). Each workflow
module re-exports its class (``from cryoset.workflows.pick import PickParams`` keeps working).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["AbinitioParams", "Classify2DParams", "CtfParams", "ExtractParams", "PickParams", "PosesParams", "PostprocessParams", "ReconstructParams", "TraceParams"]


@dataclass(frozen=True)
class PickParams:
    """Every parameter of the picking step with its one default (``cryoset pick``, ``pick:``)."""

    diameter_a: float | None = None
    pixel_size_a: float | None = None
    method: str = "blob"
    templates: Path | None = None
    template_pixel_size_a: float | None = None
    import_dir: Path | None = None
    threshold: float | None = None
    min_distance_fraction: float = 0.5
    min_ncc: float | None = None
    min_power: float | None = None
    max_power: float | None = None
    mask_dir: Path | None = None
    ctf: Path | None = None
    max_ctf_resolution_a: float | None = None
    light_particles: bool = False
    format: str = "star"
    checkpoint: Path | None = None  # the encoder of --method features (None: the shipped one)


@dataclass(frozen=True)
class ExtractParams:
    """Every parameter of the extraction step with its one default (``cryoset extract``, ``extract:``)."""

    box_px: int | None = None
    diameter_a: float | None = None
    pixel_size_a: float | None = None
    pixel_size_out_a: float | None = None
    invert: bool = False
    norm: bool = True
    bg_radius_px: float | None = None
    phase_flip: bool = False
    ctf: Path | None = None
    local_defocus: bool = True
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    image_paths: str = "project"


@dataclass(frozen=True)
class CtfParams:
    """Every parameter of the CTF step, with its one default (``cryoset ctf`` and ``ctf:``).

    Field names are the vocabulary's keys (``tile_px`` ↔ ``--tile-px``). Optics left None come
    from the STAR optics where given, else 300 kV, 2.7 mm, 0.1.
    """

    pixel_size_a: float | None = None
    voltage_kv: float | None = None
    cs_mm: float | None = None
    amplitude_contrast: float | None = None
    patches: str | None = None
    surface: str = "plane"
    min_resolution_a: float = 30.0
    max_resolution_a: float = 4.0
    defocus_min_a: float = 2000.0
    defocus_max_a: float = 80000.0
    phase_shift: bool = False
    tile_px: int = 512
    plots: bool = True
    workers: int = 1


@dataclass(frozen=True)
class Classify2DParams:
    """Every parameter of 2D classification with its one default (``cryoset classify2d``, ``classify:``)."""

    n_classes: int = 8
    n_iter: int = 10
    psi_step_deg: float = 10.0
    offset_range_px: int = 5
    offset_recentre: bool = True
    max_offset_px: float | None = None
    diameter_a: float | None = None
    box_px: int = 64
    tau2_fudge: float = 2.0
    hard: bool = False
    ctf: bool = True
    recover: bool = True
    min_population: int = 3
    resolution_factor: float = 2.0
    power_fraction: float = 0.25
    max_power_ratio: float = 3.0
    recover_percentile: float = 10.0
    seed: int = 0
    permissive: bool = False
    rounds: int = 1


@dataclass(frozen=True)
class ReconstructParams:
    """Every parameter of the reconstruction with its one default (``cryoset reconstruct``)."""

    symmetry: str = "C1"
    snr: float | None = None
    box_px: int = 0
    ctf: bool = True
    gridding_correction: bool = True
    seed: int = 0
    permissive: bool = False


@dataclass(frozen=True)
class RefineParams:
    """Every parameter of gold-standard 3D refinement with its one default (``cryoset refine``)."""

    symmetry: str = "C1"
    ctf: bool = True
    initial_lowpass_a: float = 30.0
    angular_step_deg: float = 7.5
    final_angular_step_deg: float = 0.9
    shift_range_px: float = 3.0
    shift_step_px: float = 1.0
    global_iterations: int = 3
    iterations: int = 25
    seed: int = 0
    permissive: bool = False
    n_best_poses: int = 8


@dataclass(frozen=True)
class PostprocessParams:
    """Every parameter of map post-processing with its one default (``cryoset postprocess``,
    ``cryoset mask-create``); see docs/postprocess.md.

    ``auto_mask``: make a soft mask from the average of the half maps (low-pass at
    ``mask_lowpass_a``, threshold ``mask_threshold`` or one from the map's statistics, extend by
    ``extend_px`` (tight) and ``loose_extend_px`` (loose), raised-cosine edge ``soft_edge_px``).
    ``bfactor_a2``: None estimates it (Guinier fit from ``bfactor_low_a`` to ``bfactor_high_a``,
    None: the FSC resolution; relion_postprocess's default ``--autob_highres 0`` is Nyquist);
    a value is applied as ``exp(−B s²/4)`` (negative sharpens, RELION's sign).
    """

    auto_mask: bool = False
    mask_threshold: float | None = None
    mask_lowpass_a: float = 15.0
    extend_px: float = 3.0
    loose_extend_px: float = 8.0
    soft_edge_px: float = 6.0
    bfactor_a2: float | None = None
    bfactor_low_a: float = 10.0
    bfactor_high_a: float | None = None
    randomise_below_fsc: float = 0.8
    local_resolution: bool = False
    local_window_px: int = 20
    seed: int = 0
    permissive: bool = False


@dataclass(frozen=True)
class TraceParams:
    """Every parameter of tracing with its one default (``cryoset trace``)."""

    threshold: float = 0.5
    min_distance_a: float = 2.0
    scale_lambda: float = 10.0
    jump_penalty: float = 20.0
    n_best: int = 2
    bidirectional: bool = True
    voxel_size_a: float | None = None
    format: str | None = None
    chain_ids: str | None = None


@dataclass(frozen=True)
class AbinitioParams:
    """Every parameter of ab initio 3D with its one default (``cryoset abinitio``); the
    method's settings are :class:`cryoset.recon.abinitio.AbinitioSettings`'s."""

    n_classes: int = 1
    symmetry: str = "C1"
    box_px: int = 0
    n_iterations: int = 40
    batch_size: int = 100
    initial_resolution_a: float = 35.0
    final_resolution_a: float = 15.0
    angular_step_deg: float = 15.0
    final_angular_step_deg: float = 5.0
    max_shift_a: float = 0.0
    ctf: bool = True
    seed: int = 0
    permissive: bool = False


@dataclass(frozen=True)
class PosesParams:
    """Every parameter of ``cryoset poses export`` with its one default."""

    match_tolerance_px: float = 0.01
    permissive: bool = False
