"""The versioned annotation schema of the particle store (one Parquet row per particle).

Version history
---------------
1.0
    First release. Required: ``experiment_id``, ``particle_index``, ``image_offset``,
    ``image_scale``. Everything else optional (null when unknown).
1.1
    Adds ``ctf_phase_flipped`` (optional; absent or null reads as 0, not flipped), so
    classification and reconstruction from a store apply ``|CTF|`` to phase-flipped images.

Columns are grouped as the cryoPANDA paper groups its ~47 fields: experiment, acquisition,
CTF, picking, 2D classification, 3D alignment, sample. Units are in the names.
Columns not in the schema are kept (as their pandas/Arrow type) and reported as extra.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1.1"

#: (name, Arrow type, group, description)
FIELDS: tuple[tuple[str, pa.DataType, str, str], ...] = (
    ("experiment_id", pa.string(), "experiment", "experiment key, e.g. EMPIAR-10028"),
    ("particle_index", pa.int64(), "experiment", "0-based row of the particle in its experiment's image array"),
    ("empiar_id", pa.string(), "experiment", "EMPIAR accession"),
    ("emdb_id", pa.string(), "experiment", "EMDB accession of the published map"),
    ("pdb_id", pa.string(), "experiment", "PDB id of the deposited model"),
    ("voltage_kv", pa.float32(), "acquisition", "acceleration voltage"),
    ("cs_mm", pa.float32(), "acquisition", "spherical aberration"),
    ("amplitude_contrast", pa.float32(), "acquisition", "amplitude contrast fraction"),
    ("dose_e_per_a2", pa.float32(), "acquisition", "total dose"),
    ("pixel_size_a", pa.float32(), "acquisition", "pixel size of the stored image"),
    ("original_pixel_size_a", pa.float32(), "acquisition", "pixel size of the micrograph"),
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
    ("molecular_weight_kda", pa.float32(), "sample", "molecular weight"),
    ("symmetry", pa.string(), "sample", "point group"),
    ("protein_class", pa.string(), "sample", "function-based protein class"),
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
