"""Issue #24: ``cryoset build`` fills the experiment-level store columns from the archive records
the experiment names (EMDB header, PDB model, EMPIAR entry), ``split`` / ``protein_class`` /
``bad_reconstruction`` from a catalogue curation file and ``data_source_type`` /
``number_of_particles`` from the build itself, and writes each experiment's CryoVirusDB CSV.

No network: the records come from the loopback test server (``cryoset.archives.testserver``),
then from the cache alone (``archives.offline``)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import gemmi
import numpy as np
import pandas as pd
import pytest

from cryoset.archives.testserver import Route, serve
from cryoset.errors import InputError
from cryoset.pipeline.build import run_build
from cryoset.pipeline.config import load_config
from cryoset.pipeline.stages import experiment_columns, stage_parameters
from cryoset.store import ParticleStore

EMD_1234_XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<emd emdb_id="EMD-1234" version="3.0.0.0">
  <admin><title>A test complex</title></admin>
  <crossreferences><pdb_list><pdb_reference><pdb_id>9xyz</pdb_id></pdb_reference></pdb_list></crossreferences>
  <sample><name>test complex</name><supramolecule_list><complex_supramolecule>
    <molecular_weight><theoretical units="MDa">0.25</theoretical></molecular_weight>
  </complex_supramolecule></supramolecule_list></sample>
  <structure_determination_list><structure_determination><method>singleParticle</method>
    <singleparticle_processing><final_reconstruction>
      <applied_symmetry><point_group>D2</point_group></applied_symmetry>
      <resolution units="A" res_type="BY AUTHOR">3.4</resolution>
    </final_reconstruction></singleparticle_processing>
  </structure_determination></structure_determination_list>
</emd>
"""


def _model_cif_gz() -> bytes:
    """Two protein chains and one RNA chain; the farthest atoms are 30 Å apart."""
    lines = []
    serial = 1
    for chain, resname, atom, element, xs in (
            ("A", "ALA", "CA", "C", (0.0, 3.8, 7.6)), ("B", "GLY", "CA", "C", (10.0, 13.8, 17.6)),
            ("C", "  U", "P", "P", (20.0, 25.0, 30.0))):
        for k, x in enumerate(xs, start=1):
            lines.append(f"ATOM  {serial:5d}  {atom:<3} {resname} {chain}{k:4d}    {x:8.3f}{0.0:8.3f}{0.0:8.3f}"
                         f"  1.00  0.00          {element:>2}")
            serial += 1
    st = gemmi.read_pdb_string("\n".join([*lines, "END", ""]))
    st.setup_entities()
    return gzip.compress(st.make_mmcif_document().as_string().encode())


#: An EMPIAR API answer (``{api}/entry/EMPIAR-10028/``), as the EMPIAR REST API shapes it.
EMPIAR_10028_JSON = json.dumps({"EMPIAR-10028": {
    "title": "Plasmodium falciparum 80S ribosome bound to the anti-protozoan drug emetine",
    "release_date": "2014-06-10", "experiment_type": "SPA",
    "cross_references": [{"name": "EMD-2660"}, {"name": "EMD-2661"}],
    "imagesets": [{"name": "Micrographs", "directory": "/data/Micrographs", "category": "('T1', '')",
                   "header_format": "('T1', '')", "data_format": "('T1', '')", "num_images_or_tilt_series": 600,
                   "frames_per_image": 1, "voxel_type": "('T7', '')", "pixel_width": 1.34, "pixel_height": 1.34,
                   "image_width": 4096, "image_height": 4096, "details": ""}]}}).encode()

ROUTES = {"/emdb/EMD-1234/header/emd-1234.xml": Route(body=EMD_1234_XML, content_type="text/xml")}


@pytest.fixture
def archive_server(monkeypatch: pytest.MonkeyPatch) -> Any:
    routes = {**ROUTES, "/pdb/9XYZ.cif.gz": Route(body=_model_cif_gz()),
              "/empiar/api/entry/EMPIAR-10028/": Route(body=EMPIAR_10028_JSON, content_type="application/json")}
    with serve(routes) as base:
        monkeypatch.setenv("CRYOSET_EMDB_FILES_URL", f"{base}/emdb")
        monkeypatch.setenv("CRYOSET_PDB_FILES_URL", f"{base}/pdb")
        monkeypatch.setenv("CRYOSET_EMPIAR_API_URL", f"{base}/empiar/api")
        yield routes


EXPECTED: dict[str, Any] = {"emdb_id": "EMD-1234", "pdb_id": "9XYZ", "empiar_id": "EMPIAR-10028", "emd_resolution_a": 3.4,
            "molecular_weight_kda": 250.0, "symmetry": "D2", "subunits": 3, "dna": 0, "rna": 1,
            "max_diameter_a": 30.0, "sample_name": "test complex"}
