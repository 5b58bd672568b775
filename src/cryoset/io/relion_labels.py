"""Every RELION STAR label cryoset reads or writes, and its canonical column: one table per use.

This is the one place that knows RELION's vocabulary (``rlnDefocusU``, ``rlnCoordinateX``…).
Readers and writers of particle STAR files (:mod:`cryoset.io.particles`), coordinate STAR
files (:mod:`cryoset.io.coords`) and micrograph CTF STAR files
(:mod:`cryoset.io.micrograph_star`) import their tables from here; code outside ``io/``
works with canonical column names (:mod:`cryoset.io.schema`) only.

>>> PARTICLE_STAR_TO_CANONICAL["rlnDefocusU"]
'defocus_u_a'
>>> COORDINATE_STAR_TO_CANONICAL["rlnCoordinateX"]
'x_px'
"""

from __future__ import annotations

from cryoset.io import schema as S

__all__ = [
    "AUTOPICK_FOM",
    "CANONICAL_TO_PARTICLE_STAR",
    "COORDINATE_STAR_TO_CANONICAL",
    "COORDINATE_X",
    "COORDINATE_Y",
    "CRYOSET_CLASS_ECA",
    "CRYOSET_KEPT",
    "CRYOSET_POSE_ESS",
    "CRYOSET_RECOVERED",
    "CTF_MAX_RESOLUTION",
    "IMAGE_NAME",
    "IMAGE_SIZE",
    "INTEGER_LABELS",
    "MICROGRAPH_CTF_LABELS",
    "MICROGRAPH_NAME",
    "MICROGRAPH_OPTICS_LABELS",
    "OPTICS_GROUP",
    "OPTICS_GROUP_NAME",
    "OPTICS_LABELS",
    "PARTICLE_STAR_TO_CANONICAL",
    "RANDOM_SUBSET",
    "TRUTH_COORDINATE_LABELS",
]

# --- single labels used to recognise or key a table ---------------------------------------------
MICROGRAPH_NAME = "rlnMicrographName"
IMAGE_NAME = "rlnImageName"
IMAGE_SIZE = "rlnImageSize"
COORDINATE_X = "rlnCoordinateX"
COORDINATE_Y = "rlnCoordinateY"
AUTOPICK_FOM = "rlnAutopickFigureOfMerit"
OPTICS_GROUP = "rlnOpticsGroup"
OPTICS_GROUP_NAME = "rlnOpticsGroupName"
RANDOM_SUBSET = "rlnRandomSubset"
CTF_MAX_RESOLUTION = "rlnCtfMaxResolution"

#: cryoset's own per-particle labels in a classified particle STAR (RELION ignores them).
CRYOSET_POSE_ESS = "rlnCryosetPoseEss"
CRYOSET_CLASS_ECA = "rlnCryosetClassEca"
CRYOSET_KEPT = "rlnCryosetKept"
CRYOSET_RECOVERED = "rlnCryosetRecovered"

# --- particle STAR ------------------------------------------------------------------------------
#: RELION label → canonical column, for values copied without conversion (particle STAR).
PARTICLE_STAR_TO_CANONICAL: dict[str, str] = {
    "rlnCoordinateX": S.X_PX,
    "rlnCoordinateY": S.Y_PX,
    "rlnAutopickFigureOfMerit": S.SCORE,
    "rlnImagePixelSize": S.PIXEL_SIZE_A,
    "rlnImageSize": S.IMAGE_SIZE_PX,
    "rlnMicrographPixelSize": S.MICROGRAPH_PIXEL_SIZE_A,
    "rlnVoltage": S.VOLTAGE_KV,
    "rlnSphericalAberration": S.CS_MM,
    "rlnAmplitudeContrast": S.AMPLITUDE_CONTRAST,
    "rlnDefocusU": S.DEFOCUS_U_A,
    "rlnDefocusV": S.DEFOCUS_V_A,
    "rlnDefocusAngle": S.DEFOCUS_ANGLE_DEG,
    "rlnPhaseShift": S.PHASE_SHIFT_DEG,
    "rlnCtfBfactor": S.CTF_BFACTOR_A2,
    "rlnCtfScalefactor": S.CTF_SCALE,
    "rlnAngleRot": S.ROT_DEG,
    "rlnAngleTilt": S.TILT_DEG,
    "rlnAnglePsi": S.PSI_DEG,
    "rlnOriginXAngst": S.SHIFT_X_A,
    "rlnOriginYAngst": S.SHIFT_Y_A,
    "rlnClassNumber": S.CLASS_NUMBER,
    "rlnOpticsGroup": S.OPTICS_GROUP,
    "rlnOpticsGroupName": S.OPTICS_GROUP_NAME,
    "rlnRandomSubset": S.RANDOM_SUBSET,
    "rlnMaxValueProbDistribution": S.MAX_PROB,
    "rlnDetectorPixelSize": S.DETECTOR_PIXEL_SIZE_UM,
    "rlnMagnification": S.MAGNIFICATION,
    "rlnCtfDataArePhaseFlipped": S.CTF_PHASE_FLIPPED,
}
CANONICAL_TO_PARTICLE_STAR: dict[str, str] = {v: k for k, v in PARTICLE_STAR_TO_CANONICAL.items()}

