"""``cryoset build`` and ``cryoset catalog curate`` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cryoset.provenance import read_provenance

AA = "ACDEFGHIKLMNPQRSTVWY"


def test_build_rejects_a_bad_config_with_one_line(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "config.yaml"
    cfg.write_text("experiments:\n  - id: a\n    simulated: {seed: 1, protein_length: 60, micrographs: 1}\n"
                   "pick: {diameter_a: -1}\n")
    code, _out, err = run_cli("build", cfg, "--out", tmp_path / "out")
    assert code == 2
    assert err.strip() == "error: config.yaml: pick.diameter_a: must be a positive number, got -1"
    assert not (tmp_path / "out").exists()


def test_build_help_has_examples(run_cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run_cli("build", "--help")
    assert code == 0 and "cryoset build examples/build-demo.yaml" in out


def test_catalog_curate_writes_clusters_representatives_and_splits(run_cli, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                   rng: np.random.Generator) -> None:
    fam = "".join(rng.choice(list(AA), 90))
    other = "".join(rng.choice(list(AA), 90))
    rows = ["experiment_id,resolution_a,pixel_size_a"]
    fasta = []
    for k in range(6):
        rows.append(f"F{k},{3 + k * 0.5},1.0")
        mutated = list(fam)
        for pos in rng.choice(90, 9, replace=False):
            mutated[pos] = "W"
        fasta.append(f">F{k}\n{''.join(mutated)}")
    rows.append("G0,3.1,1.1")
    fasta.append(f">G0\n{other}")
    (tmp_path / "records.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "seqs.fasta").write_text("\n".join(fasta) + "\n")
    out = tmp_path / "catalog.parquet"
    code, stdout, err = run_cli("catalog", "curate", tmp_path / "records.csv", "--fasta", tmp_path / "seqs.fasta",
                                "--method", "align", "--test-fraction", "0.3", "--seed", "1", "--out", out,
                                "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary == {"experiments": 7, "clusters": 2, "kept": 5, "train": summary["train"],
                       "test": summary["test"], "output": str(out)}
    cat = pd.read_parquet(out).set_index("experiment_id")
    assert cat.loc[["F0", "F1", "F2", "F3"], "representative"].all()
    assert not cat.loc[["F4", "F5"], "representative"].any()
    assert cat.loc[["F0", "F1", "F2", "F3"], "split"].nunique() == 1
    assert read_provenance(out)["parameters"]["method"] == "align"
    code, _o, err = run_cli("catalog", "curate", tmp_path / "records.csv", "--out", tmp_path / "c.txt")
    assert code == 2 and "must end in .parquet or .csv" in err
