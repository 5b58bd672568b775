"""Benchmark: our blob/template pickers vs RELION 3.1 ``relion_autopick --LoG`` on the real
EMPIAR-10028 PNGs (and on synthetic scenes with complete truth).

Protocol: each picker's threshold is chosen for best pooled F1 on the dev images
(061, 062, 063) and reported on the held-out images (064, 065, 311, 312); everything else
is fixed in advance from the 300 Å diameter. Run: ``.venv/bin/python benchmarks/bench_picking.py``.

Command vs command (``--commands``; also part of the default run): ``cryoset pick`` against
``relion_autopick --LoG`` as whole processes, MRC files in, coordinate STAR files out, on 3 real
micrographs (061–063) and on 30 (the seven real images under the eight rotations/flips of the
square, first 30; identical files for both). Protocol in :mod:`_commands` (1 thread each, one
warm-up run each, fresh processes, best/median of 3, peak RSS from ``/usr/bin/time -v``).
Library column: our picker in-process on the in-memory images (warm); RELION has no library,
so its column is the command's marginal cost per micrograph, ``(t30 − t3) / 27`` (ours is given
the same way). Other options: ``--simulated-only``, ``--no-topaz``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoset.io.coords import read_coords
from cryoset.io.images import read_image
from cryoset.io.mrc import write_map
from cryoset.picking.blob import BlobSettings, pick_blobs
from cryoset.picking.evaluate import evaluate_picks
from cryoset.testing import shared_data_root

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _commands import PROTOCOL, load_average, time_command

DEV = ("061_10028", "062_10028", "063_10028")
HELD_OUT = ("064_10028", "065_10028", "311_10028", "312_10028")
PIXEL_A = 5.36
DIAMETER_A = 300.0


def _scores(picks: pd.DataFrame, truth: pd.DataFrame, names: tuple[str, ...], thr: float) -> dict[str, float]:
    p = picks[picks["micrograph"].isin(names) & (picks["score"] >= thr)]
    t = truth[truth["micrograph"].isin(names)]
    _, pooled = evaluate_picks(p, t, diameter_px=56.0)
    return {"threshold": thr, "precision": pooled.precision, "recall": pooled.recall, "f1": pooled.f1}


def _dev_then_held_out(picks: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Any]:
    cands = np.unique(np.quantile(picks["score"].to_numpy(), np.linspace(0, 0.95, 96)))
    best = max(cands, key=lambda c: _scores(picks, truth, DEV, float(c))["f1"])
    return {"dev": _scores(picks, truth, DEV, float(best)),
            "held_out": _scores(picks, truth, HELD_OUT, float(best))}


def _ours(root: Path) -> tuple[pd.DataFrame, float]:
    frames = []
    t0 = time.perf_counter()
    for name in DEV + HELD_OUT:
        img = read_image(root / "images" / f"{name}.png").data
        frames.append(pick_blobs(img, PIXEL_A, BlobSettings(DIAMETER_A, threshold=0.0), micrograph=name))
    return pd.concat(frames, ignore_index=True), (time.perf_counter() - t0) / len(frames)


def _relion(root: Path, work: Path) -> tuple[pd.DataFrame, float] | None:
    exe = shutil.which("relion_autopick")
    if exe is None:
        return None
    (work / "mrc").mkdir(parents=True, exist_ok=True)
    for name in DEV + HELD_OUT:
        write_map(work / "mrc" / f"{name}.mrc", read_image(root / "images" / f"{name}.png").data[None], PIXEL_A)
    t0 = time.perf_counter()
    # a very low threshold adjustment keeps every candidate; thresholds are applied afterwards
    cmd = [exe, "--i", "mrc/*.mrc", "--odir", "out/", "--pickname", "autopick", "--angpix", str(PIXEL_A),
           "--LoG", "--LoG_diam_min", "250", "--LoG_diam_max", "350", "--LoG_adjust_threshold", "-1",
           "--LoG_upper_threshold", "999"]
    subprocess.run(cmd, cwd=work, check=True, capture_output=True)
    per_mic = (time.perf_counter() - t0) / len(DEV + HELD_OUT)
    frames = []
    for name in DEV + HELD_OUT:
        df = read_coords(work / "out" / "mrc" / f"{name}_autopick.star")
        df["micrograph"] = name
        frames.append(df)
    return pd.concat(frames, ignore_index=True), per_mic


_STANDIN = {
    "torchvision/__init__.py": "from . import transforms  # noqa: F401\n",
    "torchvision/transforms/__init__.py": "from . import functional  # noqa: F401\n",
    "torchvision/transforms/functional.py": (
        "def _unavailable(*args, **kwargs):\n"
        "    raise NotImplementedError('torchvision stand-in: training only')\n"
        "rotate = hflip = vflip = _unavailable\n"),
}


def _topaz(root: Path, work: Path) -> tuple[pd.DataFrame, float] | str:
    """Topaz 0.3.20 pretrained resnet16_u64 at 5.36 Å/px on the real PNGs (see :func:`_topaz_on`)."""
    images = {name: read_image(root / "images" / f"{name}.png").data for name in DEV + HELD_OUT}
    return _topaz_on(work, images, PIXEL_A, radius_px=28)


def _topaz_on(work: Path, images: dict[str, np.ndarray], pixel_a: float, *,
              radius_px: int) -> tuple[pd.DataFrame, float] | str:
    """Topaz 0.3.20 pretrained resnet16_u64 on ``images``; a torchvision stand-in on its PYTHONPATH.

    Topaz imports torchvision at start-up but uses it only for training augmentation; PyPI's
    torchvision does not load beside the CPU torch wheel here, so the Topaz process gets a
    three-function stand-in package (never used by extraction).
    """
    exe = Path(sys.executable).with_name("topaz")
    if not exe.exists():
        return "topaz is not installed (pip install --no-deps topaz-em; scikit-learn future tqdm)"
    for rel, text in _STANDIN.items():
        f = work / "standin" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    (work / "mrc").mkdir(parents=True, exist_ok=True)
    for name, img in images.items():
        write_map(work / "mrc" / f"{name}.mrc", img[None], pixel_a)
    env = {**os.environ, "PYTHONPATH": str(work / "standin")}
    mics = [f"mrc/{n}.mrc" for n in images]
    t0 = time.perf_counter()
    r1 = subprocess.run([str(exe), "preprocess", "-s", "1", "-o", "proc/", *mics], cwd=work, env=env,
                        capture_output=True, text=True)
    if r1.returncode != 0:
        return "topaz preprocess failed: " + r1.stderr[-300:]
    r2 = subprocess.run([str(exe), "extract", "-m", "resnet16_u64", "-r", str(radius_px), "-t", "-6",
                         "-o", "picks.txt", *[f"proc/{n}.mrc" for n in images]],
                        cwd=work, env=env, capture_output=True, text=True)
    if r2.returncode != 0:
        return "topaz extract failed: " + r2.stderr[-300:]
    per_mic = (time.perf_counter() - t0) / len(images)
    df = pd.read_csv(work / "picks.txt", sep="\t")
    picks = pd.DataFrame({"micrograph": df["image_name"].astype(str), "x_px": df["x_coord"].astype(float),
                          "y_px": df["y_coord"].astype(float), "score": df["score"].astype(float)})
    return picks, per_mic


def _simulated() -> dict[str, Any]:
    """Ours vs RELION LoG vs Topaz on synthetic scenes (tests/picking/scene.py) with complete truth.

    Scenes 0-1 choose each picker's threshold, scenes 2-3 report it (as on the real set).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "picking"))
    from scene import DIAMETER_PX, make_scene  # type: ignore[import-not-found]
    from scene import PIXEL_A as SIM_PX

    names = [f"sim_{k}" for k in range(4)]
    dev, held = tuple(names[:2]), tuple(names[2:])
    scenes = [make_scene(k, n=40, size=768, snr=0.004, name=names[k]) for k in range(4)]
    truth = pd.concat([t for _, t in scenes], ignore_index=True)

    def split(picks: pd.DataFrame) -> dict[str, Any]:
        def at(names_: tuple[str, ...], thr: float) -> dict[str, float]:
            p = picks[picks["micrograph"].isin(names_) & (picks["score"] >= thr)]
            _, pooled = evaluate_picks(p, truth[truth["micrograph"].isin(names_)], diameter_px=DIAMETER_PX)
            return {"threshold": thr, "precision": pooled.precision, "recall": pooled.recall,
                    "f1": pooled.f1}
        cands = np.unique(np.quantile(picks["score"].to_numpy(), np.linspace(0, 0.95, 96)))
        best = float(max(cands, key=lambda c: at(dev, float(c))["f1"]))
        return {"dev": at(dev, best), "held_out": at(held, best)}

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    ours = pd.concat([pick_blobs(img, SIM_PX, BlobSettings(DIAMETER_PX * SIM_PX, threshold=0.0),
                                 micrograph=names[k]) for k, (img, _) in enumerate(scenes)],
                     ignore_index=True)
    sec = (time.perf_counter() - t0) / len(scenes)
    _, default = evaluate_picks(ours[ours["score"] >= 3.5], truth, diameter_px=DIAMETER_PX)
    out["cryoset_blob"] = {**split(ours), "default_threshold_all": default.as_dict(),
                           "seconds_per_micrograph": sec}
    exe = shutil.which("relion_autopick")
    if exe is not None:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "mrc").mkdir()
            for k, (img, _) in enumerate(scenes):
                write_map(work / "mrc" / f"{names[k]}.mrc", img[None], SIM_PX)
            d = DIAMETER_PX * SIM_PX
            t0 = time.perf_counter()
            subprocess.run([exe, "--i", "mrc/*.mrc", "--odir", "out/", "--pickname", "autopick",
                            "--angpix", str(SIM_PX), "--LoG", "--LoG_diam_min", str(0.8 * d),
                            "--LoG_diam_max", str(1.2 * d), "--LoG_adjust_threshold", "-1",
                            "--LoG_upper_threshold", "999"], cwd=work, check=True, capture_output=True)
            sec = (time.perf_counter() - t0) / len(scenes)
            rel = pd.concat([read_coords(work / "out" / "mrc" / f"{n}_autopick.star").assign(micrograph=n)
                             for n in names], ignore_index=True)
        out["relion_log"] = {**split(rel), "seconds_per_micrograph": sec}
    with tempfile.TemporaryDirectory() as tmp:
        top = _topaz_on(Path(tmp), {names[k]: img for k, (img, _) in enumerate(scenes)}, SIM_PX,
                        radius_px=round(DIAMETER_PX / 2))
    if isinstance(top, str):
        out["topaz"] = top
    else:
        out["topaz_resnet16"] = {**split(top[0]), "seconds_per_micrograph": top[1]}
    return out


