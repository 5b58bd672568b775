"""The entry point: help, version, one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys

from cryoset import __version__


def test_version(run_cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run_cli("--version")
    assert code == 0
    assert out.strip() == f"cryoset {__version__}"


def test_help_lists_commands(run_cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run_cli("--help")
    assert code == 0
    for name in ("info", "validate", "convert"):
        assert name in out


def test_unknown_command_is_one_line_exit_2(run_cli) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run_cli("no-such-command")
    assert code == 2
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out


def test_console_script_runs_as_module() -> None:
    proc = subprocess.run([sys.executable, "-m", "cryoset", "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert __version__ in proc.stdout


def test_output_under_a_regular_file_names_the_file(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue #16: NotADirectoryError / FileExistsError ended in a traceback (19 commands)."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a regular file\n")
    code, out, err = run_cli("simulate", "protein", "--out", blocker / "deeper" / "p.pdb")
    assert code == 2 and "Traceback" not in out + err
    assert err.strip() == (f"error: {blocker}: is a regular file, not a directory, so "
                           f"{blocker / 'deeper'} cannot be created under it")


def test_error_lines_name_the_path_and_fit_on_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import errno

    from cryoset.cli.main import error_line
    from cryoset.errors import InputError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert error_line(FileExistsError(errno.EEXIST, "File exists", str(blocker))) == (
        f"error: {blocker}: exists and is not a directory, so nothing can be written under it")
    assert error_line(NotADirectoryError(errno.ENOTDIR, "Not a directory", str(blocker / "a" / "b"))) == (
        f"error: {blocker}: is a regular file, not a directory, so {blocker / 'a' / 'b'} cannot be created under it")
    assert error_line(PermissionError(errno.EACCES, "Permission denied", "/root/x")) == (
        "error: /root/x: permission denied")
    assert error_line(InputError("m.pdb", "Problem in line 1:\nATOM  1  N\n")) == "error: m.pdb: Problem in line 1: ATOM  1  N"


def test_other_path_os_errors_are_one_line(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue #16 review: an output name too long for the file system (``ENAMETOOLONG``, a plain
    ``OSError``, not one of the path subclasses) ended in a traceback."""
    import errno

    from cryoset.cli.main import error_line, is_user_os_error

    code, out, err = run_cli("simulate", "protein", "--out", tmp_path / ("a" * 300 + ".pdb"))
    assert code == 2 and "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path}") and "file name too long" in lines[0]
    assert error_line(OSError(errno.ENOSPC, "No space left on device")) == "error: no space left on device"
    assert is_user_os_error(OSError(errno.EROFS, "Read-only file system", "/x"))
    assert not is_user_os_error(OSError("a bug, not a path"))


def test_error_lines_show_no_python_keywords(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue #16 review: library messages reached the command line with Python keywords
    (``permissive=True``, ``voxel_size_a=``, ``give fmt=``)."""
    import re
    import struct

    import mrcfile
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).convert("P").save(tmp_path / "pal.png")
    with mrcfile.new(tmp_path / "m.mrc") as mrc:
        mrc.set_data(np.zeros((8, 8, 8), np.float32))
    raw = bytearray((tmp_path / "m.mrc").read_bytes())
    raw[40:44] = struct.pack("<f", float("nan"))  # cell length x: the voxel size is NaN
    (tmp_path / "nan.mrc").write_bytes(bytes(raw))
    (tmp_path / "weird.txt").write_text("a b c\n1 2 3\n")
    (tmp_path / "p.box").write_text("10 10 20 20\n")
    runs = [("info", tmp_path / "rgb.png"), ("info", tmp_path / "pal.png"),
            ("map", "prepare", tmp_path / "nan.mrc", "--out", tmp_path / "prep"),
            ("info", tmp_path / "weird.txt"),
            ("convert", tmp_path / "p.box", "--out", tmp_path / "o.xyz", "--box-px", "20")]
    for args in runs:
        code, out, err = run_cli(*args)
        assert code == 2 and "Traceback" not in out + err, (args, err)
        assert not re.search(r"\b[a-z]+(_[a-z]+)*=", err), (args, err)
