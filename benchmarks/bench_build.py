"""Benchmark: the dataset build (``cryoset build``) end to end — micrographs per hour per core,
the speed-up from 1 to 2 Dask workers, and the time per stage.

Simulated experiments (``simulated:`` in the build configuration: procedural protein, CTF,
Poisson noise) of ``--size-px``² micrographs go through every stage: micrographs (the
simulation itself: a real build reads its micrographs instead) → CTF → pick → extract → 2D
classification → store → report. The same configuration is built twice, back to back in one
run, into fresh directories: once on a Dask ``LocalCluster`` with 1 single-threaded worker,
once with 2. Every math library is limited to one thread (``OMP/MKL/OPENBLAS/NUMBA_NUM_THREADS
=1``), so one worker is one core. Per-stage seconds come from the build's own done-markers
(``stage_seconds`` of each experiment: wall and CPU of the worker process).

Derived numbers (printed in the JSON):

- ``micrographs_per_hour_per_core`` (1 worker): micrographs × 3600 / (sum of the stage wall
  seconds), with and without the simulation stage;
- ``speedup_1_to_2_workers``: wall of the 1-worker build / wall of the 2-worker build (whole
  ``run_build``, cluster start-up included, and the stages' sum per worker);
- the cryoPANDA arithmetic (``--cryopanda-micrographs``): core-hours and wall-clock hours on
  a cluster of ``N`` cores at the measured rate.

Run: ``.venv/bin/python benchmarks/bench_build.py [--size-px 4096] [--experiments 4]
[--micrographs 1] [--particles 150]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported, here and in the Dask worker processes

from cryoset.pipeline.build import run_build  # noqa: E402
from cryoset.pipeline.stages import STAGES  # noqa: E402

#: cryoPANDA: 252 experiments, 37,623,123 particles (docs/store.md; the authors' repository).
CRYOPANDA_PARTICLES = 37_623_123


def config(args: argparse.Namespace) -> dict[str, Any]:
    """The build: ``args.experiments`` simulated experiments of ``args.micrographs`` micrographs."""
    exps = [{"id": f"sim-{k}", "simulated": {
        "seed": 100 + k, "protein_length": 150, "micrographs": args.micrographs, "size_px": args.size_px,
        "pixel_size_a": 1.5, "particles_per_micrograph": args.particles}} for k in range(args.experiments)]
    return {"name": "bench build", "experiments": exps,
            "ctf": {"tile_px": 512, "patches": "2x2"},
            "extract": {"pixel_size_out_a": 3.0, "phase_flip": True},
            "classify": {"n_classes": args.classes, "n_iter": args.iterations, "seed": 0},
            "store": {"encoding": "uint8"}, "execution": {"workers": 1, "retries": 0}}


def build_once(cfg: dict[str, Any], out: Path, workers: int) -> dict[str, Any]:
    """One build on a LocalCluster of ``workers`` single-threaded workers; its timings."""
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = run_build(cfg, out, dask_local=workers, progress=False)
    wall = time.perf_counter() - t0
    per_stage: dict[str, dict[str, float]] = {s: {"wall_s": 0.0, "cpu_s": 0.0} for s in STAGES}
    for summary in result.experiments.values():
        for stage, t in summary["stage_seconds"].items():
            per_stage[stage]["wall_s"] += float(t["wall_s"])
            per_stage[stage]["cpu_s"] += float(t["cpu_s"])
    stages_wall = sum(t["wall_s"] for t in per_stage.values())
    return {"workers": workers, "wall_s": wall, "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0], "particles": result.total_particles,
            "stages_wall_sum_s": stages_wall,
            "stages_cpu_sum_s": sum(t["cpu_s"] for t in per_stage.values()),
            "per_stage": per_stage}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Build with 1 then 2 workers; print (and return) the timings and the derived rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-px", type=int, default=4096, help="micrograph edge (pixels)")
    parser.add_argument("--experiments", type=int, default=4, help="experiments (one Dask task each)")
    parser.add_argument("--micrographs", type=int, default=1, help="micrographs per experiment")
    parser.add_argument("--particles", type=int, default=150, help="particles per micrograph")
    parser.add_argument("--classes", type=int, default=8, help="2D classes")
    parser.add_argument("--iterations", type=int, default=10, help="2D classification iterations")
    parser.add_argument("--workers", default="1,2", help="worker counts, built in this order")
    parser.add_argument("--cryopanda-micrographs", type=int, default=190_000,
                        help="micrographs assumed for cryoPANDA (37.6 M particles / ~200 per micrograph)")
    parser.add_argument("--cluster-cores", type=int, default=512, help="cores of the cluster in the arithmetic")
    parser.add_argument("--from-json", type=Path, help="recompute the derived numbers of an earlier run's output")
    args = parser.parse_args([] if argv is None else argv)
    if args.from_json is not None:
        earlier = json.loads(args.from_json.read_text())
        derive(earlier, args.cryopanda_micrographs, args.cluster_cores)
        print(json.dumps(earlier, indent=2))
        return earlier
    cfg = config(args)
    n_mics = args.experiments * args.micrographs
    out: dict[str, Any] = {"size_px": args.size_px, "experiments": args.experiments, "micrographs": n_mics,
                           "particles_per_micrograph": args.particles, "config": cfg, "builds": []}
    with tempfile.TemporaryDirectory() as tmp:
        for w in (int(v) for v in args.workers.split(",")):
            d = Path(tmp) / f"build-{w}"
            out["builds"].append(build_once(cfg, d, w))
            shutil.rmtree(d, ignore_errors=True)
    derive(out, args.cryopanda_micrographs, args.cluster_cores)
    print(json.dumps(out, indent=2))
    return out


def derive(out: dict[str, Any], cryopanda_micrographs: int, cluster_cores: int) -> None:
    """Rates, speed-up and the cryoPANDA arithmetic from the builds' timings (in place).

    Wall seconds on a shared machine include waiting for the cores; CPU seconds are the work.
    Micrograph stages (CTF, pick, extract, store) scale with micrographs, classification with
    particles (× classes × iterations), so cryoPANDA's cost is computed per stage kind.
    """
    n_mics = int(out["micrographs"])
    one = next((b for b in out["builds"] if b["workers"] == 1), None)
    two = next((b for b in out["builds"] if b["workers"] == 2), None)
    if one is not None:
        st = one["per_stage"]
        rates = {}
        for kind in ("wall_s", "cpu_s"):
            total = sum(t[kind] for t in st.values())
            rates[kind] = {"including_simulation": n_mics * 3600 / total,
                           "processing_only": n_mics * 3600 / (total - st["micrographs"][kind])}
        rates["whole_run_build_wall"] = n_mics * 3600 / one["wall_s"]  # type: ignore[assignment]
        out["micrographs_per_hour_per_core"] = rates
        per_mic = sum(st[s]["cpu_s"] for s in ("ctf", "pick", "extract", "store", "report")) / n_mics
        per_particle = st["classify"]["cpu_s"] / max(int(one["particles"]), 1)
        mic_h = cryopanda_micrographs * per_mic / 3600
        cls_h = CRYOPANDA_PARTICLES * per_particle / 3600
        out["cryopanda"] = {
            "particles": CRYOPANDA_PARTICLES, "experiments": 252,
            "micrographs_assumed": cryopanda_micrographs,
            "cpu_s_per_micrograph_ctf_pick_extract_store": per_mic,
            "cpu_s_per_particle_classify": per_particle,
            "core_hours_micrograph_stages": mic_h, "core_hours_classify": cls_h,
            "core_hours_total": mic_h + cls_h, "cluster_cores": cluster_cores,
            "wall_hours_at_perfect_scaling": (mic_h + cls_h) / cluster_cores,
            # one Dask task per experiment: at most 252 busy workers, and the largest experiment
            # runs on one core from start to end
            "core_hours_mean_experiment": (mic_h + cls_h) / 252,
        }
    if one is not None and two is not None:
        out["speedup_1_to_2_workers"] = {"run_build_wall": one["wall_s"] / two["wall_s"],
                                         "cpu_s_1_worker": one["stages_cpu_sum_s"],
                                         "cpu_s_2_workers": two["stages_cpu_sum_s"]}


if __name__ == "__main__":
    main(sys.argv[1:])
