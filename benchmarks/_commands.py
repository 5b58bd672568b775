"""Timing whole commands the way a user meets them: one fresh process, files in, files out.

Used by the command-vs-command benchmarks (``bench_picking.py``, ``bench_reconstruct.py``).
Both sides get the same treatment, stated in every result (:data:`PROTOCOL`):

- the same thread limits (:data:`THREAD_ENV`: one thread of every math library);
- one untimed warm-up run of each command first (OS file cache, Python bytecode and the numba
  cache are then warm for both; the warm-up's own time is reported as ``first_s``);
- then ``repeats`` timed runs, each a fresh process into an empty output folder; best and
  median wall time;
- peak RSS of each run from ``/usr/bin/time -v`` ("Maximum resident set size"), or from
  ``getrusage(RUSAGE_CHILDREN)`` of a one-child wrapper when ``/usr/bin/time`` is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1"}
PROTOCOL = ("both commands: 1 thread (OMP/MKL/OPENBLAS/NUMBA_NUM_THREADS=1), same input files, "
            "one untimed warm-up run each (first_s; OS file cache, bytecode and numba cache warm "
            "afterwards for both), then fresh processes into empty output folders; wall time "
            "best/median; peak RSS from /usr/bin/time -v; machine shared (load average given)")

_WRAPPER = ("import resource, subprocess, sys, time\n"
            "t = time.perf_counter()\n"
            "rc = subprocess.run(sys.argv[1:]).returncode\n"
            "print('WRAPPED', time.perf_counter() - t,"
            " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(rc)\n")


def run_once(cmd: Sequence[str], cwd: Path) -> tuple[float, float]:
    """Run ``cmd`` once in ``cwd``; return (wall seconds, peak RSS in MiB). Raises on failure."""
    env = {**os.environ, **THREAD_ENV}
    timer = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    if timer is not None:
        t0 = time.perf_counter()
        r = subprocess.run([timer, "-v", *cmd], cwd=cwd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
        rss_mib = int(m.group(1)) / 1024 if m else float("nan")
    else:
        r = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], cwd=cwd, env=env, capture_output=True,
                           text=True)
        m = re.search(r"WRAPPED (\S+) (\d+)", r.stderr)
        seconds = float(m.group(1)) if m else float("nan")
        rss_mib = int(m.group(2)) / 1024 if m else float("nan")
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr[-600:]}")
    return seconds, rss_mib


def time_command(cmd: Sequence[str], cwd: Path, *, reset: Callable[[], None], repeats: int = 3) -> dict[str, Any]:
    """Warm-up run, then ``repeats`` timed runs of ``cmd``; ``reset()`` empties the outputs before each."""
    reset()
    first_s, first_rss = run_once(cmd, cwd)
    times, rss = [], []
    for _ in range(repeats):
        reset()
        s, m = run_once(cmd, cwd)
        times.append(s)
        rss.append(m)
    return {"first_s": first_s, "best_s": min(times), "median_s": statistics.median(times),
            "runs_s": times, "peak_rss_mib": max([first_rss, *rss])}


def load_average() -> float:
    """The 1-minute load average (the machine is shared; stated beside every timing)."""
    return os.getloadavg()[0]
