"""Run a dataset build: every experiment through the stages, resumably, locally or on Dask.

Output directory layout::

    OUT/
      store/                          the particle store (cryoset.store.ParticleStore)
      work/<experiment>/<stage>/      each stage's outputs (written atomically)
      work/<experiment>/<stage>.done.json   done-marker: stage, hash, summary
      build.json                      the build summary (+ .provenance.json)

A stage runs only when its done-marker is missing or records another hash. The hash is the
SHA-256 of the stage name, its parameters (local micrographs enter by content hash) and the
hashes of the stages before it, so changing a parameter re-runs that stage and those after
it. Stage outputs are renamed into place before the marker is written; the store stage
recognises an experiment it already appended (its provenance carries the hash), so a build
killed at any instant resumes without losing or duplicating a particle.

One experiment is one task. Tasks run in a local process pool (default), or on Dask
(``scheduler=`` an address or a ``dask.distributed.Client``, or ``dask_local=N`` for a
``LocalCluster``). A failed task (an exception, or a worker process that died) is retried
up to ``execution.retries`` times; completed stages are not repeated.

One build at a time per directory: :func:`run_build` holds an ``flock`` on
``OUT/.build.lock`` (which records its pid) for the whole run, and a second build into the
same directory fails at once with an :class:`InputError` naming the directory and the
holder's pid. Stale ``.part`` directories (of killed runs) are removed only under that lock,
and only those whose writer is gone (:func:`cryoset.io.atomic.remove_stale_parts`). Local
pool workers end when the main process dies (``PR_SET_PDEATHSIG`` on Linux, and a thread
watching the parent everywhere); Dask's local worker processes do so by themselves.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryoset.errors import InputError
from cryoset.io.atomic import (
    LockHeld,
    atomic_directory,
    exclusive_lock,
    remove_stale_parts,
    write_text_atomic,
)
from cryoset.pipeline import stages as st
from cryoset.pipeline.config import load_config

#: Hook called in the worker as ``hook(experiment_id, stage)`` before a stage executes.
StageHook = Callable[[str, str], None]

#: The lock file a running build holds in its output directory.
BUILD_LOCK = ".build.lock"
_PR_SET_PDEATHSIG = 1
#: How often a pool worker checks that its parent is alive (seconds).
PARENT_POLL_S = 0.5


@dataclass
class BuildResult:
    """What a build produced.

    Attributes
    ----------
    out_dir, store_path
        The build directory and its particle store.
    experiments
        experiment id → summary (counts, ``executed`` and ``skipped`` stage lists,
        ``report`` path, ``attempts``).
    report_paths
        experiment id → HTML report.
    """

    out_dir: Path
    store_path: Path
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    report_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def total_particles(self) -> int:
        """Particles stored by this build, over all experiments."""
        return int(sum(int(s.get("stored", 0)) for s in self.experiments.values()))


def _hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def marker_path(work: Path, stage: str) -> Path:
    """The done-marker of ``stage`` in an experiment's work directory."""
    return work / f"{stage}.done.json"


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_experiment(exp: Mapping[str, Any], cfg: Mapping[str, Any], out_dir: str,
                   before_stage: StageHook | None = None) -> dict[str, Any]:
    """Take one experiment through every stage (skipping those already done).

    Returns
    -------
    dict
        Stage summaries merged, plus ``executed`` and ``skipped`` (stage names) and
        ``stage_seconds``: per stage ``{"wall_s", "cpu_s", "ran"}`` (wall-clock and CPU seconds
        of this worker process, threads included; ``ran`` False: measured by the run that did
        it, recorded in its done-marker). The report shows the stages before it.
    """
    root = Path(out_dir)
    work = root / "work" / exp["id"]
    work.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"experiment_id": exp["id"], "executed": [], "skipped": []}
    timings: dict[str, dict[str, Any]] = {}
    upstream = ""
    for stage in st.build_stages(cfg):  # the 3D stages only when configured
        h = _hash({"stage": stage, "params": st.stage_parameters(stage, exp, cfg), "upstream": upstream})
        upstream = h
        mark = marker_path(work, stage)
        done = _read_marker(mark)
        if done is not None and done.get("hash") == h and (work / stage).is_dir():
            summary.update(done.get("summary", {}))
            summary["skipped"].append(stage)
            if isinstance(done.get("seconds"), dict):
                timings[stage] = {**done["seconds"], "ran": False}
            continue
        if before_stage is not None:
            before_stage(exp["id"], stage)
        mark.unlink(missing_ok=True)
        remove_stale_parts(work, f".{stage}.*.part")  # of killed runs; the build lock is held
        t_wall, t_cpu = time.perf_counter(), time.process_time()
        with atomic_directory(work / stage) as tmp:
            if stage == "store":
                result = st.run_store(exp, cfg, work, tmp, store_root=root / "store", build_hash=h)
            elif stage == "report":
                shown = {k: v for k, v in summary.items() if k not in ("executed", "skipped")}
                result = st.run_report(exp, cfg, work, tmp, summary=shown, stage_seconds=timings)
            else:
                fn: st.StageFn = getattr(st, f"run_{stage}")
                result = fn(exp, cfg, work, tmp)
        seconds = {"wall_s": round(time.perf_counter() - t_wall, 3),
                   "cpu_s": round(time.process_time() - t_cpu, 3)}
        timings[stage] = {**seconds, "ran": True}
        write_text_atomic(mark, json.dumps({"stage": stage, "hash": h, "summary": result, "seconds": seconds},
                                           indent=2, sort_keys=True) + "\n")
        summary.update(result)
        summary["executed"].append(stage)
    summary["stage_seconds"] = timings
    summary["report"] = str(work / "report" / "report.html")
    return summary


