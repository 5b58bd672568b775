"""Backbone tracing (``cryoset trace``) and Cα model comparison (``cryoset compare-models``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cryoset.cli._defaults import TRACE as _D  # TraceParams' defaults
from cryoset.cli._options import echo_json, json_option, option
from cryoset.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


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
        chain_ids: str | None = typer.Option(_D.chain_ids, "--chain-ids", help="Comma-separated chain ids."),
        threshold: float = typer.Option(_D.threshold, help="Minimum Cα probability of a candidate."),
        min_distance_a: float = option("min_distance_a", _D.min_distance_a, help="Minimum distance between candidates, Å."),
        scale_lambda: float = typer.Option(_D.scale_lambda, "--lambda", help="Λ: transition sd = 0.036 Λ Å."),
        jump_penalty: float = typer.Option(_D.jump_penalty, help="Floor of the transition density, nats below its peak."),
        n_best: int = typer.Option(_D.n_best, help="Partial paths kept per state in the Viterbi (1 = plain)."),
        bidirectional: bool = typer.Option(
            _D.bidirectional, "--bidirectional/--forward-only", help="Also align from the C-terminus, keep the better."
        ),
        voxel_size_a: float | None = option("voxel_size_a", _D.voxel_size_a, help="Voxel size, Å (for .npy input or to override)."),
        fmt: str | None = option("format", _D.format, help="pdb or cif (default: from the suffix)."),
        as_json: bool = json_option(),
    ) -> None:
        """Trace a Cα backbone: candidates from the Cα map, then an HMM aligns the sequences.

        Examples:

            cryoset trace ca.mrc --aa-prob aa_maps/ --sequence chains.fasta -o model.pdb

            cryoset trace ca.npy --aa-prob aa.npy --sequence-from-model ref.cif --out trace.cif --lambda 15
        """
        from cryoset.workflows.trace import TraceParams, run_trace

        params = TraceParams(threshold=threshold, min_distance_a=min_distance_a, scale_lambda=scale_lambda,
                             jump_penalty=jump_penalty, n_best=n_best, bidirectional=bidirectional,
                             voxel_size_a=voxel_size_a, format=fmt, chain_ids=chain_ids)
        summary = run_trace(ca_prob, aa_prob, output, params, sequence=sequence,
                            sequence_from_model=sequence_from_model)
        rows = summary["chains"]
        if as_json:
            echo_json(summary)
        else:
            typer.echo(f"{summary['n_candidates']} Cα candidates; wrote {output}")
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
        import numpy as np
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