#: What the EMPIAR entry alone gives (no EMDB header fetched: its columns stay null).
EMPIAR_ONLY: dict[str, Any] = {"empiar_id": "EMPIAR-10028", "emdb_id": "EMD-2660",
               "sample_name": "Plasmodium falciparum 80S ribosome bound to the anti-protozoan drug emetine"}


def test_columns_from_the_records_fetched_once_then_read_from_the_cache(tmp_path: Path, archive_server: Any) -> None:
    cfg = load_config({"archives": {"cache": str(tmp_path / "cache")}, "experiments": [
        {"id": "e1", "emdb_id": 1234, "empiar_id": "10028", "simulated": {"seed": 1, "protein_length": 20,
                                                                          "micrographs": 1}}]})
    exp = cfg["experiments"][0]
    assert exp["archive"] == {"emdb_id": "EMD-1234", "empiar_id": "EMPIAR-10028"}
    cols = experiment_columns(exp, cfg)
    assert cols == pytest.approx(EXPECTED)  # the PDB id: the EMDB header's fitted model
    assert [r.hits for r in archive_server.values()] == [1, 1, 0]  # EMPIAR not asked: EMDB named
    offline = {**cfg, "archives": {**cfg["archives"], "offline": True}}
    assert experiment_columns(exp, offline) == pytest.approx(EXPECTED)
    assert [r.hits for r in archive_server.values()] == [1, 1, 0]
    with pytest.raises(InputError, match="offline"):
        experiment_columns({**exp, "archive": {"emdb_id": "EMD-9999"}}, offline)


def test_config_archive_ids_and_curation_are_checked_and_hashed(tmp_path: Path) -> None:
    sim = {"seed": 1, "protein_length": 20, "micrographs": 1}
    plain = load_config({"experiments": [{"id": "e1", "simulated": sim}]})
    assert plain["experiments"][0]["archive"] == {} and plain["curation"] is None
    assert set(stage_parameters("store", plain["experiments"][0], plain)) == {
        "encoding", "chunk_particles", "duplicates", "experiment_id"}  # old store hashes hold
    named = load_config({"curation": "cat.csv", "experiments": [{"id": "e1", "pdb_id": "9xyz", "simulated": sim}]})
    params = stage_parameters("store", named["experiments"][0], {**named, "base_dir": str(tmp_path)})
    assert params["archive"] == {"pdb_id": "9XYZ"} and params["curation"] is None  # no file yet: no digest
    for bad, message in (({"emdb_id": "EMDB-x"}, "experiments\\[0\\].emdb_id: not an accession"),
                         ({"pdb_id": 12345}, "pdb_id: not an accession"),
                         ({"empiar_id": True}, "empiar_id: not an accession"),
                         ({"emdb": "1"}, "experiments\\[0\\].emdb: unknown key")):
        with pytest.raises(InputError, match=message):
            load_config({"experiments": [{"id": "e1", **bad, "simulated": sim}]})
    with pytest.raises(InputError, match="curation: must be a non-empty string"):
        load_config({"curation": 3, "experiments": [{"id": "e1", "simulated": sim}]})


def test_empiar_only_experiment_gets_what_its_entry_gives_then_from_the_cache(tmp_path: Path,
                                                                              archive_server: Any) -> None:
    cfg: dict[str, Any] = {"base_dir": str(tmp_path), "archives": {"cache": str(tmp_path / "cache")}}
    exp = {"id": "e1", "archive": {"empiar_id": "EMPIAR-10028"}}
    assert experiment_columns(exp, cfg) == EMPIAR_ONLY
    offline = {**cfg, "archives": {**cfg["archives"], "offline": True}}
    assert experiment_columns(exp, offline) == EMPIAR_ONLY
    assert archive_server["/empiar/api/entry/EMPIAR-10028/"].hits == 1


