"""The build records the seconds of every stage (markers, summary) and its report shows them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryoset.pipeline.build import marker_path, run_build
from cryoset.pipeline.stages import STAGES

CONFIG: dict[str, Any] = {
    "name": "timings",
    "experiments": [{"id": "sim-t", "simulated": {"seed": 3, "protein_length": 80, "micrographs": 1,
                                                  "size_px": 320, "particles_per_micrograph": 10}}],
    "ctf": {"tile_px": 128, "max_resolution_a": 6.0},
    "extract": {"pixel_size_out_a": 3.0},
    "classify": {"n_classes": 2, "n_iter": 2, "psi_step_deg": 30, "offset_range_px": 2},
    "execution": {"workers": 1, "retries": 0},
}


def test_stage_seconds_in_markers_summary_and_report(tmp_path: Path) -> None:
    first = run_build(CONFIG, tmp_path, progress=False, workers=1).experiments["sim-t"]
    timings = first["stage_seconds"]
    assert list(timings) == list(STAGES)
    work = tmp_path / "work" / "sim-t"
    for stage in STAGES:
        t = timings[stage]
        assert t["ran"] is True and t["wall_s"] >= 0 and t["cpu_s"] >= 0
        marker = json.loads(marker_path(work, stage).read_text())
        assert marker["seconds"] == {"wall_s": t["wall_s"], "cpu_s": t["cpu_s"]}
    html = (work / "report" / "report.html").read_text()
    assert "Time per stage" in html
    table = html[html.index("Time per stage"):]
    for stage in STAGES[:-1]:  # the report cannot time itself
        assert f">{stage}<" in table
    assert ">total<" in table
    # a resumed run skips every stage and reports the seconds its markers recorded
    again = run_build(CONFIG, tmp_path, progress=False, workers=1).experiments["sim-t"]
    assert again["executed"] == []
    assert {s: {k: v for k, v in t.items() if k != "ran"} for s, t in again["stage_seconds"].items()} == {
        s: {k: v for k, v in t.items() if k != "ran"} for s, t in timings.items()}
    assert all(t["ran"] is False for t in again["stage_seconds"].values())
