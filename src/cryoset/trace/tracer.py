"""End-to-end backbone tracing: candidates + sequences → Cα chains."""

from __future__ import annotations

import numpy.typing as npt

from cryoset.trace.candidates import Candidates
from cryoset.trace.hmm import ChainPath, align_chains
from cryoset.trace.model import CaChain
from cryoset.trace.residues import index_to_three, sequence_to_indices

#: Chain ids given to chains in order when none are supplied.
DEFAULT_CHAIN_IDS: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def default_chain_ids(n: int) -> list[str]:
    """``A``, ``B``, … then two-letter ids for more than 62 chains."""
    ids = list(DEFAULT_CHAIN_IDS)
    out = ids[:n]
    k = 0
    while len(out) < n:
        out.append(ids[k // len(ids)] + ids[k % len(ids)])
        k += 1
    return out


def paths_to_chains(
    candidates: Candidates,
    sequences: list[str],
    paths: list[ChainPath],
    chain_ids: list[str],
) -> list[CaChain]:
    """Turn Viterbi paths into Cα chains (positions of the states, names from the sequence)."""
    chains: list[CaChain] = []
    for seq, path, cid in zip(sequences, paths, chain_ids, strict=True):
        idx = sequence_to_indices(seq)
        names = tuple(index_to_three(int(k)) for k in idx)
        chains.append(
            CaChain(
                chain_id=cid,
                residue_names=names,
                positions_a=candidates.positions_a[path.states].copy(),
            )
        )
    return chains


def trace_backbone(
    candidates: Candidates,
    sequences: list[str],
    *,
    chain_ids: list[str] | None = None,
    scale_lambda: float = 10.0,
    jump_penalty: float = 20.0,
    background: npt.ArrayLike | None = None,
    n_best: int = 2,
    bidirectional: bool = True,
) -> tuple[list[CaChain], list[ChainPath]]:
    """Thread one-letter sequences, in turn, through Cα candidates.

    Parameters
    ----------
    candidates
        The Cα candidates.
    sequences
        One-letter sequence of each chain.
    chain_ids
        Chain id of each sequence (default ``A``, ``B``, …).
    scale_lambda, jump_penalty, background, n_best, bidirectional
        See :func:`cryoset.trace.hmm.align_chains`.

    Returns
    -------
    chains, paths
        The Cα chains and the underlying state paths.
    """
    ids = default_chain_ids(len(sequences)) if chain_ids is None else list(chain_ids)
    if len(ids) != len(sequences):
        raise ValueError("one chain id per sequence is needed")
    total = sum(sequence_to_indices(s).size for s in sequences)
    if total > len(candidates):
        raise ValueError(f"{total} residues but only {len(candidates)} Cα candidates")
    paths = align_chains(
        candidates.positions_a,
        candidates.aa_prob,
        [sequence_to_indices(s) for s in sequences],
        scale_lambda=scale_lambda,
        jump_penalty=jump_penalty,
        background=background,
        n_best=n_best,
        bidirectional=bidirectional,
    )
    return paths_to_chains(candidates, sequences, paths, ids), paths