def _tiled_micrographs(root: Path, n: int) -> list[tuple[str, np.ndarray]]:
    """``n`` micrographs: the seven real images, then their rotations/flips (same size and content)."""
    base = [(name, read_image(root / "images" / f"{name}.png").data.astype(np.float32))
            for name in DEV + HELD_OUT]
    out = []
    for k in range(8):
        for name, img in base:
            v = np.rot90(img, k % 4)
            out.append((f"{name}_v{k}", np.ascontiguousarray(v[:, ::-1] if k >= 4 else v)))
    return out[:n]


def _commands(root: Path, sizes: tuple[int, ...] = (3, 30), repeats: int = 3) -> dict[str, Any]:
    """``cryoset pick`` vs ``relion_autopick --LoG`` as commands, and the library columns."""
    from cryoset.picking.blob import BlobPicker

    relion = shutil.which("relion_autopick")
    cryoset = Path(sys.executable).with_name("cryoset")
    out: dict[str, Any] = {"protocol": PROTOCOL, "relion": relion or "relion_autopick not found (apt-get install relion)"}
    for n in sizes:
        mics = _tiled_micrographs(root, n) if n > 3 else [
            (name, read_image(root / "images" / f"{name}.png").data.astype(np.float32)) for name in DEV]
        row: dict[str, Any] = {"micrographs": n, "load_average_before": load_average()}
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "mrc").mkdir()
            for name, img in mics:
                write_map(work / "mrc" / f"{name}.mrc", img[None], PIXEL_A)
            files = sorted(str(p.relative_to(work)) for p in (work / "mrc").glob("*.mrc"))

            def reset(d: Path = work) -> None:
                for sub in ("ours", "out"):
                    shutil.rmtree(d / sub, ignore_errors=True)

            row["cryoset_pick"] = time_command(
                [str(cryoset), "pick", *files, "--diameter-a", str(DIAMETER_A), "--out", "ours"], work,
                reset=reset, repeats=repeats)
            row["cryoset_pick"]["picks"] = sum(
                len(read_coords(p)) for p in (work / "ours").glob("*.star"))
            if relion is not None:
                row["relion_autopick_log"] = time_command(
                    [relion, "--i", "mrc/*.mrc", "--odir", "out/", "--pickname", "autopick", "--angpix",
                     str(PIXEL_A), "--LoG", "--LoG_diam_min", "250", "--LoG_diam_max", "350"], work,
                    reset=reset, repeats=repeats)
                row["relion_autopick_log"]["picks"] = sum(
                    len(read_coords(p)) for p in (work / "out" / "mrc").glob("*_autopick.star"))
                row["command_ratio_relion_over_ours"] = (row["relion_autopick_log"]["best_s"]
                                                         / row["cryoset_pick"]["best_s"])
        picker = BlobPicker(BlobSettings(DIAMETER_A))
        picker.pick(mics[0][1], PIXEL_A)  # warm
        t0 = time.perf_counter()
        for name, img in mics:
            picker.pick(img, PIXEL_A, micrograph=name)
        row["cryoset_library_s_per_micrograph"] = (time.perf_counter() - t0) / n
        out[f"{n}_micrographs"] = row
    if len(sizes) == 2:
        a, b = (out[f"{n}_micrographs"] for n in sizes)
        span = sizes[1] - sizes[0]
        out["marginal_s_per_micrograph"] = {
            key: (b[key]["best_s"] - a[key]["best_s"]) / span
            for key in ("cryoset_pick", "relion_autopick_log") if key in a and key in b}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and return the results (``--simulated-only`` skips the real set)."""
    args = sys.argv[1:] if argv is None else argv
    if "--simulated-only" in args:
        sim = _simulated()
        print(json.dumps(sim, indent=2, default=float))
        return {"simulated": sim}
    root = shared_data_root() / "micrographs" / "empiar_10028"
    if "--commands" in args:
        com = _commands(root)
        print(json.dumps(com, indent=2, default=float))
        return {"commands": com}
    truth = pd.concat([read_coords(root / "coords" / f"{n}.csv").assign(micrograph=n)
                       for n in DEV + HELD_OUT], ignore_index=True)
    result: dict[str, Any] = {}
    picks, sec = _ours(root)
    result["cryoset_blob"] = {**_dev_then_held_out(picks, truth), "seconds_per_micrograph": sec,
                              "default_threshold_3.5_held_out": _scores(picks, truth, HELD_OUT, 3.5)}
    with tempfile.TemporaryDirectory() as tmp:
        rel = _relion(root, Path(tmp))
    if rel is not None:
        result["relion_log"] = {**_dev_then_held_out(rel[0], truth), "seconds_per_micrograph": rel[1]}
        ratio = result["cryoset_blob"]["held_out"]["f1"] / result["relion_log"]["held_out"]["f1"]
        result["f1_ratio_ours_over_relion_held_out"] = ratio
    if "--no-topaz" in args:
        result["topaz"] = "skipped (--no-topaz)"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            top = _topaz(root, Path(tmp))
        if isinstance(top, str):
            result["topaz"] = top
        else:
            result["topaz_resnet16"] = {**_dev_then_held_out(top[0], truth), "seconds_per_micrograph": top[1]}
    result["commands"] = _commands(root)
    result["simulated"] = _simulated()
    print(json.dumps(result, indent=2, default=float))
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
