"""Issue #24: ``cryoset build`` fills the experiment-level store columns from the archive records
the experiment names (EMDB header, PDB model) and ``split`` from a catalogue curation file.

No network: the records come from the loopback test server (``cryoset.archives.testserver``),
then from the cache alone (``archives.offline``)."""

from __future__ import annotations

import gzip
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


ROUTES = {"/emdb/EMD-1234/header/emd-1234.xml": Route(body=EMD_1234_XML, content_type="text/xml")}


@pytest.fixture
def archive_server(monkeypatch: pytest.MonkeyPatch) -> Any:
    routes = {**ROUTES, "/pdb/9XYZ.cif.gz": Route(body=_model_cif_gz())}
    with serve(routes) as base:
        monkeypatch.setenv("CRYOSET_EMDB_FILES_URL", f"{base}/emdb")
        monkeypatch.setenv("CRYOSET_PDB_FILES_URL", f"{base}/pdb")
        yield routes


EXPECTED = {"emdb_id": "EMD-1234", "pdb_id": "9XYZ", "empiar_id": "EMPIAR-10028", "emd_resolution_a": 3.4,
            "molecular_weight_kda": 250.0, "symmetry": "D2", "subunits": 3, "dna": 0, "rna": 1,
            "max_diameter_a": 30.0}


def test_columns_from_the_records_fetched_once_then_read_from_the_cache(tmp_path: Path, archive_server: Any) -> None:
    cfg = load_config({"archives": {"cache": str(tmp_path / "cache")}, "experiments": [
        {"id": "e1", "emdb_id": 1234, "empiar_id": "10028", "simulated": {"seed": 1, "protein_length": 20,
                                                                          "micrographs": 1}}]})
    exp = cfg["experiments"][0]
    assert exp["archive"] == {"emdb_id": "EMD-1234", "empiar_id": "EMPIAR-10028"}
    cols = experiment_columns(exp, cfg)
    assert cols == pytest.approx(EXPECTED)  # the PDB id: the EMDB header's fitted model
    assert [r.hits for r in archive_server.values()] == [1, 1]
    offline = {**cfg, "archives": {**cfg["archives"], "offline": True}}
    assert experiment_columns(exp, offline) == pytest.approx(EXPECTED)
    assert [r.hits for r in archive_server.values()] == [1, 1]
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


def test_split_from_the_curation_file(tmp_path: Path) -> None:
    cat = pd.DataFrame({"experiment_id": ["EMPIAR-10028", "e2", "e3"], "split": ["test", "train", ""]})
    cat.to_parquet(tmp_path / "cat.parquet")
    cfg = {"base_dir": str(tmp_path), "curation": "cat.parquet"}
    assert experiment_columns({"id": "e1", "archive": {"empiar_id": "EMPIAR-10028"}}, cfg) == {
        "empiar_id": "EMPIAR-10028", "split": "test"}
    assert experiment_columns({"id": "e2"}, cfg) == {"split": "train"}
    assert experiment_columns({"id": "e3"}, cfg) == {"split": None}  # not a representative
    with pytest.raises(InputError, match="no row for experiment 'e4'"):
        experiment_columns({"id": "e4"}, cfg)
    (tmp_path / "bad.csv").write_text("experiment_id\ne1\n")
    with pytest.raises(InputError, match="split columns"):
        experiment_columns({"id": "e1"}, {**cfg, "curation": "bad.csv"})


def test_build_writes_the_columns_into_every_particle_row(tmp_path: Path, archive_server: Any) -> None:
    cache = tmp_path / "cache"
    pd.DataFrame({"experiment_id": ["sim-a", "EMPIAR-10028"], "split": ["train", "test"]}).to_csv(
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
    for ann, want in ((a, {**EXPECTED, "empiar_id": None, "split": "train"}),
                      (b, {**{k: EXPECTED[k] for k in ("pdb_id", "subunits", "dna", "rna", "max_diameter_a")},
                           "empiar_id": "EMPIAR-10028", "emdb_id": None, "split": "test"})):
        for column, value in want.items():
            got = ann[column].tolist() if column in ann.columns else [None] * len(ann)
            if value is None:
                assert all(v is None or (isinstance(v, float) and np.isnan(v)) for v in got), column
            elif isinstance(value, float):
                assert np.allclose(np.asarray(got, dtype=float), value), column
            else:
                assert got == [value] * len(ann), column
