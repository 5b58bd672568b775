"""Probe tasks and experiment-level splits (issue #19)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoset.learn.probe_tasks import (
    PAPER_TASKS,
    ProbeSettings,
    experiment_split,
    parse_task,
    particle_split,
    run_probe_tasks,
    task_labels,
)

FAST = ProbeSettings(heldout_fraction=0.25, id_eval_fraction=0.2, seed=3, lrs=(0.01, 0.1), epochs=150)


def _table(n_exp: int = 8, per: int = 60, d: int = 6, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Features carry a planted linear signal: the class is the sign pattern of two directions."""
    rng = np.random.default_rng(seed)
    rows = []
    feats = []
    sym = ["C1", "C2", "C3", "D2"]
    for e in range(n_exp):
        for _ in range(per):
            k = int(rng.integers(4))
            f = rng.normal(size=d) * 0.1
            f[0] = (1 if k & 1 else -1) * (1 + rng.random())
            f[1] = (1 if k & 2 else -1) * (1 + rng.random())
            rows.append({"experiment_id": f"exp{e}", "symmetry": sym[k], "voltage_kv": 200.0 + 100 * (e % 2),
                         "pixel_size_a": 1.0 + 0.2 * e, "image_size_px": 64, "mass": float(f[0])})
            feats.append(f)
    return pd.DataFrame(rows), np.asarray(feats, np.float32)


def test_no_experiment_in_both_splits_and_parts_disjoint() -> None:
    frame, _ = _table()
    s = particle_split(frame["experiment_id"].to_numpy(), 0.25, 0.2, seed=5)
    exps = frame["experiment_id"].to_numpy()
    assert set(exps[s.ood_eval]).isdisjoint(set(exps[s.train]) | set(exps[s.id_eval]))
    assert set(exps[s.ood_eval]) == set(s.heldout_experiments) and len(s.heldout_experiments) == 2
    assert set(exps[s.id_eval]) <= set(s.train_experiments)
    assert not set(s.train) & set(s.id_eval) and not set(s.train) & set(s.ood_eval)
    assert len(s.train) + len(s.id_eval) + len(s.ood_eval) == len(frame)
    # seeded: the same seed gives the same split, another seed another one
    s2 = particle_split(exps, 0.25, 0.2, seed=5)
    assert np.array_equal(s.train, s2.train) and s.heldout_experiments == s2.heldout_experiments
    assert any(experiment_split(exps.tolist(), 0.25, k)[1] != list(s.heldout_experiments) for k in range(6, 12))


def test_planted_linear_signal_is_recovered_exactly() -> None:
    frame, x = _table()
    results, split, ro = run_probe_tasks(frame, x, [PAPER_TASKS["symmetry"], parse_task("mass")],
                                         settings=FAST, regress_out=True)
    by = {(r.task, r.variant): r for r in results}
    sym = by[("symmetry", "raw")]
    assert sym.id_balanced_accuracy == 1.0 and sym.ood_balanced_accuracy == 1.0
    assert sym.id_confusion.sum() == len(split.id_eval) and np.trace(sym.ood_confusion) == len(split.ood_eval)
    assert sym.lr in FAST.lrs
    # a numeric column becomes quantile bins from the probe-train rows; mass = feature 0 exactly
    mass = by[("mass", "raw")]
    assert mass.info["kind"] == "quantile" and len(mass.info["edges"]) == 3
    assert mass.id_balanced_accuracy > 0.9
    # voltage varies across training experiments and is regressed out; the signal is orthogonal to it
    assert "voltage_kv" in ro["columns"]
    assert by[("symmetry", "regressed_out")].ood_balanced_accuracy > 0.95


def test_pixel_size_label_is_scaled_to_the_encoder_input() -> None:
    frame, _ = _table()
    rows = np.arange(len(frame))
    labels, valid, info = task_labels(PAPER_TASKS["pixel_size"], frame, rows, input_size=32)  # type: ignore[misc]
    assert valid.all() and "image_size_px / 32" in info["label"]
    eff = frame["pixel_size_a"].to_numpy() * 64 / 32
    assert np.all(np.diff(labels[np.argsort(eff, kind="stable")]) >= 0)  # bins follow the scaled value
    assert task_labels(PAPER_TASKS["pixel_size"], frame, rows, input_size=None) is None
    assert task_labels(PAPER_TASKS["emd_resolution"], frame, rows) is None  # column absent


def test_parse_task_rejects_junk() -> None:
    assert parse_task({"column": "x", "kind": "categorical"}).kind == "categorical"
    with pytest.raises(ValueError):
        parse_task({"column": "x", "colour": 1})
    with pytest.raises(ValueError):
        parse_task({"column": "x", "bins": 1})
