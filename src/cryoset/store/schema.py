"""The versioned annotation schema of the particle store (one Parquet row per particle).

Version history
---------------
1.0
    First release. Required: ``experiment_id``, ``particle_index``, ``image_offset``,
    ``image_scale``. Everything else optional (null when unknown).
1.1
    Adds ``ctf_phase_flipped`` (optional; absent or null reads as 0, not flipped), so
    classification and reconstruction from a store apply ``|CTF|`` to phase-flipped images.
1.2
    Adds the cryoPANDA annotation set that had no column (issue #24): ``uid``, ``image_name``,
    ``ncc_score``, ``micrograph_nx_px``/``micrograph_ny_px``, ``x_frac``/``y_frac``,
    ``micrograph_pixel_size_a``, ``coordinate_y_transposed``, ``alignment_error_3d``,
    ``image_size_px``, ``box_pixel_size_a``, ``reconstruction_resolution_a``, ``emd_resolution_a``,
    ``subunits``, ``max_diameter_a``, ``dna``, ``rna``, ``sample_name``, ``number_of_particles``,
    ``data_source_type``, ``bad_reconstruction``. All optional; 1.0/1.1 stores read unchanged.
    The mapping of cryoPANDA's 48 keys is :data:`cryoset.datasets.cryopanda.CRYOPANDA_KEYS`.

Columns are grouped as the cryoPANDA paper groups its ~47 fields: experiment, acquisition,
CTF, picking, 2D classification, 3D alignment, sample. Units are in the names.
Columns not in the schema are kept (as their pandas/Arrow type) and reported as extra.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1.2"

#: (name, Arrow type, group, description)
FIELDS: tuple[tuple[str, pa.DataType, str, str], ...] = (
    ("experiment_id", pa.string(), "experiment", "experiment key, e.g. EMPIAR-10028"),
    ("particle_index", pa.int64(), "experiment", "0-based row of the particle in its experiment's image array"),
    ("empiar_id", pa.string(), "experiment", "EMPIAR accession"),
    ("emdb_id", pa.string(), "experiment", "EMDB accession of the published map"),
    ("pdb_id", pa.string(), "experiment", "PDB id of the deposited model"),
    ("uid", pa.uint64(), "experiment", "particle uid of the processing software (cryoSPARC's uint64)"),
    ("image_name", pa.string(), "experiment", "the particle's image as the processing software named it"),
    ("sample_name", pa.string(), "experiment", "sample name of the entry"),
    ("data_source_type", pa.string(), "experiment",
     "what processing started from (cryoPANDA DataSourceType, e.g. micrographs or particles)"),
    ("number_of_particles", pa.int64(), "experiment", "particles in the experiment (as published)"),
    ("voltage_kv", pa.float32(), "acquisition", "acceleration voltage"),
    ("cs_mm", pa.float32(), "acquisition", "spherical aberration"),
    ("amplitude_contrast", pa.float32(), "acquisition", "amplitude contrast fraction"),
    ("dose_e_per_a2", pa.float32(), "acquisition", "total dose"),
    ("pixel_size_a", pa.float32(), "acquisition", "pixel size of the stored image"),
    ("original_pixel_size_a", pa.float32(), "acquisition", "pixel size of the micrograph"),
    ("micrograph_pixel_size_a", pa.float32(), "acquisition",
     "pixel size of the micrograph as processed (after any binning)"),
    ("image_size_px", pa.int32(), "acquisition", "box of the extracted particle image before any resize"),
    ("box_pixel_size_a", pa.float32(), "acquisition",
     "pixel size of the extracted box of image_size_px (pixel_size_a is that of the stored image)"),
    ("detector", pa.string(), "acquisition", "detector name"),
    ("defocus_u_a", pa.float32(), "ctf", "defocus U, positive underfocus"),
    ("defocus_v_a", pa.float32(), "ctf", "defocus V"),
    ("defocus_angle_deg", pa.float32(), "ctf", "astigmatism angle"),
    ("astigmatism_a", pa.float32(), "ctf", "|defocus U - defocus V|"),
    ("phase_shift_deg", pa.float32(), "ctf", "phase-plate shift"),
    ("ctf_phase_flipped", pa.int8(), "ctf",
     "1: images phase-flipped (the CTF left in them is abs(CTF)), 0: not (RELION rlnCtfDataArePhaseFlipped)"),
    ("ctf_fit_resolution_a", pa.float32(), "ctf", "CTF fit resolution"),
    ("micrograph", pa.string(), "picking", "micrograph name"),
    ("x_px", pa.float32(), "picking", "particle centre x in micrograph pixels"),
    ("y_px", pa.float32(), "picking", "particle centre y in micrograph pixels"),
    ("score", pa.float32(), "picking", "picking score"),
    ("ncc_score", pa.float32(), "picking", "normalised cross-correlation score of the template picker"),
    ("micrograph_nx_px", pa.int32(), "picking", "micrograph width"),
    ("micrograph_ny_px", pa.int32(), "picking", "micrograph height"),
    ("x_frac", pa.float32(), "picking", "particle centre x as a fraction of the micrograph width"),
    ("y_frac", pa.float32(), "picking", "particle centre y as a fraction of the micrograph height"),
    ("coordinate_y_transposed", pa.float32(), "picking",
     "y in the flipped frame, as published by cryoPANDA (CoordinateYTransposed, pixels)"),
    ("diameter_px", pa.float32(), "picking", "particle diameter in micrograph pixels"),
    ("class_number", pa.int32(), "class2d", "2D class (1-based)"),
    ("class_resolution_a", pa.float32(), "class2d", "2D class alignment resolution"),
    ("ess", pa.float32(), "class2d", "effective sample size of the pose posterior"),
    ("eca", pa.float32(), "class2d", "effective number of classes assigned"),
    ("max_prob", pa.float32(), "class2d", "maximum posterior probability"),
    ("rot_deg", pa.float32(), "pose3d", "RELION ZYZ rot"),
    ("tilt_deg", pa.float32(), "pose3d", "RELION ZYZ tilt"),
    ("psi_deg", pa.float32(), "pose3d", "RELION ZYZ psi"),
    ("shift_x_a", pa.float32(), "pose3d", "RELION 3.1 origin x shift"),
    ("shift_y_a", pa.float32(), "pose3d", "RELION 3.1 origin y shift"),
    ("alignment_error_deg", pa.float32(), "pose3d", "angular alignment error"),
    ("alignment_error_3d", pa.float64(), "pose3d",
     "3D alignment error as published by cryoPANDA (3DAlignmentError; unit not stated there)"),
    ("reconstruction_resolution_a", pa.float32(), "pose3d", "resolution of the experiment's reconstruction"),
    ("emd_resolution_a", pa.float32(), "sample", "resolution of the published EMDB map"),
    ("molecular_weight_kda", pa.float32(), "sample", "molecular weight"),
    ("subunits", pa.int32(), "sample", "number of subunits"),
    ("max_diameter_a", pa.float32(), "sample", "maximum diameter of the particle"),
    ("symmetry", pa.string(), "sample", "point group"),
    ("dna", pa.int8(), "sample", "1: the sample holds DNA, 0: not"),
    ("rna", pa.int8(), "sample", "1: the sample holds RNA, 0: not"),
    ("protein_class", pa.string(), "sample", "function-based protein class (cryoPANDA's 16 classes)"),
    ("bad_reconstruction", pa.int8(), "curation", "1: the experiment's reconstruction was judged bad"),
    ("split", pa.string(), "curation", "train/validation/test"),
    ("image_offset", pa.float32(), "storage", "decoded = image_offset + image_scale * stored"),
    ("image_scale", pa.float32(), "storage", "see image_offset"),
)

REQUIRED: tuple[str, ...] = ("experiment_id", "particle_index", "image_offset", "image_scale")

ANNOTATION_SCHEMA = pa.schema([(name, typ) for name, typ, _g, _d in FIELDS],
                              metadata={b"cryoset_schema_version": SCHEMA_VERSION.encode()})

#: name → Arrow type
FIELD_TYPES: dict[str, pa.DataType] = {name: typ for name, typ, _g, _d in FIELDS}


def schema_markdown() -> str:
    """The schema as a Markdown table (used in docs/store.md)."""
    lines = ["| column | type | group | meaning |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {t} | {g} | {d} |" for n, t, g, d in FIELDS]
    return "\n".join(lines)
