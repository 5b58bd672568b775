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
