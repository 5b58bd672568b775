"""The tracing step: Cα and amino-acid probability maps in, a Cα model out.

:func:`run_trace` is ``cryoset trace``: Cα candidates from the Cα map
(:func:`cryoset.trace.candidates.extract_candidates`), then the HMM aligns the chain sequences
to them (:func:`cryoset.trace.tracer.trace_backbone`) and the model is written as PDB or
mmCIF with its provenance. Every parameter, with its one default, is a field of
:class:`TraceParams`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cryoset.errors import InputError
from cryoset.workflows.params import TraceParams

__all__ = ["TraceParams", "run_trace"]


_MAP_SUFFIXES = (".mrc", ".map", ".ccp4", ".mrc.gz", ".map.gz")


def _load_npy(path: Path) -> npt.NDArray[np.float32]:
    """A numeric ``.npy`` array as float32; anything else (object arrays, which would need
    unpickling, truncated or non-``.npy`` files, NaN or infinite values) is one InputError."""
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:
        text = " ".join(str(exc).split())
        if "allow_pickle" in text:
            text = "it holds Python objects, which are never unpickled; save a numeric array"
        raise InputError(path, f"is not a readable numeric .npy array ({text})") from None
    except (EOFError, OSError) as exc:
        raise InputError(path, f"is not a readable .npy array ({' '.join(str(exc).split())})") from None
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "biuf":
        raise InputError(path, f"holds {getattr(data, 'dtype', type(data))!s} values, not real numbers")
    out = data.astype(np.float32)
    bad = int(out.size - np.count_nonzero(np.isfinite(out)))
    if bad:
        raise InputError(path, f"{bad} of {out.size} values are NaN or infinite")
    return out


def _load_ca_map(
    path: Path, voxel_size_a: float | None
) -> tuple[npt.NDArray[np.float32], tuple[float, float, float], tuple[float, float, float]]:
    """Cα probability map, voxel size and origin ((z, y, x), Å) from MRC or .npy."""
    if voxel_size_a is not None and not (np.isfinite(voxel_size_a) and voxel_size_a > 0):
        raise InputError("--voxel-size-a", f"must be a positive number of Å, got {voxel_size_a}")
    if path.suffix.lower() == ".npy":
        data = _load_npy(path)
        if data.ndim != 3:
            raise InputError(path, f"the Cα probability array must be 3-D (z, y, x), got {data.shape}")
        v = 1.0 if voxel_size_a is None else float(voxel_size_a)
        return data.astype(np.float32), (v, v, v), (0.0, 0.0, 0.0)
    from cryoset.io.mrc import read_map

    m = read_map(path, voxel_size_a=voxel_size_a)
    return m.data, m.voxel_size_a, m.origin_a


def _load_aa_maps(path: Path, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """Amino-acid probabilities (20, z, y, x) from a .npy file or a folder of 20 MRC maps."""
    from cryoset.trace.residues import AMINO_ACIDS

    if path.is_dir():
        from cryoset.io.mrc import read_map

        files = {
            f.name.lower().split(".")[0]: f
            for f in path.iterdir()
            if f.name.lower().endswith(_MAP_SUFFIXES)
        }
        missing = [name for name in AMINO_ACIDS if name.lower() not in files]
        if missing:
            raise InputError(path, f"no map for {', '.join(missing)} (expected ALA.mrc … VAL.mrc)")
        stack = np.stack([read_map(files[name.lower()]).data for name in AMINO_ACIDS])
    elif path.is_file():
        if path.suffix.lower() != ".npy":
            raise InputError(path, "give a .npy array (20, z, y, x) or a folder of 20 MRC maps")
        stack = _load_npy(path)
    else:
        raise InputError(path, "no such file or folder")
    if stack.shape != (20, *shape):
        raise InputError(path, f"expected shape (20, {', '.join(map(str, shape))}), got {stack.shape}")
    return stack.astype(np.float32)


def _sequences(
    fasta: Path | None, model: Path | None, chain_ids: str | None
) -> tuple[list[str], list[str]]:
    from cryoset.trace.fasta import read_fasta
    from cryoset.trace.model import model_sequences
    from cryoset.trace.tracer import default_chain_ids

    if (fasta is None) == (model is None):
        raise InputError("--sequence", "give exactly one of --sequence FASTA or --sequence-from-model")
    if fasta is not None:
        seqs = [s for _, s in read_fasta(fasta)]
        ids = default_chain_ids(len(seqs))
    elif model is not None:
        chains = model_sequences(model)
        if not chains:
            raise InputError(model, "the model has no Cα atoms")
        ids, seqs = (list(t) for t in zip(*chains, strict=True))
    if chain_ids:
        ids = [c.strip() for c in chain_ids.split(",")]
        if len(ids) != len(seqs) or not all(ids):
            raise InputError("--chain-ids", f"give {len(seqs)} non-empty comma-separated chain ids")
    return seqs, ids


def run_trace(ca_prob: Path, aa_prob: Path, output: Path, p: TraceParams, *, sequence: Path | None = None,
              sequence_from_model: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Trace the chains of ``sequence`` (FASTA) or ``sequence_from_model`` and write ``output``.

    Returns
    -------
    dict
        ``output``, ``n_candidates`` and per chain ``chain``, ``n_residues``, ``n_jumps``,
        ``log_score``.

    Raises
    ------
    InputError
        Bad parameters or inputs (before anything is written).
    """
    from cryoset.provenance import make_provenance
    from cryoset.trace.candidates import extract_candidates
    from cryoset.trace.model import format_from_suffix, write_traced_model
    from cryoset.trace.tracer import trace_backbone

    kind = format_from_suffix(output) if p.format is None else p.format.lower()
    if kind not in ("pdb", "cif"):
        raise InputError("--format", f"unknown format {p.format!r}; use pdb or cif")
    if p.scale_lambda <= 0 or p.jump_penalty <= 0 or p.min_distance_a < 0 or p.n_best < 1:
        raise InputError(
            None, "--lambda and --jump-penalty must be positive, --min-distance-a ≥ 0, --n-best ≥ 1"
        )
    seqs, ids = _sequences(sequence, sequence_from_model, p.chain_ids)
    ca, voxel, origin = _load_ca_map(ca_prob, p.voxel_size_a)
    aa = _load_aa_maps(aa_prob, ca.shape)
    cands = extract_candidates(
        ca, aa, voxel_size_a=voxel, origin_a=origin, threshold=p.threshold,
        min_distance_a=p.min_distance_a,
    )
    n_res = sum(len(s.replace("*", "")) for s in seqs)
    if n_res > len(cands):
        raise InputError(
            ca_prob, f"{len(cands)} Cα candidates above threshold {p.threshold} for {n_res} residues"
        )
    from rich.console import Console

    with Console(stderr=True, quiet=not progress).status(f"aligning {n_res} residues to {len(cands)} candidates"):
        chains, paths = trace_backbone(
            cands, seqs, chain_ids=ids, scale_lambda=p.scale_lambda, jump_penalty=p.jump_penalty,
            n_best=p.n_best, bidirectional=p.bidirectional,
        )
    record = {
        "threshold": p.threshold, "min_distance_a": p.min_distance_a, "lambda": p.scale_lambda,
        "jump_penalty": p.jump_penalty, "n_best": p.n_best, "bidirectional": p.bidirectional,
        "format": kind, "chain_ids": ids,
    }
    inputs = [p for p in (ca_prob, aa_prob, sequence, sequence_from_model) if p is not None]
    write_traced_model(output, chains, kind, provenance=make_provenance("trace", record, inputs))
    rows = [
        {"chain": c.chain_id, "n_residues": len(c.residue_names),
         "n_jumps": int(p.jumps.sum()), "log_score": p.log_score}
        for c, p in zip(chains, paths, strict=True)
    ]
    return {"output": str(output), "n_candidates": len(cands), "chains": rows}
