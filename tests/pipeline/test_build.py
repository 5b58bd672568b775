"""Dataset builds: a real run, resume after SIGKILL, Dask with retries, dead workers."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from cryoset.pipeline.build import BuildResult, marker_path, run_build
from cryoset.pipeline.stages import STAGES
from cryoset.store import ParticleStore

CONFIG: dict[str, Any] = {
    "name": "test build",
    "experiments": [
        {"id": "sim-a", "simulated": {"seed": 1, "protein_length": 100, "micrographs": 2, "size_px": 384,
                                      "particles_per_micrograph": 12}},
        {"id": "sim-b", "simulated": {"seed": 2, "protein_length": 80, "micrographs": 1, "size_px": 384,
                                      "particles_per_micrograph": 12}},
    ],
    "ctf": {"tile_px": 128, "max_resolution_a": 6.0},
    "pick": {"threshold": 3.5},
    "extract": {"pixel_size_out_a": 3.0},
    "classify": {"n_classes": 2, "n_iter": 2, "psi_step_deg": 20, "offset_range_px": 2},
    "execution": {"workers": 2, "retries": 2},
}


def _dataset(store_path: Path) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    store = ParticleStore.open(store_path)
    out = {}
    for eid in store.experiments():
        ann = store.annotations(eid).reset_index(drop=True)
        out[eid] = (ann, store.read_images(eid, np.arange(len(ann))))
    return out


def _same_dataset(a: Path, b: Path) -> None:
    da, db = _dataset(a), _dataset(b)
    assert sorted(da) == sorted(db) == ["sim-a", "sim-b"]
    for eid in da:
        pd.testing.assert_frame_equal(da[eid][0], db[eid][0])
        np.testing.assert_array_equal(da[eid][1], db[eid][1])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    """One uninterrupted local (process pool) build."""
    return run_build(CONFIG, tmp_path_factory.mktemp("ref"), progress=False)


@pytest.mark.slow
def test_build_produces_a_consistent_annotated_store(reference: BuildResult) -> None:
    data = _dataset(reference.store_path)
    for eid, summary in reference.experiments.items():
        assert summary["executed"] == list(STAGES) and summary["skipped"] == []
        ann, images = data[eid]
        assert len(ann) == summary["stored"] == summary["particles"] > 5
        assert ann["particle_index"].tolist() == list(range(len(ann)))
        assert not ann.duplicated(["micrograph", "x_px", "y_px"]).any()
        assert images.shape[1] == images.shape[2] and np.isfinite(images).all()
        assert set(ann["class_number"]) <= {1, 2} and np.allclose(ann["pixel_size_a"], 3.0, rtol=0.1)
        assert (ann["original_pixel_size_a"] == 1.5).all()
        # CTF fits and picks agree with the simulation truth
        work = reference.out_dir / "work" / eid
        truth = pd.read_csv(work / "micrographs" / "truth.csv")
        found = []
        for mic, rows in ann.groupby("micrograph"):
            t = truth[truth["micrograph"] == mic]
            fit = (rows["defocus_u_a"].iloc[0] + rows["defocus_v_a"].iloc[0]) / 2
            true = (t["defocus_u_a"].mean() + t["defocus_v_a"].mean()) / 2
            assert abs(fit - true) < 0.05 * true  # tiny 384² micrographs, 128-px tiles
            d = np.hypot(rows["x_px"].to_numpy()[:, None] - t["x_px"].to_numpy()[None],
                         rows["y_px"].to_numpy()[:, None] - t["y_px"].to_numpy()[None])
            found.append(d.min(axis=0) < 0.5 * rows["diameter_px"].iloc[0])  # project match radius
        recall = np.concatenate(found).mean()
        assert recall >= 0.4
        html = reference.report_paths[eid].read_text()
        assert eid in html and "averages.png" in html and (reference.report_paths[eid].parent / "averages.png").exists()
    assert (reference.out_dir / "build.json.provenance.json").exists()


@pytest.mark.slow
def test_rerun_skips_every_stage_and_leaves_markers_alone(reference: BuildResult) -> None:
    markers = {(e, s): marker_path(reference.out_dir / "work" / e, s).stat().st_mtime_ns
               for e in reference.experiments for s in STAGES}
    again = run_build(CONFIG, reference.out_dir, progress=False, workers=1)
    for summary in again.experiments.values():
        assert summary["executed"] == [] and summary["skipped"] == list(STAGES)
    assert markers == {(e, s): marker_path(reference.out_dir / "work" / e, s).stat().st_mtime_ns
                       for e in reference.experiments for s in STAGES}
    assert again.total_particles == reference.total_particles


def _fail_once(flags: str, mode: str, experiment_id: str, stage: str) -> None:
    """Stage hook: the first time sim-a reaches extract, raise or kill the worker process."""
    flag = Path(flags) / f"{experiment_id}-{stage}"
    if experiment_id == "sim-a" and stage == "extract" and not flag.exists():
        flag.write_text("failed once")
        if mode == "kill":
            os._exit(13)
        raise RuntimeError("injected failure")


@pytest.mark.slow
def test_dask_local_cluster_with_retry_gives_the_same_dataset(reference: BuildResult, tmp_path: Path) -> None:
    hook = functools.partial(_fail_once, str(tmp_path), "raise")
    result = run_build(CONFIG, tmp_path / "dask", dask_local=2, dask_processes=False, progress=False,
                       before_stage=hook)
    assert (tmp_path / "sim-a-extract").exists()  # the failure really happened
    # the retry resumed: stages before extract were not run twice
    assert result.experiments["sim-a"]["executed"] == ["extract", "classify", "store", "report"]
    _same_dataset(reference.store_path, result.store_path)


@pytest.mark.slow
def test_worker_killed_mid_stage_is_retried(reference: BuildResult, tmp_path: Path) -> None:
    hook = functools.partial(_fail_once, str(tmp_path), "kill")
    result = run_build(CONFIG, tmp_path / "local", progress=False, before_stage=hook)
    assert (tmp_path / "sim-a-extract").exists()
    assert result.experiments["sim-a"]["attempts"] >= 2
    _same_dataset(reference.store_path, result.store_path)
    store = ParticleStore.open(result.store_path)
    assert store.experiments() == ["sim-a", "sim-b"]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(reference: BuildResult, tmp_path: Path) -> None:
    config = tmp_path / "build.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "cryoset", "build", str(config), "--out", str(out),
                             "--workers", "1", "--quiet"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_store = marker_path(out / "work" / "sim-a", "store")
    deadline = time.monotonic() + 120
    while not first_store.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first_store.exists(), "the build did not get far enough before the kill"
    done_before = {s: marker_path(out / "work" / "sim-a", s).stat().st_mtime_ns for s in STAGES[:6]}
    assert not marker_path(out / "work" / "sim-b", "store").exists()
    resumed = run_build(config, out, progress=False, workers=1)
    assert "store" in resumed.experiments["sim-a"]["skipped"]
    assert resumed.experiments["sim-b"]["executed"][-2:] == ["store", "report"]
    assert done_before == {s: marker_path(out / "work" / "sim-a", s).stat().st_mtime_ns for s in STAGES[:6]}
    _same_dataset(reference.store_path, out / "store")


@pytest.mark.slow
def test_local_micrographs_give_the_simulated_experiments_particles(reference: BuildResult,
                                                                    tmp_path: Path) -> None:
    import json

    from cryoset.errors import InputError

    sim_work = reference.out_dir / "work" / "sim-a"
    diameter_a = json.loads((sim_work / "micrographs" / "info.json").read_text())["diameter_a"]
    config = {k: v for k, v in CONFIG.items() if k != "experiments"}
    config["pick"] = {**CONFIG["pick"], "diameter_a": diameter_a}
    config["experiments"] = [{"id": "local-a", "local": {
        "micrographs": str(sim_work / "micrographs" / "*.mrc"), "pixel_size_a": 1.5,
        "voltage_kv": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.07}}]
    result = run_build(config, tmp_path / "local", progress=False, workers=1)
    local = ParticleStore.open(result.store_path).annotations("local-a")
    sim = ParticleStore.open(reference.store_path).annotations("sim-a")
    assert (local["source_kind"] == "local").all() and (sim["source_kind"] == "simulated").all()
    drop = ["experiment_id", "source_kind"]
    pd.testing.assert_frame_equal(local.drop(columns=drop), sim.drop(columns=drop))
    # a changed classification re-runs classify but cannot rewrite the append-only store
    work = result.out_dir / "work" / "local-a"
    before = {s: marker_path(work, s).stat().st_mtime_ns for s in STAGES}
    config["classify"] = {**CONFIG["classify"], "n_iter": 1}
    with pytest.raises(InputError, match="already in the store from other inputs"):
        run_build(config, tmp_path / "local", progress=False, workers=1)
    after = {s: marker_path(work, s).stat().st_mtime_ns for s in STAGES[:4]}
    assert after == {s: before[s] for s in STAGES[:4]}
    assert marker_path(work, "classify").stat().st_mtime_ns != before["classify"]
    assert not marker_path(work, "store").exists()


def test_local_experiment_without_micrographs_is_an_input_error(tmp_path: Path) -> None:
    from cryoset.errors import InputError

    config = {"pick": {"diameter_a": 100.0}, "experiments": [{"id": "x", "local": {
        "micrographs": str(tmp_path / "none" / "*.mrc"), "pixel_size_a": 1.0, "voltage_kv": 300.0,
        "cs_mm": 2.7}}]}
    with pytest.raises(InputError, match="experiment x: no micrograph matches the pattern"):
        run_build(config, tmp_path / "out", progress=False, workers=1)


_BLOCKING_HOOK = '''
import os
import time
from pathlib import Path


def block(flag_dir: str, experiment_id: str, stage: str) -> None:
    """Announce this pool worker, then stay busy (bounded) until someone kills it."""
    Path(flag_dir, f"worker-{os.getpid()}").touch()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.05)
'''

_BLOCKED_BUILD = '''
import contextlib
import functools
import sys

sys.path.insert(0, sys.argv[1])
import blocking_hook
from cryoset.pipeline.build import run_build

run_build(sys.argv[2], sys.argv[3], workers=1, progress=False,
          before_stage=functools.partial(blocking_hook.block, sys.argv[1]))
'''


def _gone(pid: int) -> bool:
    """The process has exited (no such process, or a zombie nobody reaped yet)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    return fields[0] in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_one_build_per_directory_and_workers_die_with_the_main_process(tmp_path: Path) -> None:
    from cryoset.errors import InputError
    from cryoset.io.atomic import exclusive_lock

    (tmp_path / "blocking_hook.py").write_text(_BLOCKING_HOOK)
    config = tmp_path / "build.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = (tmp_path / "out").resolve()
    proc = subprocess.Popen([sys.executable, "-c", _BLOCKED_BUILD, str(tmp_path), str(config), str(out)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("worker-*")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]
        assert len(workers) == 1, "the first build's pool worker never started"
        # a second build into the same directory fails at once, naming the directory and the holder
        with pytest.raises(InputError, match=f"another build is running in this directory \\(pid {proc.pid} ") as info:
            run_build(CONFIG, out, progress=False, workers=1)
        assert info.value.path == str(out)
        assert not (out / "work" / "sim-b").exists() and proc.poll() is None  # it touched nothing
        # SIGKILL the main process alone: its pool worker must not live on
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        deadline = time.monotonic() + 60
        while not _gone(workers[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(workers[0]), "the pool worker outlived the build's main process"
        with exclusive_lock(out / ".build.lock", wait=False):  # nobody holds the build any more
            pass
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)


def _out_of_memory(folder: str, experiment_id: str, stage: str) -> None:
    """A stage hook that records each call and then runs out of memory."""
    calls = len(list(Path(folder).glob(f"{experiment_id}-*.call")))
    (Path(folder) / f"{experiment_id}-{calls}.call").write_text(stage)
    raise MemoryError


def test_memory_error_is_one_input_error_and_never_retried(tmp_path: Path) -> None:
    """Issue #16: a MemoryError in a worker was retried (execution.retries) times."""
    from cryoset.errors import InputError

    config = {**CONFIG, "experiments": CONFIG["experiments"][:1], "execution": {"workers": 1, "retries": 2}}
    with pytest.raises(InputError, match=r"experiment sim-a: ran out of memory \(not retried\)"):
        run_build(config, tmp_path / "b", progress=False,
                  before_stage=functools.partial(_out_of_memory, str(tmp_path)))
    assert [p.name for p in tmp_path.glob("*.call")] == ["sim-a-0.call"]