def _task(exp: Mapping[str, Any], cfg: Mapping[str, Any], out_dir: str,
          before_stage: StageHook | None = None) -> dict[str, Any]:
    """:func:`run_experiment` for a pool or Dask worker.

    Bad input is returned as ``{"input_error": (path, message)}`` instead of raised
    (:class:`InputError` does not survive pickling) and is never retried; neither is a
    ``MemoryError``: running the same stage again would only exhaust memory again.
    """
    try:
        return run_experiment(exp, cfg, out_dir, before_stage)
    except InputError as exc:
        return {"input_error": (exc.path, exc.message)}
    except MemoryError:
        return {"input_error": (f"experiment {exp['id']}", "ran out of memory (not retried); make "
                                "it smaller (size_px, micrographs, particles_per_micrograph) or "
                                "run fewer workers")}


def _unwrap(res: dict[str, Any]) -> dict[str, Any]:
    if "input_error" in res:
        path, message = res["input_error"]
        raise InputError(path, message)
    return res


def _progress(enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled)


def _watch_parent(parent_pid: int) -> None:
    """Worker thread: end the process as soon as its parent is gone (re-parented)."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _exit_with_parent(main_pid: int) -> None:
    """Pool-worker initializer: the worker ends when the build's main process dies.

    On Linux the kernel sends SIGKILL at the parent's death (``PR_SET_PDEATHSIG``); a daemon
    thread also polls ``os.getppid()`` (other systems, and start methods whose parent is a
    fork server: the server itself exits with the main process).
    """
    parent = os.getppid()
    if sys.platform.startswith("linux") and parent == main_pid:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if parent == 1 or os.getppid() != parent:  # the parent died before the watch began
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="cryoset-parent-watch", daemon=True).start()


def _run_local(exps: list[dict[str, Any]], cfg: dict[str, Any], out: Path, workers: int,
               retries: int, hook: StageHook | None, on_done: Callable[[str], None]
               ) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    attempts = {e["id"]: 0 for e in exps}
    pending = list(exps)
    while pending:
        failed: list[dict[str, Any]] = []
        with cf.ProcessPoolExecutor(max_workers=max(1, min(workers, len(pending))),
                                    initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_task, e, cfg, str(out), hook): e for e in pending}
            for fut in cf.as_completed(futures):
                exp = futures[fut]
                attempts[exp["id"]] += 1
                try:
                    res = _unwrap(fut.result())
                except InputError:
                    raise
                except Exception as exc:  # a crash or a dead worker: retry
                    if attempts[exp["id"]] > retries:
                        raise RuntimeError(f"experiment {exp['id']} failed after "
                                           f"{attempts[exp['id']]} attempts: {exc!r}") from exc
                    failed.append(exp)
                    continue
                res["attempts"] = attempts[exp["id"]]
                results[exp["id"]] = res
                on_done(exp["id"])
        pending = failed
    return results


def _run_dask(exps: list[dict[str, Any]], cfg: dict[str, Any], out: Path, client: Any,
              retries: int, hook: StageHook | None, on_done: Callable[[str], None]
              ) -> dict[str, dict[str, Any]]:
    from dask.distributed import as_completed

    results: dict[str, dict[str, Any]] = {}
    futures = {client.submit(_task, e, cfg, str(out), hook, pure=False,
                             retries=retries): e for e in exps}
    for fut in as_completed(list(futures)):
        exp = futures[fut]
        results[exp["id"]] = _unwrap(fut.result())
        on_done(exp["id"])
    return results


def run_build(config: str | os.PathLike[str] | Mapping[str, Any], out_dir: str | os.PathLike[str], *,
              scheduler: Any = None, dask_local: int | None = None, dask_processes: bool = True,
              workers: int | None = None, progress: bool = True,
              before_stage: StageHook | None = None) -> BuildResult:
    """Build (or resume) a particle dataset from a configuration.

    Parameters
    ----------
    config
        YAML path or mapping (:func:`cryoset.pipeline.config.load_config`).
    out_dir
        Build directory (created; an existing one is resumed).
    scheduler
        Dask scheduler address (``tcp://host:8786``) or a ``dask.distributed.Client``.
    dask_local
        Start a ``LocalCluster`` with this many single-threaded workers.
    dask_processes
        LocalCluster workers are processes (True) or threads of this process.
    workers
        Local pool size (default: ``execution.workers`` of the config).
    progress
        Show a rich progress bar on stderr.
    before_stage
        Hook run in the worker before each stage executes (tests inject faults with it).

    Returns
    -------
    BuildResult

    Raises
    ------
    InputError
        Also when another build is running in ``out_dir`` (it holds ``OUT/.build.lock``): the
        message names the directory and that build's pid. Builds do not wait for each other.
    """
    if scheduler is not None and dask_local is not None:
        raise InputError("--scheduler", "give either a scheduler address or --dask-local")
    cfg = load_config(config)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with _build_lock(out):
        return _build_locked(cfg, out, scheduler=scheduler, dask_local=dask_local, dask_processes=dask_processes,
                             workers=workers, progress=progress, before_stage=before_stage)


@contextlib.contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    """Hold ``out/.build.lock`` for a build; another holder is an InputError at once."""
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(exclusive_lock(out / BUILD_LOCK, wait=False))
    except LockHeld as exc:
        raise InputError(out, f"another build is running in this directory ({exc.holder}); wait for it "
                         "to finish or build into another directory") from None
    with stack:
        yield


def _build_locked(cfg: dict[str, Any], out: Path, *, scheduler: Any, dask_local: int | None,
                  dask_processes: bool, workers: int | None, progress: bool,
                  before_stage: StageHook | None) -> BuildResult:
    """:func:`run_build` once its lock is held."""
    from cryoset.provenance import make_provenance, write_provenance
    from cryoset.store import ParticleStore

    store_path = out / "store"
    if not (store_path / "store.json").exists():
        ParticleStore.create(store_path, encoding=cfg["store"]["encoding"],
                             chunk_particles=int(cfg["store"]["chunk_particles"]))
    exps = list(cfg["experiments"])
    for exp in exps:  # fail fast on missing local micrographs
        if exp["kind"] == "local":
            st.local_micrographs(exp, cfg)
    retries = int(cfg["execution"]["retries"])
    with _progress(progress) as bar:
        task = bar.add_task("building experiments", total=len(exps))

        def done(eid: str) -> None:
            bar.update(task, advance=1, description=f"done {eid}")

        if scheduler is not None or dask_local is not None:
            from dask.distributed import Client, LocalCluster

            if isinstance(scheduler, Client):
                results = _run_dask(exps, cfg, out, scheduler, retries, before_stage, done)
            elif scheduler is not None:
                with Client(str(scheduler)) as client:
                    results = _run_dask(exps, cfg, out, client, retries, before_stage, done)
            else:
                n = int(dask_local or 1)
                with LocalCluster(n_workers=n, threads_per_worker=1, processes=dask_processes,
                                  dashboard_address=":0") as cluster, Client(cluster) as client:
                    results = _run_dask(exps, cfg, out, client, retries, before_stage, done)
        else:
            n_workers = int(workers if workers is not None else cfg["execution"]["workers"])
            results = _run_local(exps, cfg, out, n_workers, retries, before_stage, done)
    result = BuildResult(out, store_path)
    for exp in exps:
        res = results[exp["id"]]
        result.experiments[exp["id"]] = res
        result.report_paths[exp["id"]] = Path(res["report"])
    summary = {"name": cfg["name"], "store": str(store_path),
               "experiments": {k: {kk: vv for kk, vv in v.items()} for k, v in result.experiments.items()}}
    build_json = write_text_atomic(out / "build.json", json.dumps(summary, indent=2, default=str) + "\n")
    params = {k: v for k, v in cfg.items() if k != "base_dir"}
    write_provenance(build_json, make_provenance("build", params))
    return result
