"""Benchmark: HMM backbone tracing, 5,000 Cα candidates × 4,000 residues.

Ours: sparse transitions + numba K-best customised Viterbi (``cryoset.trace.hmm``), one
forward pass (like the peer) and the default (forward + from the C-terminus).
Peer: a naive dense Viterbi (dense (n, n) log transition matrix, Python loop over steps and
states, numpy over predecessors, uniqueness checked by walking the backpointers of the best
predecessor), timed in the same run at small sizes and extrapolated as ``T · n²``.

Times are CPU seconds (``time.process_time``; the kernels are single-threaded, so this is
the wall time on an idle core; wall time is reported too). Data: 11 copies of the Cα of PDB 3MFP (369 residues each) side by side, the first 4,000
residues as one sequence, seeded noise (0.3 Å per coordinate, amino-acid signal 3) and
false-positive candidates up to 5,000 in all. Needs ../shared/data.

Run: ``python benchmarks/bench_trace.py`` or ``python benchmarks/run_all.py trace``.
``python benchmarks/bench_trace.py --noise-table`` prints the accuracy-versus-noise table
of docs/trace.md (3MFP, seeds 0–2).
"""

from __future__ import annotations

import resource
import time
import tracemalloc

import numpy as np

from cryoset.testing import shared_data_root
from cryoset.trace.hmm import (
    align_chain,
    build_transitions,
    emission_log_probabilities,
    spatial_order,
    viterbi_unique,
)
from cryoset.trace.model import read_ca_table
from cryoset.trace.residues import three_to_index
from cryoset.trace.synthetic import noisy_aa_probabilities, perturb_candidates

N_CANDIDATES = 5000
N_RESIDUES = 4000


