"""numba kernels compiled ahead (``python -m cryoset._compile``) load from the cache afterwards.

Behaviour, not timing: after the warm-up has filled an empty cache, a fresh process that calls
the kernels reports cache hits and no cache misses (numba's dispatcher statistics), i.e. it
compiled nothing. Every ``@numba.njit`` of the package is cached and covered by a warm-up.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cryoset
from cryoset import _compile

_SRC = Path(cryoset.__file__).parent

_STATS = r"""
import importlib, json, sys
from cryoset import _compile
groups = sys.argv[1:]
_compile.compile_all(groups, verbose=False)
out = {}
for g in groups:
    for k in _compile.WARMUPS[g][1]:
        mod, attr = k.split(":")
        d = getattr(importlib.import_module(mod), attr)
        out[k] = [len(d.signatures), sum(d.stats.cache_hits.values()), sum(d.stats.cache_misses.values())]
json.dump(out, sys.stdout)
"""


def _numba_modules() -> list[str]:
    names = []
    for path in sorted(_SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "numba.njit" in text or "@njit" in text:
            rel = path.relative_to(_SRC.parent).with_suffix("")
            names.append(".".join(rel.parts))
    return names


def _dispatchers() -> dict[str, object]:
    from numba.core.registry import CPUDispatcher

    found: dict[str, object] = {}
    for name in _numba_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if isinstance(value, CPUDispatcher) and value.py_func.__module__ == name:
                found[f"{name}:{attr}"] = value
    return found


def test_every_kernel_is_cached_and_warmed_up() -> None:
    kernels = _dispatchers()
    assert "cryoset.fourier.slices:insert_slices_trilinear" in kernels
    uncached = [k for k, d in kernels.items() if type(d._cache).__name__ == "NullCache"]  # type: ignore[attr-defined]
    assert uncached == [], "add cache=True to these @numba.njit"
    covered = {k for _fn, ks in _compile.WARMUPS.values() for k in ks} | set(_compile.CALLEES)
    assert set(kernels) - covered == set(), "add these kernels to a warm-up in cryoset/_compile.py"
    assert covered - set(kernels) == set(), "cryoset/_compile.py names kernels that do not exist"


def test_after_the_warmup_a_fresh_process_compiles_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "OMP_NUM_THREADS": "1"}
    groups = ["store", "align"]

    def run() -> dict[str, list[int]]:
        proc = subprocess.run([sys.executable, "-c", _STATS, *groups], capture_output=True, text=True,
                              env=env, timeout=600, check=True)
        result: dict[str, list[int]] = json.loads(proc.stdout)
        return result

    first = run()  # the empty cache: everything compiles (and is written)
    assert all(misses == sigs > 0 and hits == 0 for sigs, hits, misses in first.values()), first
    assert any((tmp_path / "numba").rglob("*.nbi")), "nothing was written to NUMBA_CACHE_DIR"
    second = run()  # a fresh process: every signature loads from the cache
    assert all(hits == sigs > 0 and misses == 0 for sigs, hits, misses in second.values()), second


def test_module_entry_point_lists_groups() -> None:
    proc = subprocess.run([sys.executable, "-m", "cryoset._compile", "--list"], capture_output=True, text=True,
                          timeout=120, check=True)
    assert [line.split(":")[0] for line in proc.stdout.splitlines()] == list(_compile.WARMUPS)


def test_cache_dir_falls_back_to_the_user_cache_when_the_package_is_read_only(tmp_path: Path) -> None:
    env: dict[str, str] = {"XDG_CACHE_HOME": str(tmp_path)}
    assert cryoset.numba_cache_dir(str(tmp_path / "no-such-dir"), env) == str(tmp_path / "cryoset" / "numba")
    assert env["NUMBA_CACHE_DIR"] == str(tmp_path / "cryoset" / "numba")
    # a value the user set is kept; a writable package keeps numba's own location
    mine = {"NUMBA_CACHE_DIR": "/somewhere"}
    assert cryoset.numba_cache_dir(str(tmp_path / "no-such-dir"), mine) is None
    assert mine == {"NUMBA_CACHE_DIR": "/somewhere"}
    writable: dict[str, str] = {}
    assert cryoset.numba_cache_dir(str(tmp_path), writable) is None and writable == {}


@pytest.mark.parametrize("name", ["nothing"])
def test_unknown_group_is_refused(name: str) -> None:
    with pytest.raises(SystemExit, match="unknown kernel group"):
        _compile.compile_all([name])
