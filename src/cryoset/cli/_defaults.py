"""Command-line defaults as plain constants, so that building the CLI imports no workflow.

Each class (plain class attributes: no dataclass machinery at start-up) mirrors the defaults
of one workflow's parameter dataclass (``PickParams``, ``ExtractParams``, ``CtfParams``,
``Classify2DParams``, ``ReconstructParams``, ``TraceParams``) field by field;
``tests/cli/test_startup.py`` checks that every value here equals the dataclass's own
default, so the dataclass stays the one source and this file a cheap copy.
Importing the workflows would pull numpy, scipy, pandas, numba and more into ``cryoset --help``.
"""

from __future__ import annotations

from pathlib import Path


class PickDefaults:
    """``cryoset.workflows.pick.PickParams``."""

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


class ExtractDefaults:
    """``cryoset.workflows.pick.ExtractParams``."""

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


class CtfDefaults:
    """``cryoset.workflows.ctf.CtfParams``."""

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


class Classify2DDefaults:
    """``cryoset.workflows.classify2d.Classify2DParams``."""

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


class ReconstructDefaults:
    """``cryoset.workflows.reconstruct.ReconstructParams``."""

    symmetry: str = "C1"
    snr: float | None = None
    box_px: int = 0
    ctf: bool = True
    gridding_correction: bool = True
    seed: int = 0
    permissive: bool = False


class TraceDefaults:
    """``cryoset.workflows.trace.TraceParams``."""

    threshold: float = 0.5
    min_distance_a: float = 2.0
    scale_lambda: float = 10.0
    jump_penalty: float = 20.0
    n_best: int = 2
    bidirectional: bool = True
    voxel_size_a: float | None = None
    format: str | None = None
    chain_ids: str | None = None


PICK = PickDefaults
EXTRACT = ExtractDefaults
CTF = CtfDefaults
CLASSIFY2D = Classify2DDefaults
RECONSTRUCT = ReconstructDefaults
TRACE = TraceDefaults

#: ``cryoset.archives.download.Limits().max_download_bytes`` in GB (10^9 bytes): ``fetch --max-download-gb``.
MAX_DOWNLOAD_GB: float = 500.0

#: (mirror, "module:ClassName") pairs checked by the tests.
MIRRORS: tuple[tuple[type, str], ...] = (
    (PICK, "cryoset.workflows.pick:PickParams"),
    (EXTRACT, "cryoset.workflows.pick:ExtractParams"),
    (CTF, "cryoset.workflows.ctf:CtfParams"),
    (CLASSIFY2D, "cryoset.workflows.classify2d:Classify2DParams"),
    (RECONSTRUCT, "cryoset.workflows.reconstruct:ReconstructParams"),
    (TRACE, "cryoset.workflows.trace:TraceParams"),
)
