"""Builders of small entries in the published layouts, and mock Zenodo / Dataverse APIs.

Everything is built from real files in ../shared/data: CryoPPP-style entries from the
EMPIAR-10028 micrographs (CryoPPP's own 1024² PNG resampling) and their expert-pick
coordinates; a Cryo2StructData entry from EMD-5168 + 3MFP through ``cryoset.maps``; a
cryoPANDA file from real EMPIAR-10076 particles.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoset.archives.testserver import Route
from cryoset.testing import require_shared_data

MICS = ("061_10028", "062_10028", "063_10028")
SHAPE = (1024, 1024)
BOX = 64


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def zip_dir(root: Path, arc_root: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                zf.write(f, f"{arc_root}/{f.relative_to(root).as_posix()}")
    return buf.getvalue()


def tar_dir(root: Path, arc_root: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(root, arcname=arc_root)
    return buf.getvalue()


def canonical_truth(mic: str) -> pd.DataFrame:
    """The expert picks of one EMPIAR-10028 micrograph as a canonical particle table."""
    coords = require_shared_data("micrographs", "empiar_10028", "coords", f"{mic}.csv")
    t = pd.read_csv(coords)
    t.insert(0, "micrograph", mic)
    t["score"] = np.nan
    n = len(t)
    t["psi_deg"] = np.round(np.linspace(0, 350, n), 1)
    t["shift_x_a"] = 0.0
    t["shift_y_a"] = 0.0
    t["defocus_u_a"] = 15000.5
    t["defocus_v_a"] = 14800.25
    t["defocus_angle_deg"] = 12.0
    t["phase_shift_deg"] = 0.0
    t["ctf_bfactor_a2"] = 0.0
    t["optics_group"] = 1.0
    t["class_number"] = 1.0
    return t


def build_cryoppp_entry(dest: Path, *, lite_factor: int = 0, stacks: bool = True) -> dict[str, Any]:
    """An EMPIAR-10028 entry in the CryoPPP layout at ``dest``.

    ``lite_factor = 0``: MRC micrographs (the real 1024² images), particle stacks, per-micrograph
    CSVs, the 14-column CSV, a false-positive CSV and a STAR file. ``lite_factor = k``: JPG
    "lite" micrographs downsampled k× (coordinates stay in the 1024² frame).
    """
    from PIL import Image

    from cryoset.io.cryovirusdb import write_cryovirusdb
    from cryoset.io.mrc import write_stack

    images_dir = require_shared_data("micrographs", "empiar_10028", "images")
    (dest / "micrographs").mkdir(parents=True)
    pc = dest / "ground_truth" / "particle_coordinates"
    pc.mkdir(parents=True)
    tables = []
    images = {}
    for mic in MICS:
        img = np.asarray(Image.open(images_dir / f"{mic}.png"), dtype=np.float32)
        images[mic] = img
        truth = canonical_truth(mic)
        tables.append(truth)
        write_cryovirusdb(pc / f"{mic}.csv", truth.drop(columns=["micrograph", "optics_group", "class_number"]),
                          micrograph_shape=SHAPE, variant="per_micrograph")
        if lite_factor:
            small = Image.fromarray(img.astype(np.uint8)).resize((SHAPE[1] // lite_factor, SHAPE[0] // lite_factor),
                                                                 Image.Resampling.BOX)
            small.save(dest / "micrographs" / f"{mic}.jpg", quality=95)
            continue
        write_stack(dest / "micrographs" / f"{mic}.mrc", img[None], 5.36)
        if stacks:
            pad = np.pad(img, BOX, mode="reflect")
            boxes = np.stack([pad[round(y) + BOX // 2: round(y) + BOX // 2 + BOX,
                                  round(x) + BOX // 2: round(x) + BOX // 2 + BOX]
                              for x, y in zip(truth["x_px"], truth["y_px"], strict=True)])
            (dest / "particles_stack").mkdir(exist_ok=True)
            write_stack(dest / "particles_stack" / f"{mic}.mrc", boxes, 5.36)
    allp = pd.concat(tables, ignore_index=True)
    named = allp.assign(micrograph=[f"{m}.mrc" for m in allp["micrograph"]])
    write_cryovirusdb(dest / "ground_truth" / f"{dest.name}_particles_selected.csv", named,
                      micrograph_shape=SHAPE, variant="particles")
    fp = named.iloc[[0, 5, 9]].copy()
    fp["x_px"] = [100.0, 500.0, 900.0]
    fp["y_px"] = [120.0, 520.0, 920.0]
    fp["Reason"] = ["ice contamination", "aggregate", "carbon edge"]
    (dest / "ground_truth" / "false_positives").mkdir()
    write_cryovirusdb(dest / "ground_truth" / "false_positives" / f"{dest.name}_false_positives.csv", fp,
                      micrograph_shape=SHAPE, variant="false_positives")
    (dest / "ground_truth" / f"{dest.name}_particles.star").write_text("data_\nloop_\n_rlnCoordinateX #1\n1.0\n")
    return {"particles": allp, "false_positives": fp, "images": images}


def zenodo_routes(record_id: str, files: dict[str, bytes], *, corrupt_checksum: bool = False
                  ) -> tuple[dict[str, Route], Callable[[str], None]]:
    """Routes of a Zenodo record; call the returned function with the base URL to fill the JSON."""
    routes: dict[str, Route] = {}
    for key, body in files.items():
        routes[f"/api/records/{record_id}/files/{key}/content"] = Route(body=body)
    api = Route(content_type="application/json")
    routes[f"/api/records/{record_id}"] = api

    def fill(base: str) -> None:
        entries = [{"id": f"f{i}", "key": key, "size": len(body),
                    "checksum": md5(body + (b"x" if corrupt_checksum else b"")),
                    "links": {"self": f"{base}/api/records/{record_id}/files/{key}/content"}}
                   for i, (key, body) in enumerate(files.items())]
        api.body = json.dumps({"id": int(record_id), "metadata": {"title": "test"}, "files": entries}).encode()

    return routes, fill


def dataverse_routes(doi: str, files: list[dict[str, Any]]) -> dict[str, Route]:
    """Routes of one Dataverse dataset: ``files`` items have ``label``, ``body`` and optional
    ``directoryLabel`` / ``original`` (tabular ingest: original file name)."""
    routes: dict[str, Route] = {}
    listing = []
    for i, f in enumerate(files, start=101):
        body: bytes = f["body"]
        data_file: dict[str, Any] = {"id": i, "persistentId": "", "filename": f["label"], "contentType": "x",
                                     "filesize": len(body) + 17 if f.get("original") else len(body),
                                     "md5": hashlib.md5(body).hexdigest(),
                                     "checksum": {"type": "MD5", "value": hashlib.md5(body).hexdigest()}}
        if f.get("original"):
            data_file.update(originalFileName=f["original"], originalFileSize=len(body),
                             originalFileFormat="text/csv")
        entry: dict[str, Any] = {"label": f["label"], "restricted": False, "version": 1, "dataFile": data_file}
        if f.get("directoryLabel"):
            entry["directoryLabel"] = f["directoryLabel"]
        listing.append(entry)
        routes[f"/api/access/datafile/{i}"] = Route(body=body)
    answer = {"status": "OK", "data": {"id": 1, "persistentUrl": f"https://doi.org/{doi[4:]}",
                                       "latestVersion": {"versionNumber": 1, "files": listing}}}
    routes["/api/datasets/:persistentId/"] = Route(body=json.dumps(answer).encode(), content_type="application/json")
    return routes


def build_c2s_entry(prepared: Path, dest: Path) -> Path:
    """A Cryo2StructData-style ``EMD-5168`` directory from our products (their file names)."""
    from cryoset.io.mrc import read_map
    from cryoset.maps.dataset import LABEL_FILES, NORMALISED_NAME
    from cryoset.maps.subgrids import split

    entry = dest / "EMD-5168"
    entry.mkdir(parents=True)
    for name in (NORMALISED_NAME, *LABEL_FILES.values()):
        shutil.copyfile(prepared / name, entry / name)
    shutil.copyfile(require_shared_data("maps", "emd_5168", "3MFP.pdb"), entry / "3MFP.pdb")
    (entry / "3MFP.fasta").write_text(">3MFP_A\nDEDETTALVCDNGSGLVKAGFAGDDAPRAVFPS\n")
    density = read_map(entry / NORMALISED_NAME).data
    atom = np.rint(read_map(entry / LABEL_FILES["backbone"]).data).astype(np.uint8)
    amino = np.rint(read_map(entry / LABEL_FILES["amino"]).data).astype(np.uint8)
    blocks = {k: split(v)[0] for k, v in (("protein_grid", density), ("atom_grid", atom), ("amino_grid", amino))}
    grids = entry / "grids"
    grids.mkdir()
    for i in range(blocks["protein_grid"].shape[0]):
        np.savez_compressed(grids / f"emd_5168_{i}.npz", **{k: v[i] for k, v in blocks.items()})
    return entry


#: cryoPANDA's published annotation keys in order (the authors' create_h5_dataset notebook;
#: /work/shared/notes/ml-anchors.md); written here independently of cryoset's own list.
PANDA_KEYS_48 = (
    "uid ImageName AngleRot AngleTilt AnglePsi OriginXAngst OriginYAngst DefocusU DefocusV DefocusAngle "
    "ClassNumber 2DAlignmentClassESS ClassECA MicrographName MicrographShapeX MicrographShapeY ParticleXFrac "
    "ParticleYFrac MicrographPixelSize NCCScore CoordinateX CoordinateY CoordinateYTransposed ClassResolution "
    "3DAlignmentError EMPIAR_ID EMD_ID PDB_ID Voltage ElectronDose SphericalAberration AmplitudeContrast "
    "ImageSize OriginalPixelSize ImagePixelSize ReconstructionResolution EMD_Resolution MolecularWeight_kDa "
    "Subunits MaxDiameter Symmetry DNA RNA ProteinClass SampleName NumberOfParticles DataSourceType "
    "BadReconstruction").split()
PANDA_MIC_KEYS = ("MicrographName MicrographShapeX MicrographShapeY ParticleXFrac ParticleYFrac "
                  "MicrographPixelSize NCCScore CoordinateX CoordinateY CoordinateYTransposed").split()


def panda_annotations(n: int, *, from_micrographs: bool = True, seed: int = 0) -> pd.DataFrame:
    """A cryoPANDA annotation table as the published code builds it (a pandas frame whose
    ``to_dict(orient='list')`` is dumped): cryoSPARC-like values, the example row of
    10004_particles.h5 for the experiment-level columns, NaN where a value is missing."""
    rng = np.random.default_rng(seed)
    shape = 4096
    x = np.round(rng.uniform(100, 4000, n), 1)
    y = np.round(rng.uniform(100, 4000, n), 1)
    cols: dict[str, Any] = {
        "uid": [int(v) for v in rng.integers(10**17, 10**18, n)],
        "ImageName": [f"{i + 1:06d}@J12/extract/mic_{i // 4:03d}_particles.mrc" for i in range(n)],
        "AngleRot": np.round(rng.uniform(-180, 180, n), 3), "AngleTilt": np.round(rng.uniform(0, 180, n), 3),
        "AnglePsi": np.round(rng.uniform(-180, 180, n), 3),
        "OriginXAngst": np.round(rng.normal(0, 2, n), 3), "OriginYAngst": np.round(rng.normal(0, 2, n), 3),
        "DefocusU": np.round(rng.uniform(8000, 30000, n), 1), "DefocusV": np.round(rng.uniform(8000, 30000, n), 1),
        "DefocusAngle": np.round(rng.uniform(-90, 90, n), 2),
        "ClassNumber": [int(v) for v in rng.integers(0, 50, n)],
        "2DAlignmentClassESS": np.round(rng.uniform(1, 3, n), 4), "ClassECA": np.round(rng.uniform(1, 1.2, n), 4),
        "MicrographName": [f"J12/motioncorrected/mic_{i // 4:03d}.mrc" for i in range(n)],
        "MicrographShapeX": [shape] * n, "MicrographShapeY": [shape] * n,
        # cryoSPARC keeps fractions as float32: widened to float64 they print with many digits
        "ParticleXFrac": (x / shape).astype(np.float32).astype(np.float64),
        "ParticleYFrac": (y / shape).astype(np.float32).astype(np.float64),
        "MicrographPixelSize": [1.08] * n, "NCCScore": np.round(rng.uniform(0.1, 0.6, n), 4),
        "CoordinateX": x, "CoordinateY": y, "CoordinateYTransposed": np.round(shape - y, 1),
        "ClassResolution": np.round(rng.uniform(6, 12, n), 3), "3DAlignmentError": np.round(rng.uniform(0, 5, n), 4),
        "EMPIAR_ID": ["10004"] * n, "EMD_ID": ["EMD-3332"] * n, "PDB_ID": [np.nan] * n,
        "Voltage": [300.0] * n, "ElectronDose": [40.5] * n, "SphericalAberration": [2.7] * n,
        "AmplitudeContrast": [0.1] * n, "ImageSize": [320] * n, "OriginalPixelSize": [1.08] * n,
        "ImagePixelSize": [1.08] * n, "ReconstructionResolution": [7.88] * n, "EMD_Resolution": [6.0] * n,
        "MolecularWeight_kDa": [293.14] * n, "Subunits": [12] * n, "MaxDiameter": [180] * n,
        "Symmetry": ["C3"] * n, "DNA": [0] * n, "RNA": [0] * n, "ProteinClass": ["Viral Systems"] * n,
        "SampleName": ["Bacteriophage T7 portal"] * n, "NumberOfParticles": [n] * n,
        "DataSourceType": ["micrographs" if from_micrographs else "particles"] * n,
        "BadReconstruction": [0] * n,
    }
    frame = pd.DataFrame({k: cols[k] for k in PANDA_KEYS_48})
    frame.loc[1, "ClassResolution"] = np.nan  # a missing number
    if not from_micrographs:
        frame = frame.drop(columns=PANDA_MIC_KEYS)
    return frame


def panda_images(n: int, box: int = 96, seed: int = 0) -> np.ndarray:
    """``n`` float particles ``(n, box, box)`` (a blob plus noise) before the published transform."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:box, :box] - box / 2
    blob = np.exp(-(yy**2 + xx**2) / (2 * (box / 6) ** 2)).astype(np.float32)
    return (blob[None] + rng.standard_normal((n, box, box)).astype(np.float32) * 0.5).astype(np.float32)


def write_panda_file(path: Path, images: np.ndarray, frame: pd.DataFrame, *, to_224: bool = True) -> Path:
    """Write ``<EXPERIMENT>_particles.h5`` exactly as the published code does: torch bilinear
    antialiased resize to 224 in float32, per-image min-max to uint8, then ``images`` and the
    JSON of ``frame.to_dict(orient='list')`` as the two root datasets (no attributes)."""
    import h5py
    import torch

    t = torch.from_numpy(np.ascontiguousarray(images, np.float32))[:, None]
    if to_224:
        t = torch.nn.functional.interpolate(t, size=(224, 224), mode="bilinear", align_corners=False,
                                            antialias=True)
    p = t[:, 0]
    mn = p.amin(dim=(1, 2), keepdim=True)
    mx = p.amax(dim=(1, 2), keepdim=True)
    u8 = torch.round((p - mn) / (mx - mn + 1e-8) * 255).to(torch.uint8).numpy()
    with h5py.File(path, "w") as h5:
        h5.create_dataset("images", data=u8)
        h5.create_dataset("annotations", data=json.dumps(frame.to_dict(orient="list")))
    return path
