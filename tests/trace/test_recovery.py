"""Tracing real models: true Cα positions of deposited structures plus seeded, realistic noise.

Noise: every coordinate +N(0, 0.3 Å) (0.52 Å 3-D RMS, about the error of peaks picked on a
1 Å grid), amino-acid probabilities ``softmax(2.5 · onehot + N(0, 1))`` (top-1 accuracy
≈ 70 %), and 10 % extra false-positive candidates 2–6 Å from true Cα; the HMM runs with
the paper's defaults (Λ = 10). The customised Viterbi is a heuristic that can lose the
register over a stretch on some noise draws (docs/trace.md), so each structure is traced
with three seeds: the median must put ≥ 90 % of residues on the candidate of the right
residue, and so must the mean over all structures and seeds.
"""

from __future__ import annotations

import numpy as np
import pytest

from cryoset.trace.candidates import Candidates
from cryoset.trace.synthetic import noisy_aa_probabilities, perturb_candidates
from cryoset.trace.tracer import trace_backbone

from .conftest import TrueModel, load_true_model

STRUCTURES = [
    ("maps", "emd_5168", "3MFP.pdb"),
    ("structures", "1J6Z.pdb"),
    ("structures", "adk_closed.pdb"),
    ("structures", "adk_open.pdb"),
    ("structures", "1hvr.pdb"),
    ("structures", "4E43.pdb"),
    ("structures", "5a7u.pdb"),
]


def register_fraction(
    model: TrueModel,
    seed: int,
    position_sd_a: float = 0.3,
    scale_lambda: float = 10.0,
    bidirectional: bool = True,
) -> float:
    """Fraction of residues traced onto the candidate of the right residue."""
    rng = np.random.default_rng(seed)
    probs = noisy_aa_probabilities(model.aa_index, rng, signal=2.5)
    pos, prob, truth = perturb_candidates(
        model.positions_a, probs, rng, position_sd_a=position_sd_a, false_positive_fraction=0.1
    )
    cands = Candidates(pos, np.ones(len(pos)), prob)
    seqs = model.sequences()
    _, paths = trace_backbone(
        cands, seqs, scale_lambda=scale_lambda, bidirectional=bidirectional
    )
    # Residue r of the input is (chain sequence, index in chain); chains with identical
    # sequences are interchangeable, so the key is the sequence, not the chain id.
    chain_ids = list(dict.fromkeys(model.chains.tolist()))
    key = []
    for cid, seq in zip(chain_ids, seqs, strict=True):
        key += [(seq, k) for k in range(int(np.sum(model.chains == cid)))]
    right = 0
    for seq, path in zip(seqs, paths, strict=True):
        for t, state in enumerate(path.states):
            right += truth[state] >= 0 and key[truth[state]] == (seq, t)
    return right / len(key)


STRUCTURES.append(("structures", "3KPR.cif.gz"))  # 10 chains, 1,652 residues, aligned in turn
SEEDS = (0, 1, 2)


@pytest.mark.slow
@pytest.mark.shared_data
def test_trace_recovers_real_models() -> None:
    results = {}
    for parts in STRUCTURES:
        model = load_true_model(*parts)
        results[parts[-1]] = [register_fraction(model, seed=s) for s in SEEDS]
    for name, fractions in results.items():
        assert np.median(fractions) >= 0.90, (name, fractions)
    assert np.mean(list(results.values())) >= 0.90, results


@pytest.mark.shared_data
def test_register_falls_with_position_noise(actin_3mfp: TrueModel) -> None:
    """Position noise far beyond the transition width (σ = 0.36 Å at Λ = 10) breaks the trace."""
    assert register_fraction(actin_3mfp, seed=3, position_sd_a=0.1) >= 0.97
    assert register_fraction(actin_3mfp, seed=3, position_sd_a=0.8, scale_lambda=15.0) < 0.5


@pytest.mark.shared_data
def test_bidirectional_alignment_rescues_the_register() -> None:
    """1J6Z, seed 1: the forward-only Viterbi loses the register over most of the chain; the
    C-terminal run finds a path the forward model scores higher, and it is the right one."""
    model = load_true_model("structures", "1J6Z.pdb")
    assert register_fraction(model, seed=1, bidirectional=False) < 0.5
    assert register_fraction(model, seed=1) >= 0.95