def test_split_protein_class_and_bad_reconstruction_from_the_curation_file(tmp_path: Path) -> None:
    cat = pd.DataFrame({"experiment_id": ["EMPIAR-10028", "e2", "e3"], "split": ["test", "train", ""],
                        "protein_class": ["Viral Systems", "", "Transporters"],
                        "bad_reconstruction": ["1", "false", ""]})
    cat.to_parquet(tmp_path / "cat.parquet")
    cfg = {"base_dir": str(tmp_path), "curation": "cat.parquet"}
    assert experiment_columns({"id": "EMPIAR-10028"}, cfg) == {
        "split": "test", "protein_class": "Viral Systems", "bad_reconstruction": 1}
    assert experiment_columns({"id": "e2"}, cfg) == {"split": "train", "protein_class": None, "bad_reconstruction": 0}
    assert experiment_columns({"id": "e3"}, cfg) == {  # not a representative
        "split": None, "protein_class": "Transporters", "bad_reconstruction": None}
    with pytest.raises(InputError, match="no row for experiment 'e4'"):
        experiment_columns({"id": "e4"}, cfg)
    # cryoPANDA's own names are accepted; a file with only some of the columns gives those
    pd.DataFrame({"experiment_id": ["e1"], "ProteinClass": ["Ribosomes"], "BadReconstruction": [0]}).to_csv(
        tmp_path / "panda.csv", index=False)
    assert experiment_columns({"id": "e1"}, {**cfg, "curation": "panda.csv"}) == {
        "protein_class": "Ribosomes", "bad_reconstruction": 0}
    (tmp_path / "bad.csv").write_text("experiment_id\ne1\n")
    with pytest.raises(InputError, match="no experiment_id column with split, protein_class or bad_reconstruction"):
        experiment_columns({"id": "e1"}, {**cfg, "curation": "bad.csv"})
    (tmp_path / "worse.csv").write_text("experiment_id,bad_reconstruction\ne1,maybe\n")
    with pytest.raises(InputError, match="bad_reconstruction value 'maybe' is not 1/0"):
        experiment_columns({"id": "e1"}, {**cfg, "curation": "worse.csv"})


def test_build_writes_the_columns_into_every_particle_row(tmp_path: Path, archive_server: Any) -> None:
    cache = tmp_path / "cache"
    pd.DataFrame({"experiment_id": ["sim-a", "EMPIAR-10028"], "split": ["train", "test"],
                  "protein_class": ["Viral Systems", ""], "bad_reconstruction": ["0", "1"]}).to_csv(
        tmp_path / "catalog.csv", index=False)
    config = {
        "curation": str(tmp_path / "catalog.csv"),
        "archives": {"cache": str(cache)},
        "experiments": [
            {"id": "sim-a", "emdb_id": "EMD-1234", "simulated": {"seed": 1, "protein_length": 60, "micrographs": 1,
                                                                  "size_px": 256, "particles_per_micrograph": 6}},
            {"id": "sim-b", "pdb_id": "9XYZ", "empiar_id": 10028,
             "simulated": {"seed": 2, "protein_length": 60, "micrographs": 1, "size_px": 256,
                           "particles_per_micrograph": 6}}],
        "ctf": {"tile_px": 128, "max_resolution_a": 6.0},
        "extract": {"pixel_size_out_a": 3.0},
        "classify": {"n_classes": 2, "n_iter": 1, "psi_step_deg": 30, "offset_range_px": 1},
        "execution": {"workers": 1, "retries": 0},
    }
    run_build(config, tmp_path / "build", progress=False, workers=1)
    store = ParticleStore.open(tmp_path / "build" / "store")
    a, b = store.annotations("sim-a"), store.annotations("sim-b")
    assert len(a) and len(b)
    for ann, want in ((a, {**EXPECTED, "empiar_id": None, "split": "train", "protein_class": "Viral Systems",
                           "bad_reconstruction": 0}),
                      (b, {**{k: EXPECTED[k] for k in ("pdb_id", "subunits", "dna", "rna", "max_diameter_a")},
                           **EMPIAR_ONLY, "emd_resolution_a": None, "molecular_weight_kda": None, "symmetry": None,
                           "split": "test", "protein_class": None, "bad_reconstruction": 1})):
        # from the build itself; no reconstruction: no reconstruction resolution (not the EMDB map's)
        want.update(data_source_type="micrographs", number_of_particles=int(ann["kept"].sum()),
                    reconstruction_resolution_a=None)
        for column, value in want.items():
            got = ann[column].tolist() if column in ann.columns else [None] * len(ann)
            if value is None:
                assert all(v is None or (isinstance(v, float) and np.isnan(v)) for v in got), column
            elif isinstance(value, float):
                assert np.allclose(np.asarray(got, dtype=float), value), column
            else:
                assert got == [value] * len(ann), column
    # each experiment's CryoVirusDB collective CSV of its kept particles, y flipped with the 256 px height
    from cryoset.io.cryovirusdb import COLLECTIVE_CSV_COLUMNS
    from cryoset.io.particles import read_particles

    for eid in ("sim-a", "sim-b"):
        d = tmp_path / "build" / "work" / eid / "classify"
        kept = read_particles(d / "particles_kept.star").table
        raw = pd.read_csv(d / "particles_selected.csv")
        assert list(raw.columns) == list(COLLECTIVE_CSV_COLUMNS) and len(raw) == len(kept)
        np.testing.assert_allclose(raw["Y-Coordinate"].to_numpy(float), 255 - kept["y_px"].to_numpy(float), atol=1e-6)
        np.testing.assert_array_equal(raw["Angle-Psi"].to_numpy(float), kept["psi_deg"].to_numpy(float))
        np.testing.assert_array_equal(raw["Class Number"].to_numpy(int), kept["class_number"].to_numpy(int))
