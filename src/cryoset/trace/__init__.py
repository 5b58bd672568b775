"""Backbone tracing: Cα candidates, an HMM with a customised Viterbi, and model comparison.

Pipeline: per-voxel Cα and amino-acid probability maps → :func:`extract_candidates` →
:func:`trace_backbone` (HMM of Cryo2Struct, each candidate used at most once, chains in
turn) → :func:`write_traced_model` (PDB/mmCIF) → :func:`compare_ca` (phenix.chain_comparison
quantities). See ``docs/trace.md``.
"""

from cryoset.trace.candidates import Candidates, extract_candidates
from cryoset.trace.compare import ModelComparison, compare_ca, match_ca
from cryoset.trace.hmm import (
    ChainPath,
    TransitionGraph,
    align_chain,
    align_chains,
    build_transitions,
    emission_log_probabilities,
    path_log_score,
    spatial_order,
    viterbi_unique,
)
from cryoset.trace.model import CaChain, read_ca_table, write_traced_model
from cryoset.trace.tracer import trace_backbone

__all__ = [
    "CaChain",
    "Candidates",
    "ChainPath",
    "ModelComparison",
    "TransitionGraph",
    "align_chain",
    "align_chains",
    "build_transitions",
    "compare_ca",
    "emission_log_probabilities",
    "extract_candidates",
    "match_ca",
    "path_log_score",
    "read_ca_table",
    "spatial_order",
    "trace_backbone",
    "viterbi_unique",
    "write_traced_model",
]
