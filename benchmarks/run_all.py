"""Run every ``benchmarks/bench_*.py`` (each exposes ``main() -> dict``) and print a summary.

Each benchmark times cryoset and a peer (RELION, Topaz or a naive baseline) in the same
run and reports the ratio. Results go to ``benchmarks/out/results.json``; the numbers we
publish are recorded by hand in ``docs/benchmarks.md``.

Usage: ``python benchmarks/run_all.py [NAME ...]`` (names without ``bench_``).
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(path: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    wanted = set(argv)
    results: dict[str, object] = {"machine": platform.platform(), "python": platform.python_version()}
    failed = []
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        if wanted and name not in wanted:
            continue
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            results[name] = _load(path).main()
        except Exception as exc:  # report and continue with the other benchmarks
            failed.append(name)
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"   FAILED: {exc}", flush=True)
        print(f"   ({time.perf_counter() - start:.1f} s)", flush=True)
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {out / 'results.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
