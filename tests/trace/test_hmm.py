"""The HMM: emissions, transitions, and the customised (each state at most once) Viterbi."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from cryoset.trace.hmm import (
    CA_CA_MEAN_A,
    align_chain,
    align_chains,
    build_transitions,
    emission_log_probabilities,
    path_log_score,
    spatial_order,
    viterbi_unique,
)
from cryoset.trace.residues import (
    AMINO_ACIDS,
    ONE_LETTER,
    UNKNOWN_INDEX,
    background_frequencies,
    sequence_to_indices,
    three_to_index,
)


def dense_path_log_score(path, log_emit, dense, seq) -> float:  # type: ignore[no-untyped-def]
    first = log_emit[:, seq[0]]
    score = first[path[0]] - np.logaddexp.reduce(first) + log_emit[path[0], seq[0]]
    for t in range(1, len(path)):
        score += dense[path[t - 1], path[t]] + log_emit[path[t], seq[t]]
    return float(score)


def test_residue_tables() -> None:
    b = background_frequencies()
    assert b.shape == (20,) and math.isclose(b.sum(), 1.0)
    assert b.argmax() == AMINO_ACIDS.index("LEU") and b.argmin() == AMINO_ACIDS.index("TRP")
    assert sequence_to_indices("ACW x*").tolist() == [0, 4, 17, UNKNOWN_INDEX]
    assert all(three_to_index(n) == k for k, n in enumerate(AMINO_ACIDS))
    assert three_to_index("MSE") == AMINO_ACIDS.index("MET") and three_to_index("HOH") == 20
    assert [AMINO_ACIDS[k][0] for k in sequence_to_indices("ARCQEGHILMFPSTWYV")] == list(
        "AACGGGHILMPPSTTTV"
    )
    assert ONE_LETTER[AMINO_ACIDS.index("TRP")] == "W"
    with pytest.raises(ValueError, match="not an amino-acid letter"):
        sequence_to_indices("AC1")


def test_emission_is_normalised_geometric_mean(rng: np.random.Generator) -> None:
    p = rng.dirichlet(np.ones(20), size=7)
    b = background_frequencies()
    log_e = emission_log_probabilities(p, b)
    assert log_e.shape == (7, 21)
    np.testing.assert_allclose(np.exp(log_e[:, :20]).sum(axis=1), 1.0, rtol=1e-12)
    expected = np.sqrt(p[3, 5] * b[5]) / np.sum(np.sqrt(p[3] * b))
    assert math.isclose(math.exp(log_e[3, 5]), expected, rel_tol=1e-12)
    np.testing.assert_allclose(log_e[:, 20], math.log(1 / 20))
    # A uniform prediction emits in proportion to sqrt(background).
    flat = np.exp(emission_log_probabilities(np.full((1, 20), 0.05), b)[0, :20])
    np.testing.assert_allclose(flat, np.sqrt(b) / np.sqrt(b).sum(), rtol=1e-12)


def test_transitions_are_row_normalised_floored_gaussian(rng: np.random.Generator) -> None:
    pos = rng.uniform(0, 12, size=(40, 3))
    lam, penalty = 10.0, 12.0
    graph = build_transitions(pos, scale_lambda=lam, jump_penalty=penalty)
    dense = graph.to_dense()
    np.testing.assert_allclose(np.exp(dense).sum(axis=1), 1.0, rtol=1e-9)
    sigma = 0.036 * lam
    d = np.linalg.norm(pos[:, None] - pos[None], axis=2)
    density = np.maximum(np.exp(-0.5 * ((d - CA_CA_MEAN_A) / sigma) ** 2), math.exp(-penalty))
    np.fill_diagonal(density, 0.0)
    expected = density / density.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.exp(dense), expected, rtol=1e-9, atol=1e-300)
    lo, hi = graph.distance_range_a
    assert math.isclose(hi - CA_CA_MEAN_A, sigma * math.sqrt(2 * penalty))
    stored = {(int(s), j) for j in range(40) for s in graph.sources[graph.indptr[j] : graph.indptr[j + 1]]}
    assert stored == {(i, j) for i in range(40) for j in range(40) if i != j and lo <= d[i, j] <= hi}


def _zigzag_chain(n: int) -> np.ndarray:
    """Cα-like chain: consecutive points exactly 3.8047 Å apart, non-neighbours farther."""
    angle = math.radians(120.0)
    step = np.array([math.sin(angle / 2), math.cos(angle / 2), 0.0]) * CA_CA_MEAN_A
    pts = [np.zeros(3)]
    for k in range(1, n):
        s = step.copy()
        if k % 2:
            s[1] = -s[1]
        pts.append(pts[-1] + s)
    return np.asarray(pts)


def test_viterbi_matches_exhaustive_search(rng: np.random.Generator) -> None:
    """On a tiny problem the path is the best of all injective paths (brute force)."""
    pos = _zigzag_chain(6) + rng.normal(0, 0.15, size=(6, 3))
    seq = sequence_to_indices("MKVL")
    probs = np.full((6, 20), 0.02)
    for state, k in zip([1, 2, 3, 4], seq, strict=True):
        probs[state, k] = 0.6
    log_e = emission_log_probabilities(probs)
    graph = build_transitions(pos)
    dense = graph.to_dense()
    result = viterbi_unique(log_e, seq, graph)
    scores = {p: dense_path_log_score(p, log_e, dense, seq) for p in itertools.permutations(range(6), 4)}
    best = max(scores, key=scores.__getitem__)
    assert tuple(result.states.tolist()) == best == (1, 2, 3, 4)
    assert math.isclose(result.log_score, scores[best], rel_tol=1e-12)
    assert math.isclose(path_log_score(log_e, seq, graph, result.states), scores[best], rel_tol=1e-12)
    assert not result.jumps.any()


def test_each_state_used_at_most_once() -> None:
    """Two states 3.8 Å apart that both emit Ala: an unconstrained Viterbi would oscillate."""
    pos = _zigzag_chain(8)
    probs = np.full((8, 20), 0.01)
    probs[[0, 1], AMINO_ACIDS.index("ALA")] = 0.9
    seq = sequence_to_indices("AAAAAAAA")
    result = viterbi_unique(emission_log_probabilities(probs), seq, build_transitions(pos))
    assert sorted(result.states.tolist()) == list(range(8))
    # The path must still follow the chain (the only way to use 8 states with 3.8 Å steps).
    assert result.states.tolist() in (list(range(8)), list(range(7, -1, -1)))


def test_jump_over_a_missing_candidate() -> None:
    """A gap (one Cα missing) is crossed by the floor transition and flagged."""
    chain = _zigzag_chain(10)
    keep = [0, 1, 2, 3, 5, 6, 7, 8, 9]
    seq_full = sequence_to_indices("MKVLAEGWYR")
    seq = seq_full[keep]
    probs = np.full((9, 20), 0.01)
    probs[np.arange(9), seq] = 0.8
    result = viterbi_unique(emission_log_probabilities(probs), seq, build_transitions(chain[keep]))
    assert result.states.tolist() == list(range(9))
    assert result.jumps.tolist() == [False] * 4 + [True] + [False] * 4
    # The plain customised Viterbi (one path per state) loses the true prefix here: the
    # reversed segment 8→4 is locally better and has already used state 5.
    plain = viterbi_unique(
        emission_log_probabilities(probs), seq, build_transitions(chain[keep]), n_best=1
    )
    assert plain.states.tolist() != list(range(9)) and plain.log_score < result.log_score


def test_too_many_residues_and_bad_input() -> None:
    pos = _zigzag_chain(4)
    log_e = emission_log_probabilities(np.full((4, 20), 0.05))
    graph = build_transitions(pos)
    with pytest.raises(ValueError, match="only 4 available"):
        viterbi_unique(log_e, sequence_to_indices("AAAAA"), graph)
    with pytest.raises(ValueError, match="only 2 available"):
        viterbi_unique(log_e, sequence_to_indices("AAA"), graph, np.array([1, 1, 0, 0], bool))
    with pytest.raises(ValueError, match="shape"):
        emission_log_probabilities(np.ones((4, 19)))
    with pytest.raises(ValueError, match="empty"):
        viterbi_unique(log_e, np.zeros(0, np.int64), graph)


def test_chains_in_turn_use_disjoint_states(rng: np.random.Generator) -> None:
    """Two chains aligned in turn: disjoint states, each one threaded in register."""
    a = _zigzag_chain(12)
    b = _zigzag_chain(12) + np.array([0.0, 0.0, 20.0])
    pos = np.concatenate([a, b])
    seq_a, seq_b = sequence_to_indices("MKVLAEGWYRST"), sequence_to_indices("PQNDCHIFKLAG")
    probs = rng.dirichlet(np.ones(20), size=24) * 0.3
    probs[np.arange(12), seq_a] += 0.7
    probs[12 + np.arange(12), seq_b] += 0.7
    paths = align_chains(pos, probs, [seq_a, seq_b])
    assert paths[0].states.tolist() == list(range(12))
    assert paths[1].states.tolist() == list(range(12, 24))
    assert not set(paths[0].states.tolist()) & set(paths[1].states.tolist())


def test_bidirectional_keeps_the_better_direction(rng: np.random.Generator) -> None:
    """The reverse run is scored under the forward model and never makes the result worse."""
    pos = _zigzag_chain(30) + rng.normal(0, 0.3, size=(30, 3))
    pos = np.concatenate([pos, rng.uniform(-5, 60, size=(10, 3))])
    seq = rng.integers(0, 20, 30)
    probs = rng.dirichlet(np.ones(20), size=40)
    probs[np.arange(30), seq] += 0.3
    log_e = emission_log_probabilities(probs)
    graph = build_transitions(pos)
    fwd = viterbi_unique(log_e, seq, graph)
    both = align_chain(log_e, seq, graph)
    assert both.log_score >= fwd.log_score
    assert math.isclose(path_log_score(log_e, seq, graph, both.states), both.log_score, rel_tol=1e-12)
    assert len(set(both.states.tolist())) == 30


def test_result_does_not_depend_on_candidate_order(rng: np.random.Generator) -> None:
    """align_chains sorts states spatially inside; shuffling the input changes nothing."""
    pos = np.concatenate([_zigzag_chain(25), _zigzag_chain(25) + np.array([0.0, 0.0, 15.0])])
    pos = pos + rng.normal(0, 0.1, size=pos.shape)
    seqs = [rng.integers(0, 20, 25), rng.integers(0, 20, 25)]
    probs = rng.dirichlet(np.ones(20), size=50) * 0.5
    probs[np.arange(25), seqs[0]] += 0.5
    probs[25 + np.arange(25), seqs[1]] += 0.5
    ref = align_chains(pos, probs, seqs)
    perm = rng.permutation(50)
    shuffled = align_chains(pos[perm], probs[perm], seqs)
    for a, b in zip(ref, shuffled, strict=True):
        np.testing.assert_array_equal(perm[b.states], a.states)
        assert math.isclose(a.log_score, b.log_score, rel_tol=1e-9)
    assert ref[0].states.tolist() == list(range(25))
    order = spatial_order(pos)
    assert sorted(order.tolist()) == list(range(50))
