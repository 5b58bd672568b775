"""``cryoset map prepare|subgrids|stitch|build`` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cryoset.io.mrc import read_map, validate_mrc
from cryoset.testing import require_shared_data


def test_help_lists_the_map_commands(run_cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run_cli("map", "--help")
    assert code == 0
    for cmd in ("prepare", "subgrids", "stitch", "build"):
        assert cmd in out


def test_prepare_monomer_map_with_model_then_stitch(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The cut-out monomer map has a non-zero origin; labels must still round-trip exactly."""
    folder = require_shared_data("maps", "emd_5168")
    code, out, err = run_cli("map", "prepare", folder / "emd_5168_monomer.mrc", "--model", folder / "3MFP.pdb",
                             "--out", tmp_path / "m", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["ca_exact_fraction"] == 1.0 and summary["mrc_valid"] is True
    assert summary["secondary_source"] == "dssp"
    norm = read_map(tmp_path / "m" / "emd_normalized_map.mrc")
    src = read_map(folder / "emd_5168_monomer.mrc")
    assert norm.origin_a == pytest.approx(src.origin_a, abs=1e-4)
    code, out, err = run_cli("map", "stitch", tmp_path / "m" / "subgrids.zarr", "--array", "ca",
                             "--out", tmp_path / "ca.mrc")
    assert code == 0, err
    assert validate_mrc(tmp_path / "ca.mrc") == []
    stitched = read_map(tmp_path / "ca.mrc")
    np.testing.assert_array_equal(stitched.data, read_map(tmp_path / "m" / "atom_ca_emd_normalized_map.mrc").data)
    assert stitched.origin_a == pytest.approx(norm.origin_a, abs=1e-4)


def test_subgrids_command_with_custom_geometry(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = require_shared_data("maps", "model_less", "emd_5625.map")
    code, _, err = run_cli("map", "subgrids", path, "--names", "density", "--box-px", "24", "--overlap-px", "4",
                           "--out", tmp_path / "s.zarr")
    assert code == 0, err
    code, _, err = run_cli("map", "stitch", tmp_path / "s.zarr", "--out", tmp_path / "back.mrc")
    assert code == 0, err
    np.testing.assert_array_equal(read_map(tmp_path / "back.mrc").data, read_map(path).data)


def test_bad_input_is_one_line_and_exit_2(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run_cli("map", "prepare", tmp_path / "nope.map", "--out", tmp_path / "o")
    assert code == 2 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1
    (tmp_path / "x.map").write_bytes(b"\0" * 10)
    code, _, err = run_cli("map", "prepare", tmp_path / "x.map", "--out", tmp_path / "o", "--method", "cubic")
    assert code == 2 and "--method" in err
    code, _, err = run_cli("map", "stitch", tmp_path / "missing.zarr", "--out", tmp_path / "o.mrc")
    assert code == 2 and "missing.zarr" in err


def test_build_small_list(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    maps = require_shared_data("maps")
    listing = tmp_path / "list.csv"
    listing.write_text(f"emdb_id,map,resolution_a\nEMD-3197,{maps / 'emd_3197' / 'EMD-3197.map'},20\n")
    (tmp_path / "test.txt").write_text("EMD-3197\n")
    code, out, err = run_cli("map", "build", listing, "--out", tmp_path / "ds", "--workers", "1",
                             "--voxel-size-a", "5", "--test-list", tmp_path / "test.txt")
    assert code == 0, err
    assert "1/1 maps prepared" in out and "'test': 1" in out
    assert (tmp_path / "ds" / "metadata.parquet").is_file() and (tmp_path / "ds" / "metadata.csv").is_file()


def test_prepare_label_rule_option(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``--label-rule cryo2struct`` writes the Formula-1 labels; an unknown rule is one line, exit 2."""
    from cryoset.io.mrc import write_map
    from cryoset.maps.dataset import load_model
    from cryoset.maps.labels import label_maps

    write_map(tmp_path / "m.mrc", np.ones((12, 12, 12), np.float32), 1.0, (0.0, 0.0, 0.0))
    (tmp_path / "m.pdb").write_text(
        "ATOM      1  N   ALA A   1       4.300   5.700   6.600  1.00  0.00           N\n"
        "ATOM      2  CA  ALA A   1       5.400   6.600   6.700  1.00  0.00           C\n"
        "ATOM      3  C   ALA A   1       6.600   7.200   6.500  1.00  0.00           C\n"
        "END\n")
    code, _, err = run_cli("map", "prepare", tmp_path / "m.mrc", "--model", tmp_path / "m.pdb",
                           "--label-rule", "cryo2struct", "--no-subgrids", "--out", tmp_path / "f1")
    assert code == 0, err
    atoms = load_model(tmp_path / "m.pdb").atoms
    want = label_maps(atoms, (12, 12, 12), (1.0,) * 3, (0.0,) * 3, rule="cryo2struct")
    np.testing.assert_array_equal(read_map(tmp_path / "f1" / "atom_ca_emd_normalized_map.mrc").data, want.ca)
    assert want.ca[6, 6, 5] == 1  # floor(p - origin): the voxel whose corner is below the atom
    (tmp_path / "maps.csv").write_text("emdb_id,map,model\nEMD-1,m.mrc,m.pdb\n")
    code, _, err = run_cli("map", "build", tmp_path / "maps.csv", "--workers", "1", "--label-rule", "cryo2struct",
                           "--out", tmp_path / "built")
    assert code == 0, err
    np.testing.assert_array_equal(read_map(tmp_path / "built" / "EMD-1" / "atom_ca_emd_normalized_map.mrc").data,
                                  want.ca)
    code, _, err = run_cli("map", "prepare", tmp_path / "m.mrc", "--label-rule", "round", "--out", tmp_path / "x")
    assert code == 2 and "--label-rule" in err and len(err.strip().splitlines()) == 1
