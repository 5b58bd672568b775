"""Benchmark: ``cryoset.particles.extract`` vs ``relion_preprocess --extract`` on the same picks
(EMPIAR-10028 expert picks on the seven real micrographs, box 72, normalise, invert).

Run: ``.venv/bin/python benchmarks/bench_extract.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cryoset.io.coords import read_coords, write_coords
from cryoset.io.images import read_image
from cryoset.io.mrc import read_stack, write_map, write_stack
from cryoset.particles.extract import extract_particles
from cryoset.testing import shared_data_root

NAMES = ("061_10028", "062_10028", "063_10028", "064_10028", "065_10028", "311_10028", "312_10028")
PIXEL_A = 5.36
BOX = 72


def main() -> dict[str, Any]:
    """Time both extractions; return seconds, particle counts and agreement."""
    root = shared_data_root() / "micrographs" / "empiar_10028"
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "mrc").mkdir()
        (work / "coords" / "mrc").mkdir(parents=True)
        picks = {}
        for n in NAMES:
            img = read_image(root / "images" / f"{n}.png").data
            write_map(work / "mrc" / f"{n}.mrc", img[None], PIXEL_A)
            p = read_coords(root / "coords" / f"{n}.csv").assign(micrograph=f"{n}.mrc")
            picks[n] = p
            write_coords(work / "coords" / "mrc" / f"{n}.star", p)
        # ours timed like RELION's run: read each MRC micrograph, extract, write each stack
        t0 = time.perf_counter()
        ours = {}
        kernel = 0.0
        for n in NAMES:
            img = read_image(work / "mrc" / f"{n}.mrc").data
            t1 = time.perf_counter()
            ours[n] = extract_particles(img, picks[n], BOX, PIXEL_A, invert=True, bg_radius_px=27)
            kernel += time.perf_counter() - t1
            write_stack(work / "ours" / f"{n}.mrcs", ours[n].stack, ours[n].pixel_size_a)
        result["cryoset_seconds"] = time.perf_counter() - t0
        result["cryoset_extract_kernel_seconds"] = kernel
        result["cryoset_particles"] = sum(len(r.stack) for r in ours.values())
        exe = shutil.which("relion_preprocess")
        if exe is not None:
            lines = ["data_optics", "loop_", "_rlnOpticsGroupName #1", "_rlnOpticsGroup #2",
                     "_rlnMicrographPixelSize #3", "_rlnVoltage #4", "_rlnSphericalAberration #5",
                     "_rlnAmplitudeContrast #6", f"opticsGroup1 1 {PIXEL_A} 300 2.7 0.1", "",
                     "data_micrographs", "loop_", "_rlnMicrographName #1", "_rlnOpticsGroup #2"]
            lines += [f"mrc/{n}.mrc 1" for n in NAMES]
            (work / "mics.star").write_text("\n".join(lines) + "\n")
            t0 = time.perf_counter()
            r = subprocess.run([exe, "--i", "mics.star", "--coord_dir", "coords", "--coord_suffix", ".star",
                                "--part_dir", "Particles", "--part_star", "parts.star", "--extract",
                                "--extract_size", str(BOX), "--norm", "--bg_radius", "27",
                                "--invert_contrast"],
                               cwd=work, capture_output=True, text=True)
            result["relion_seconds"] = time.perf_counter() - t0
            if r.returncode != 0:
                result["relion_error"] = r.stderr[-500:]
            else:
                theirs = read_stack(work / "Particles" / "mrc" / f"{NAMES[0]}.mrcs").data[:]
                mine = ours[NAMES[0]].stack
                result["relion_particles_first_micrograph"] = len(theirs)
                result["cryoset_particles_first_micrograph"] = len(mine)
                if len(theirs) == len(mine):
                    result["correlation_with_relion"] = float(np.corrcoef(theirs.ravel(), mine.ravel())[0, 1])
                result["speed_ratio_relion_over_ours"] = result["relion_seconds"] / result["cryoset_seconds"]
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
