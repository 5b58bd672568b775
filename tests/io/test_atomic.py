"""Atomic writes: modes follow the umask, exclusive commits, stale temporary directories, locks."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from cryoset.io import atomic
from cryoset.io.atomic import (
    DestinationExists,
    LockHeld,
    atomic_directory,
    atomic_path,
    exclusive_lock,
    remove_stale_parts,
    rename_noreplace,
    write_bytes_atomic,
    write_text_atomic,
)

#: Bound on every wait for a helper process (seconds); the waits end as soon as it answers.
WAIT_S = 120


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under the umask ``request.param`` and restore the old one."""
    old = os.umask(request.param)
    try:
        yield int(request.param)
    finally:
        os.umask(old)


@pytest.fixture(params=["renameat2", "fallback"])
def rename_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with the kernel's renameat2 and with the portable check-then-rename path."""
    if request.param == "fallback":
        monkeypatch.setattr(atomic, "_RENAMEAT2", None)
    elif atomic._RENAMEAT2 is None:  # pragma: no cover - a libc without renameat2
        pytest.skip("renameat2 is not available here")
    return str(request.param)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], indirect=True)
def test_outputs_follow_the_umask(tmp_path: Path, umask: int) -> None:
    dirs, files = 0o777 & ~umask, 0o666 & ~umask
    with atomic_directory(tmp_path / "out") as tmp:
        assert _mode(tmp) == dirs  # already while it is written
        (tmp / "f.txt").write_text("x")
    assert _mode(tmp_path / "out") == dirs and _mode(tmp_path / "out" / "f.txt") == files
    with atomic_directory(tmp_path / "out") as tmp:  # a replacement, too
        (tmp / "g.txt").write_text("y")
    assert _mode(tmp_path / "out") == dirs
    assert _mode(write_text_atomic(tmp_path / "a.txt", "hello")) == files
    assert _mode(write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")) == files
    with atomic_path(tmp_path / "c.parquet") as tmp:
        pd.DataFrame({"a": [1, 2]}).to_parquet(tmp)
    assert _mode(tmp_path / "c.parquet") == files
    with exclusive_lock(tmp_path / "x.lock"):
        pass
    assert _mode(tmp_path / "x.lock") == files


def test_exclusive_commit_refuses_an_existing_destination(tmp_path: Path, rename_path: str) -> None:
    dest = tmp_path / "exp"
    with atomic_directory(dest, replace=False) as tmp:
        (tmp / "data").write_text("first")
    with pytest.raises(DestinationExists), atomic_directory(dest, replace=False) as tmp:
        (tmp / "data").write_text("second")
    assert (dest / "data").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # the loser's directory is gone
    # replacing is explicit, and swaps the whole directory
    with atomic_directory(dest, replace=True) as tmp:
        (tmp / "other").write_text("third")
    assert sorted(p.name for p in dest.iterdir()) == ["other"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
    (tmp_path / "f").write_text("1")
    (tmp_path / "g").write_text("2")
    with pytest.raises(DestinationExists):
        rename_noreplace(tmp_path / "f", tmp_path / "g")
    assert (tmp_path / "g").read_text() == "2"
    rename_noreplace(tmp_path / "f", tmp_path / "h")
    assert (tmp_path / "h").read_text() == "1" and not (tmp_path / "f").exists()


def _helper(tmp_path: Path, body: str) -> subprocess.Popen[str]:
    """A Python process running ``body``; it prints one line when ready, then waits for stdin."""
    code = textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _ready_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # the helper prints within seconds or exits (EOF)
    assert line, proc.communicate(timeout=WAIT_S)[1]
    return line


def test_only_the_temporary_directories_of_dead_writers_are_removed(tmp_path: Path) -> None:
    writer = """
        import sys
        from pathlib import Path
        from cryoset.io.atomic import atomic_directory
        with atomic_directory(Path(sys.argv[1]) / "stage") as tmp:
            (tmp / "half").write_text("x")
            print(tmp, flush=True)
            sys.stdin.readline()
    """
    live = _helper(tmp_path, writer)
    doomed = _helper(tmp_path, writer)
    try:
        live_dir, doomed_dir = Path(_ready_line(live)), Path(_ready_line(doomed))
        assert live_dir.name.startswith(".stage.") and live_dir.name.endswith(".part")
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate(timeout=WAIT_S)
        with atomic_directory(tmp_path / "stage") as mine:  # this process's own write is live too
            removed = remove_stale_parts(tmp_path, ".stage.*.part")
            assert removed == [doomed_dir]
            assert live_dir.is_dir() and mine.is_dir() and not doomed_dir.exists()
        assert remove_stale_parts(tmp_path, ".stage.*.part") == []
    finally:
        out, err = live.communicate("\n", timeout=WAIT_S)
    assert live.returncode == 0, err
    assert (tmp_path / "stage" / "half").exists()  # the live writer committed its directory


def test_a_held_lock_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    holder = _helper(tmp_path, """
        import os, sys, time
        from pathlib import Path
        from cryoset.io.atomic import exclusive_lock
        with exclusive_lock(Path(sys.argv[1]) / "build.lock"):
            child = os.fork()  # e.g. a pool worker: it must not keep the lock alive
            if child == 0:
                for fd in (0, 1, 2):  # let the test read the parent's output to its end
                    os.dup2(os.open(os.devnull, os.O_RDWR), fd)
                time.sleep(120)
                os._exit(0)
            print(child, flush=True)
            sys.stdin.readline()
    """)
    child = 0
    try:
        child = int(_ready_line(holder))
        with pytest.raises(LockHeld) as info, exclusive_lock(tmp_path / "build.lock", wait=False):
            pass
        assert f"pid {holder.pid} " in info.value.holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=WAIT_S)
    try:
        os.kill(child, 0)  # the forked child lives on …
        with exclusive_lock(tmp_path / "build.lock", wait=False):  # … yet the lock died with its holder
            assert (tmp_path / "build.lock").read_text().startswith(f"pid {os.getpid()} ")
    finally:
        os.kill(child, signal.SIGKILL)
