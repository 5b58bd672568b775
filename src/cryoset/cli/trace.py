"""Backbone tracing (``cryoset trace``) and Cα model comparison (``cryoset compare-models``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import typer

from cryoset.cli._options import echo_json, json_option, option
from cryoset.errors import InputError

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
    from cryoset.trace.model import read_ca_table
    from cryoset.trace.residues import ONE_LETTER, three_to_index
    from cryoset.trace.tracer import default_chain_ids

    if (fasta is None) == (model is None):
        raise InputError("--sequence", "give exactly one of --sequence FASTA or --sequence-from-model")
    if fasta is not None:
        seqs = [s for _, s in read_fasta(fasta)]
        ids = default_chain_ids(len(seqs))
    elif model is not None:
        table = read_ca_table(model)
        if table.empty:
            raise InputError(model, "the model has no Cα atoms")
        seqs, ids = [], []
        for cid, rows in table.groupby("chain", sort=False):
            letters = [
                ONE_LETTER[k] if k < 20 else "X"
                for k in (three_to_index(n) for n in rows["residue_name"])
            ]
            seqs.append("".join(letters))
            ids.append(str(cid))
    if chain_ids:
        ids = [c.strip() for c in chain_ids.split(",")]
        if len(ids) != len(seqs) or not all(ids):
            raise InputError("--chain-ids", f"give {len(seqs)} non-empty comma-separated chain ids")
    return seqs, ids


def register(app: typer.Typer) -> None:
    """Add ``trace`` and ``compare-models``."""

    @app.command("trace")
    def trace(
        ca_prob: Path = typer.Argument(..., help="Cα probability map: MRC, or .npy (z, y, x)."),
        aa_prob: Path = typer.Option(
            ..., "--aa-prob", help="Amino-acid probabilities: .npy (20, z, y, x) or a folder ALA.mrc … VAL.mrc."
        ),
        output: Path = option("out", ..., help="Cα model to write (.pdb or .cif)."),
        sequence: Path | None = typer.Option(None, "--sequence", help="FASTA file, one record per chain."),
        sequence_from_model: Path | None = typer.Option(
            None, "--sequence-from-model", help="Take chain sequences (and ids) from this PDB/mmCIF."
        ),
        chain_ids: str | None = typer.Option(None, "--chain-ids", help="Comma-separated chain ids."),
        threshold: float = typer.Option(0.5, help="Minimum Cα probability of a candidate."),
        min_distance_a: float = option("min_distance_a", 2.0, help="Minimum distance between candidates, Å."),
        scale_lambda: float = typer.Option(10.0, "--lambda", help="Λ: transition sd = 0.036 Λ Å."),
        jump_penalty: float = typer.Option(20.0, help="Floor of the transition density, nats below its peak."),
        n_best: int = typer.Option(2, help="Partial paths kept per state in the Viterbi (1 = plain)."),
        bidirectional: bool = typer.Option(
            True, "--bidirectional/--forward-only", help="Also align from the C-terminus, keep the better."
        ),
        voxel_size_a: float | None = option("voxel_size_a", None, help="Voxel size, Å (for .npy input or to override)."),
        fmt: str | None = option("format", None, help="pdb or cif (default: from the suffix)."),
        as_json: bool = json_option(),
    ) -> None:
        """Trace a Cα backbone: candidates from the Cα map, then an HMM aligns the sequences.

        Examples:

            cryoset trace ca.mrc --aa-prob aa_maps/ --sequence chains.fasta -o model.pdb

            cryoset trace ca.npy --aa-prob aa.npy --sequence-from-model ref.cif --out trace.cif --lambda 15
        """
        from cryoset.provenance import make_provenance
        from cryoset.trace.candidates import extract_candidates
        from cryoset.trace.model import format_from_suffix, write_traced_model
        from cryoset.trace.tracer import trace_backbone

        kind = format_from_suffix(output) if fmt is None else fmt.lower()
        if kind not in ("pdb", "cif"):
            raise InputError("--format", f"unknown format {fmt!r}; use pdb or cif")
        if scale_lambda <= 0 or jump_penalty <= 0 or min_distance_a < 0 or n_best < 1:
            raise InputError(
                None, "--lambda and --jump-penalty must be positive, --min-distance-a ≥ 0, --n-best ≥ 1"
            )
        seqs, ids = _sequences(sequence, sequence_from_model, chain_ids)
        ca, voxel, origin = _load_ca_map(ca_prob, voxel_size_a)
        aa = _load_aa_maps(aa_prob, ca.shape)
        cands = extract_candidates(
            ca, aa, voxel_size_a=voxel, origin_a=origin, threshold=threshold,
            min_distance_a=min_distance_a,
        )
        n_res = sum(len(s.replace("*", "")) for s in seqs)
        if n_res > len(cands):
            raise InputError(
                ca_prob, f"{len(cands)} Cα candidates above threshold {threshold} for {n_res} residues"
            )
        from rich.console import Console

        with Console(stderr=True).status(f"aligning {n_res} residues to {len(cands)} candidates"):
            chains, paths = trace_backbone(
                cands, seqs, chain_ids=ids, scale_lambda=scale_lambda, jump_penalty=jump_penalty,
                n_best=n_best, bidirectional=bidirectional,
            )
        params = {
            "threshold": threshold, "min_distance_a": min_distance_a, "lambda": scale_lambda,
            "jump_penalty": jump_penalty, "n_best": n_best, "bidirectional": bidirectional,
            "format": kind, "chain_ids": ids,
        }
        inputs = [p for p in (ca_prob, aa_prob, sequence, sequence_from_model) if p is not None]
        write_traced_model(output, chains, kind, provenance=make_provenance("trace", params, inputs))
        rows = [
            {"chain": c.chain_id, "n_residues": len(c.residue_names),
             "n_jumps": int(p.jumps.sum()), "log_score": p.log_score}
            for c, p in zip(chains, paths, strict=True)
        ]
        if as_json:
            summary = {"output": str(output), "n_candidates": len(cands), "chains": rows}
            echo_json(summary)
        else:
            typer.echo(f"{len(cands)} Cα candidates; wrote {output}")
            for ch in rows:
                typer.echo(f"  chain {ch['chain']}: {ch['n_residues']} residues, {ch['n_jumps']} jumps")

    @app.command("compare-models")
    def compare_models(
        predicted: Path = typer.Argument(..., help="Predicted model (PDB/mmCIF)."),
        reference: Path = typer.Argument(..., help="Reference model (PDB/mmCIF)."),
        max_distance_a: float = option("max_distance_a", 3.0, help="Match radius for Cα pairs, Å."),
        as_json: bool = json_option(),
    ) -> None:
        """Compare Cα models: RMSD, % reference residues matched, % sequence identity.

        The phenix.chain_comparison quantities: Cα pairs within --max-distance-a are matched
        one-to-one (closest first); RMSD is over matched pairs, "matched" is relative to the
        reference, identity is the share of matched pairs with the same residue name.

        Examples:

            cryoset compare-models trace.pdb deposited.cif --json
        """
        import pandas as pd

        from cryoset.trace.compare import compare_ca
        from cryoset.trace.model import read_ca_table
        from cryoset.trace.residues import index_to_three, three_to_index

        if max_distance_a <= 0:
            raise InputError("--max-distance-a", "must be positive")
        pred = read_ca_table(predicted)
        ref = read_ca_table(reference)
        if ref.empty:
            raise InputError(reference, "the reference has no Cα atoms")
        # Compare canonical names (HSD/HIE → HIS, MSE → MET, anything else → UNK).
        def names(table: pd.DataFrame) -> npt.NDArray[np.object_]:
            return np.array(
                [index_to_three(three_to_index(str(n))) for n in table["residue_name"]], dtype=object
            )

        result = compare_ca(
            pred[["x_a", "y_a", "z_a"]].to_numpy(), names(pred),
            ref[["x_a", "y_a", "z_a"]].to_numpy(), names(ref),
            max_distance_a=max_distance_a,
        )
        if as_json:
            echo_json(result.to_dict())
            return
        typer.echo(f"reference residues     {result.n_reference}")
        typer.echo(f"predicted residues     {result.n_predicted}")
        typer.echo(f"matched (≤ {max_distance_a:g} Å)        {result.n_matched} ({result.pct_matched:.1f} %)")
        typer.echo(f"sequence identity      {result.pct_sequence_identity:.1f} %")
        typer.echo(f"RMSD (matched Cα)      {result.rmsd_a:.3f} Å")