def _problem(n_residues: int, n_candidates: int, seed: int = 0):  # type: ignore[no-untyped-def]
    path = shared_data_root() / "maps" / "emd_5168" / "3MFP.pdb"
    if not path.exists():
        raise FileNotFoundError(f"{path} is needed for this benchmark")
    table = read_ca_table(path)
    ca = table[["x_a", "y_a", "z_a"]].to_numpy()
    aa = np.array([three_to_index(n) for n in table["residue_name"]])
    copies = -(-n_residues // len(ca))
    pos = np.concatenate([ca + np.array([70.0 * k, 0.0, 0.0]) for k in range(copies)])[:n_residues]
    seq = np.tile(aa, copies)[:n_residues]
    rng = np.random.default_rng(seed)
    probs = noisy_aa_probabilities(seq, rng, signal=3.0)
    fp = (n_candidates - n_residues) / n_residues
    cpos, cprob, truth = perturb_candidates(
        pos, probs, rng, position_sd_a=0.3, false_positive_fraction=fp
    )
    return cpos, cprob, truth, seq, len(ca)


def naive_dense_viterbi(log_emit: np.ndarray, seq: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """Textbook Viterbi over a dense matrix, each state used at most once (walk-back check)."""
    n, steps = log_emit.shape[0], seq.size
    first = log_emit[:, seq[0]]
    v = first - np.logaddexp.reduce(first) + first
    bp = np.zeros((steps, n), dtype=np.int64)
    for t in range(1, steps):
        new = np.full(n, -np.inf)
        for j in range(n):
            scores = v + dense[:, j]
            for i in np.argsort(-scores)[:8]:
                k, s, used = int(i), t - 1, False
                while s >= 0:
                    if k == j:
                        used = True
                        break
                    k = int(bp[s, k]) if s > 0 else k
                    s -= 1
                if not used and np.isfinite(scores[i]):
                    new[j] = scores[i] + log_emit[j, seq[t]]
                    bp[t, j] = i
                    break
        v = new
    path = np.zeros(steps, dtype=np.int64)
    path[-1] = int(np.argmax(v))
    for t in range(steps - 1, 0, -1):
        path[t - 1] = bp[t, path[t]]
    return path


def main() -> dict:
    # Warm up the compiled kernel (compilation is cached on disk but loading costs ~1 s).
    cpos, cprob, truth, seq, copy_len = _problem(60, 80)
    viterbi_unique(emission_log_probabilities(cprob), seq, build_transitions(cpos))

    # --- ours at full size: one forward pass (like the peer), then the default ------------
    cpos, cprob, truth, seq, copy_len = _problem(N_RESIDUES, N_CANDIDATES)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    c0 = time.process_time()
    order = spatial_order(cpos)  # as align_chains does
    cpos, cprob, truth = cpos[order], cprob[order], truth[order]
    log_emit = emission_log_probabilities(cprob)
    graph = build_transitions(cpos)
    path = viterbi_unique(log_emit, seq, graph)
    ours_s = time.perf_counter() - t0
    ours_cpu_s = time.process_time() - c0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c0 = time.process_time()
    both = align_chain(log_emit, seq, graph)  # default: also from the C-terminus
    both_cpu_s = time.process_time() - c0

    def register(states: np.ndarray) -> float:
        # Copies share one sequence, so residue t is right on any copy's residue t.
        tr = truth[states]
        right = (tr >= 0) & ((tr % copy_len) == (np.arange(N_RESIDUES) % copy_len))
        return float(np.mean(right))

    # --- naive dense baseline at small sizes, and ours on the same problems --------------
    small = []
    for n_res, n_cand in ((100, 125), (200, 250)):
        cpos_s, cprob_s, _, seq_s, _ = _problem(n_res, n_cand, seed=1)
        le = emission_log_probabilities(cprob_s)
        g = build_transitions(cpos_s)
        dense = g.to_dense()
        c0 = time.process_time()
        naive_dense_viterbi(le, seq_s, dense)
        naive_s = time.process_time() - c0
        c0 = time.process_time()
        viterbi_unique(le, seq_s, g)
        ours_small_s = time.process_time() - c0
        small.append({"n_candidates": n_cand, "n_residues": n_res, "naive_s": naive_s,
                      "ours_s": ours_small_s, "ratio": naive_s / ours_small_s})
    ref = small[-1]
    scale = (N_RESIDUES / ref["n_residues"]) * (N_CANDIDATES / ref["n_candidates"]) ** 2
    naive_full_s = ref["naive_s"] * scale
    result = {
        "n_candidates": N_CANDIDATES,
        "n_residues": N_RESIDUES,
        "n_best": 2,
        "neighbours_per_state": float(graph.sources.size / N_CANDIDATES),
        "ours_wall_s": ours_s,
        "ours_cpu_s": ours_cpu_s,
        "tracemalloc_peak_mb": traced_peak / 1e6,
        "maxrss_increase_mb": max(rss1 - rss0, 0) / 1024.0,
        "register_fraction_forward": register(path.states),
        "bidirectional_cpu_s": both_cpu_s,
        "register_fraction_bidirectional": register(both.states),
        "n_jumps": int(path.jumps.sum()),
        "naive_small": small,
        "naive_full_extrapolated_s": naive_full_s,
        "ratio_full": naive_full_s / ours_cpu_s,
    }
    print(f"ours: {N_CANDIDATES} candidates x {N_RESIDUES} residues: {ours_s:.1f} s wall "
          f"({ours_cpu_s:.1f} s CPU), tracemalloc peak {traced_peak / 1e6:.0f} MB, "
          f"max RSS +{result['maxrss_increase_mb']:.0f} MB, register {register(path.states):.3f}")
    print(f"ours, default (both directions): {both_cpu_s:.1f} s CPU, "
          f"register {register(both.states):.3f}")
    for row in small:
        print(f"naive dense {row['n_candidates']}x{row['n_residues']}: {row['naive_s']:.2f} s CPU, "
              f"ours {row['ours_s']:.4f} s CPU, ratio {row['ratio']:.0f}")
    print(f"naive dense extrapolated to full size: {naive_full_s:.0f} s CPU; "
          f"ratio {result['ratio_full']:.0f}")
    return result


def noise_table(seeds: tuple[int, ...] = (0, 1, 2)) -> str:
    """Markdown table: chain_comparison quantities and register versus noise and Λ (3MFP)."""
    from cryoset.trace.candidates import Candidates
    from cryoset.trace.compare import compare_ca
    from cryoset.trace.residues import ONE_LETTER
    from cryoset.trace.tracer import trace_backbone

    table = read_ca_table(shared_data_root() / "maps" / "emd_5168" / "3MFP.pdb")
    ca = table[["x_a", "y_a", "z_a"]].to_numpy()
    names = table["residue_name"].to_numpy()
    aa = np.array([three_to_index(n) for n in names])
    seq = "".join(ONE_LETTER[k] for k in aa)
    lines = [
        "| position noise (Å/coord) | aa signal (top-1) | Λ | matched % | identity % | register % | RMSD Å |",
        "|---|---|---|---|---|---|---|",
    ]
    for sd in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7):
        for signal in (3.0, 2.0, 1.0):
            for lam in (10.0, 15.0):
                rows = []
                for seed in seeds:
                    rng = np.random.default_rng(seed)
                    probs = noisy_aa_probabilities(aa, rng, signal=signal)
                    top1 = float(np.mean(probs.argmax(axis=1) == aa))
                    pos, prob, truth = perturb_candidates(
                        ca, probs, rng, position_sd_a=sd, false_positive_fraction=0.1
                    )
                    chains, paths = trace_backbone(
                        Candidates(pos, np.ones(len(pos)), prob), [seq], scale_lambda=lam
                    )
                    r = compare_ca(chains[0].positions_a, np.array(chains[0].residue_names), ca, names)
                    reg = float(np.mean(truth[paths[0].states] == np.arange(len(aa))))
                    rows.append((r.pct_matched, r.pct_sequence_identity, 100 * reg, r.rmsd_a, top1))
                m = np.mean(rows, axis=0)
                lines.append(
                    f"| {sd} | {signal:g} ({100 * m[4]:.0f} %) | {lam:g} | {m[0]:.1f} | {m[1]:.1f} "
                    f"| {m[2]:.1f} | {m[3]:.2f} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if "--noise-table" in sys.argv:
        print(noise_table())
    else:
        main()