#: RELION labels whose values are integers (written without a decimal point).
INTEGER_LABELS: frozenset[str] = frozenset({
    "rlnImageSize", "rlnClassNumber", "rlnOpticsGroup", "rlnRandomSubset",
    "rlnImageDimensionality", "rlnGroupNumber", "rlnNrOfSignificantSamples",
    "rlnCtfDataAreCtfPremultiplied", "rlnCtfDataArePhaseFlipped", "rlnHelicalTubeID",
})  # fmt: skip

#: Labels that go to the optics block of a RELION 3.1 particle file (when constant within a group).
OPTICS_LABELS: tuple[str, ...] = (
    "rlnOpticsGroup", "rlnOpticsGroupName", "rlnAmplitudeContrast", "rlnSphericalAberration",
    "rlnVoltage", "rlnImagePixelSize", "rlnMicrographOriginalPixelSize", "rlnImageSize",
    "rlnImageDimensionality", "rlnCtfDataAreCtfPremultiplied", "rlnCtfDataArePhaseFlipped",
    "rlnBeamTiltX", "rlnBeamTiltY",
    "rlnOddZernike", "rlnEvenZernike", "rlnMagMat00", "rlnMagMat01", "rlnMagMat10",
    "rlnMagMat11", "rlnMicrographPixelSize",
)  # fmt: skip

# --- coordinate STAR ----------------------------------------------------------------------------
#: RELION label → canonical column in a coordinate STAR file.
COORDINATE_STAR_TO_CANONICAL: dict[str, str] = {
    "rlnCoordinateX": S.X_PX,
    "rlnCoordinateY": S.Y_PX,
    "rlnAutopickFigureOfMerit": S.SCORE,
    "rlnClassNumber": S.CLASS_NUMBER,
    "rlnAnglePsi": S.PSI_DEG,
    "rlnAngleRot": S.ROT_DEG,
    "rlnAngleTilt": S.TILT_DEG,
    "rlnOpticsGroup": S.OPTICS_GROUP,
}

#: Truth columns of a simulated micrograph's coordinate STAR, canonical column → RELION label,
#: in the order they are written.
TRUTH_COORDINATE_LABELS: tuple[tuple[str, str], ...] = (
    (S.X_PX, "rlnCoordinateX"), (S.Y_PX, "rlnCoordinateY"),
    (S.ROT_DEG, "rlnAngleRot"), (S.TILT_DEG, "rlnAngleTilt"), (S.PSI_DEG, "rlnAnglePsi"),
    (S.DEFOCUS_U_A, "rlnDefocusU"), (S.DEFOCUS_V_A, "rlnDefocusV"),
    (S.DEFOCUS_ANGLE_DEG, "rlnDefocusAngle"),
)  # fmt: skip

# --- micrograph CTF STAR (data_optics + data_micrographs) ---------------------------------------
#: Per-micrograph columns, canonical → RELION label, in the order they are written.
MICROGRAPH_CTF_LABELS: tuple[tuple[str, str], ...] = (
    (S.MICROGRAPH, "rlnMicrographName"),
    (S.OPTICS_GROUP, "rlnOpticsGroup"),
    (S.DEFOCUS_U_A, "rlnDefocusU"),
    (S.DEFOCUS_V_A, "rlnDefocusV"),
    (S.DEFOCUS_ANGLE_DEG, "rlnDefocusAngle"),
    ("ctf_astigmatism_a", "rlnCtfAstigmatism"),
    ("figure_of_merit", "rlnCtfFigureOfMerit"),
    ("fit_resolution_a", "rlnCtfMaxResolution"),
    (S.PHASE_SHIFT_DEG, "rlnPhaseShift"),
)
#: Optics columns of a micrograph STAR, canonical → RELION label, in the order they are written.
MICROGRAPH_OPTICS_LABELS: tuple[tuple[str, str], ...] = (
    (S.OPTICS_GROUP_NAME, "rlnOpticsGroupName"),
    (S.OPTICS_GROUP, "rlnOpticsGroup"),
    (S.PIXEL_SIZE_A, "rlnMicrographPixelSize"),
    (S.VOLTAGE_KV, "rlnVoltage"),
    (S.CS_MM, "rlnSphericalAberration"),
    (S.AMPLITUDE_CONTRAST, "rlnAmplitudeContrast"),
)
#: Fallback pixel-size labels of a micrograph STAR's optics block, in order of preference.
MICROGRAPH_PIXEL_SIZE_FALLBACKS: tuple[str, ...] = ("rlnMicrographOriginalPixelSize", "rlnImagePixelSize")
