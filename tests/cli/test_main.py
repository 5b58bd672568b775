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
