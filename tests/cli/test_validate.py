"""``cryoset validate``: per-file MRC2014 report, exit codes 0/1/2, --json."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

import cryoset.cli.main as cli_main
from cryoset.io.mrc import write_map, write_stack
from cryoset.testing import require_shared_data


@pytest.fixture(autouse=True)
def _only_existing_command_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other engineers' command modules may not exist yet; register the ones that do."""
    present = tuple(
        name for name in cli_main.COMMAND_MODULES if importlib.util.find_spec(f"cryoset.cli.{name}") is not None
    )
    assert "validate" in present
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", present)


@pytest.fixture
def valid_files(tmp_path: Path) -> list[Path]:
    return [
        write_map(tmp_path / "a.mrc", np.arange(60, dtype=np.float32).reshape(3, 4, 5), 1.2),
        write_stack(tmp_path / "b.mrcs", np.ones((2, 4, 4), np.float32), 1.0),
    ]


@pytest.fixture
def invalid_file(tmp_path: Path) -> Path:
    path = write_map(tmp_path / "bad.mrc", np.arange(8, dtype=np.float32).reshape(2, 2, 2), 1.0)
    with open(path, "r+b") as fh:  # NVERSION = 0 and a wrong DMAX
        fh.seek(108)
        fh.write(struct.pack("<i", 0))
        fh.seek(80)
        fh.write(struct.pack("<f", 99.0))
    return path


def test_all_valid_exit_0(run_cli, valid_files: list[Path]) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run_cli("validate", *valid_files)
    assert code == 0, err
    assert out.splitlines() == [f"{p}: valid MRC2014" for p in valid_files]
    assert err == ""


def test_invalid_exit_1_lists_each_rule(run_cli, valid_files: list[Path], invalid_file: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run_cli("validate", valid_files[0], invalid_file)
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"{valid_files[0]}: valid MRC2014"
    assert lines[1] == f"{invalid_file}: INVALID (2 rules failed)"
    assert lines[2] == "  - NVERSION is 0, not 20140 or 20141 (the file does not declare MRC2014)."
    assert lines[3].startswith("  - The header minimum/maximum (0, 99) do not match the data (0, 7)")


def test_unreadable_exit_2_and_others_still_checked(run_cli, tmp_path: Path, invalid_file: Path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "empty.mrc"
    empty.write_bytes(b"")
    code, out, err = run_cli("validate", empty, invalid_file, tmp_path / "missing.mrc")
    assert code == 2
    assert err.splitlines() == [
        f"error: {empty}: the file is empty",
        f"error: {tmp_path / 'missing.mrc'}: no such file",
    ]
    assert f"{invalid_file}: INVALID" in out


def test_json_output(run_cli, valid_files: list[Path], invalid_file: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    short = tmp_path / "short.mrc"
    short.write_bytes(b"\0" * 100)
    code, out, _ = run_cli("validate", "--json", valid_files[1], invalid_file, short)
    assert code == 2
    report = json.loads(out)["files"]
    assert json.loads(out)["valid"] is False
    assert [r["valid"] for r in report] == [True, False, False]
    assert report[0] == {"path": str(valid_files[1]), "valid": True, "problems": [], "error": None}
    assert len(report[1]["problems"]) == 2 and report[1]["error"] is None
    assert "shorter than the 1024-byte MRC header" in report[2]["error"]


def test_real_relion31_mrcs_is_invalid(run_cli) -> None:  # type: ignore[no-untyped-def]
    path = require_shared_data("star", "relion", "relion31.mrcs")
    code, out, _ = run_cli("validate", path)
    assert code == 1
    assert "  - The map ID (bytes 209-212) is '\\x00\\x00\\x00\\x00', not 'MAP '." in out.splitlines()


def test_help_has_examples(run_cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run_cli("validate", "--help")
    assert code == 0
    assert "MRC2014" in out and "cryoset validate --json" in out


def test_progress_bar_path_gives_same_results(valid_files: list[Path], invalid_file: Path) -> None:
    from cryoset.cli.validate import check_files, exit_code

    files = [*valid_files, invalid_file]
    assert check_files(files, progress=True) == check_files(files)
    assert exit_code(check_files(files)) == 1
