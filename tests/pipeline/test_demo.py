"""`cryoset demo --quick` end to end: every step runs and the numbers against the truth are sane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_demo(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run_cli("demo", "--out", tmp_path / "demo", "--quick")
    assert code == 0, err
    demo = tmp_path / "demo"
    report = (demo / "report.html").read_text()
    assert "Picking against the simulated truth" in report and "Dataset build" in report
    metrics = json.loads((demo / "demo.json").read_text())["metrics"]
    assert metrics["recall"] >= 0.6
    assert metrics["precision"] >= 0.8  # carbon/contamination picks rejected with the simulator's masks
    assert sorted(p.name for p in (demo / "sim" / "masks").iterdir()) == ["micrograph_0000.png", "micrograph_0001.png"]
    assert metrics["median CTF defocus error (%)"] < 2.0
    # extraction phase-flips and says so; the classification output keeps saying so
    assert metrics["phase-flipped particles (|CTF| in classify2d)"] == metrics["extracted particles"] > 0
    from cryoset.io.star import read_star

    assert read_star(demo / "classes" / "particles.star")["optics"]["rlnCtfDataArePhaseFlipped"].tolist() == [1]
    assert metrics["traced residues matched (%)"] >= 90.0
    assert (demo / "provenance.json").exists()
    for png in ("figures/micrograph_0000_picks.png", "classes/class_averages.png"):
        assert (demo / png).stat().st_size > 1000
