"""STAR reading and writing: ``cryoset.io.star`` versus the ``starfile`` package.

A synthetic RELION 3.1 particle file (default 200,000 particles × 24 columns, plus a
3-row optics block; ``CRYOSET_BENCH_STAR_ROWS`` overrides) is written in two layouts —
our writer's (shortest round-trip floats, single spaces) and RELION's (right-aligned
6-decimal columns) — and read by:

- ``read_star`` (bulk loop parsing, the default),
- ``read_star`` line by line (the reference path, i.e. the reader before bulk parsing),
- ``starfile.read``.

All three run in the same process on the same file, best of ``repeats`` each; the bulk
result is checked identical to the line-by-line one (values, float bits, dtypes). Writing
times ``write_star`` against ``starfile.write`` on the same tables.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoset.testing import relion_particle_blocks, relion_style_star_text


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _same(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> bool:
    if list(a) != list(b):
        return False
    for name in a:
        x, y = a[name], b[name]
        if x.dtypes.tolist() != y.dtypes.tolist() or not x.equals(y):
            return False
        for column in x.columns:
            if x[column].dtype.kind == "f" and x[column].to_numpy().tobytes() != y[column].to_numpy().tobytes():
                return False
    return True


def bench_read(path: Path, repeats: int = 3) -> dict[str, Any]:
    """Time the three readers on one file (best of ``repeats``)."""
    import starfile

    from cryoset.io.star import _read_star, read_star

    t_bulk, ours = _best(lambda: read_star(path), repeats)
    t_line, reference = _best(lambda: _read_star(path, permissive=False, min_bulk=-1), max(1, repeats - 1))
    t_starfile, theirs = _best(lambda: starfile.read(path, always_dict=True), repeats)
    return {
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "rows": len(ours["particles"]),
        "read_star_s": round(t_bulk, 3),
        "line_by_line_s": round(t_line, 3),
        "starfile_s": round(t_starfile, 3),
        "ratio_vs_starfile": round(t_bulk / t_starfile, 3),
        "speedup_vs_line_by_line": round(t_line / t_bulk, 2),
        "identical_to_line_by_line": _same(ours, reference),
        "starfile_rows": len(theirs["particles"]),
    }


def bench_write(blocks: dict[str, pd.DataFrame], directory: Path, repeats: int = 2) -> dict[str, Any]:
    """Time ``write_star`` against ``starfile.write`` on the same tables."""
    import starfile

    from cryoset.io.star import write_star

    t_ours, _ = _best(lambda: write_star(directory / "ours.star", blocks), repeats)
    t_theirs, _ = _best(lambda: starfile.write(blocks, directory / "theirs.star"), repeats)
    return {
        "write_star_s": round(t_ours, 3),
        "starfile_write_s": round(t_theirs, 3),
        "ratio_vs_starfile": round(t_ours / t_theirs, 3),
    }


def main() -> dict[str, Any]:
    from cryoset.io.star import write_star

    n = int(os.environ.get("CRYOSET_BENCH_STAR_ROWS", "200000"))
    blocks = relion_particle_blocks(np.random.default_rng(0), n)
    res: dict[str, Any] = {"particles": n, "columns": len(blocks["particles"].columns),
                           "load_average_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as d:
        ours = write_star(Path(d) / "cryoset_layout.star", blocks, version=30001)
        relion = Path(d) / "relion_layout.star"
        relion.write_text(relion_style_star_text(blocks))
        for name, path in (("read_cryoset_layout", ours), ("read_relion_layout", relion)):
            res[name] = r = bench_read(path)
            print(f"   {name}: {r['file_mb']} MB, read_star {r['read_star_s']:.2f} s, "
                  f"line by line {r['line_by_line_s']:.2f} s, starfile {r['starfile_s']:.2f} s "
                  f"-> ours/starfile = {r['ratio_vs_starfile']:.2f}, "
                  f"identical to line by line: {r['identical_to_line_by_line']}", flush=True)
        res["write"] = w = bench_write(blocks, Path(d))
        print(f"   write: write_star {w['write_star_s']:.2f} s, starfile {w['starfile_write_s']:.2f} s "
              f"-> ours/starfile = {w['ratio_vs_starfile']:.2f}", flush=True)
    res["load_average_end"] = round(os.getloadavg()[0], 2)
    return res


if __name__ == "__main__":
    print(main())
