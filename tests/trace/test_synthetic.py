"""Synthetic network outputs: the noise the tracer is tested with is what it claims to be."""

from __future__ import annotations

import numpy as np

from cryoset.trace.synthetic import noisy_aa_probabilities, perturb_candidates


def test_noisy_probabilities_accuracy(rng: np.random.Generator) -> None:
    truth = rng.integers(0, 20, 20000)
    for signal, expected in ((3.0, 0.84), (2.0, 0.55), (1.0, 0.22)):
        p = noisy_aa_probabilities(truth, rng, signal=signal)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
        assert abs(np.mean(p.argmax(axis=1) == truth) - expected) < 0.03
    unknown = noisy_aa_probabilities(np.full(20000, 20), rng, signal=3.0)
    assert abs(unknown.max(axis=1).mean() - noisy_aa_probabilities(truth, rng, signal=0.0).max(axis=1).mean()) < 0.01


def test_perturb_candidates_bookkeeping(rng: np.random.Generator) -> None:
    pos = rng.uniform(0, 100, size=(2000, 3))
    probs = noisy_aa_probabilities(rng.integers(0, 20, 2000), rng)
    out_pos, out_prob, truth = perturb_candidates(
        pos, probs, rng, position_sd_a=0.5, missing_fraction=0.1, false_positive_fraction=0.2
    )
    real = truth >= 0
    assert abs(real.sum() - 1800) < 60 and (~real).sum() == 400
    assert len(set(truth[real].tolist())) == real.sum()
    err = out_pos[real] - pos[truth[real]]
    assert abs(err.std() - 0.5) < 0.02 and abs(err.mean()) < 0.02
    np.testing.assert_array_equal(out_prob[real], probs[truth[real]])
    # False positives lie 2–6 Å from some true Cα.
    d = np.linalg.norm(out_pos[~real][:, None] - pos[None], axis=2).min(axis=1)
    assert d.max() <= 6.0 + 1e-9
