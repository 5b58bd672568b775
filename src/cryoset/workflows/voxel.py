"""Map-to-model workflows: train the voxel network, predict a map, build a Cα model.

Files in, files out; the command line (``cryoset train voxel``, ``cryoset predict``,
``cryoset model-build``) only parses options and calls these functions.

``predict_map`` writes, in the output folder, on the network's 1 Å grid whose voxel 0 is the
input map's voxel 0 (same origin: the input map's physical frame):

* ``ca_prob.mrc``, ``n_prob.mrc``, ``c_prob.mrc`` — backbone-atom probabilities;
* ``backbone_label.mrc`` — argmax of the backbone head (0 none, 1 Cα, 2 N, 3 C);
* ``aa_prob.npy`` — amino-acid probabilities ``(20, z, y, x)`` given a residue (classes 1–20 of
  the amino head renormalised), the input of ``cryoset trace --aa-prob``;
* ``amino_label.mrc``, ``secondary_label.mrc`` — argmax labels of the other heads;
* ``prediction.json`` — the geometry, the checkpoint and its provenance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cryoset.errors import InputError
from cryoset.io.atomic import atomic_directory, atomic_path
from cryoset.io.mrc import MapData, read_map, write_map
from cryoset.provenance import make_provenance

__all__ = ["DEFAULT_CHECKPOINT", "model_build", "predict_map", "resolve_checkpoint"]

PathLike = str | os.PathLike[str]
#: The lowest Cα threshold ``model-build`` relaxes to when candidates are fewer than residues.
MIN_CA_THRESHOLD = 0.01
#: Suppression distance of the greedy candidate search (Å), used when local maxima are too few.
GREEDY_DISTANCE_A = 2.0
#: The checkpoint shipped inside the package (trained by ``benchmarks/train_voxel_default.sh``).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "data" / "models" / "voxelnet_unet.safetensors"


def resolve_checkpoint(checkpoint: PathLike | None) -> Path:
    """The checkpoint to use: the one given, else the shipped one."""
    if checkpoint is not None:
        return Path(checkpoint)
    if not DEFAULT_CHECKPOINT.is_file():
        raise InputError(DEFAULT_CHECKPOINT, "the shipped voxel-network checkpoint is missing from this "
                                             "installation; pass --checkpoint")
    return DEFAULT_CHECKPOINT


def _prepared_volume(map_path: Path) -> tuple[NDArray[np.float32], MapData]:
    """The map on the network's grid (1 Å), normalised as ``map prepare`` does, and the map read."""
    from cryoset.workflows.maps import normalised_map

    src = read_map(map_path)  # strict: NaN voxels are refused here
    return normalised_map(src, map_path), src


def predict_map(
    map_path: PathLike,
    out_dir: PathLike,
    *,
    checkpoint: PathLike | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    on_batch: Callable[[int, int], None] | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Predict backbone atoms, amino acids and secondary structure for every voxel of a map.

    Returns the summary written to ``prediction.json``.
    """
    from cryoset.learn.voxel_infer import predict_volume
    from cryoset.learn.voxel_train import load_voxel_net

    mpath, out = Path(map_path), Path(out_dir)
    ckpt = resolve_checkpoint(checkpoint)
    if batch_size < 1:
        raise InputError("--batch-size", f"must be at least 1, got {batch_size}")
    model, cfg = load_voxel_net(ckpt)
    volume, src = _prepared_volume(mpath)
    probs = predict_volume(model, volume, heads=cfg.heads, box_px=cfg.box_px, batch_size=batch_size,
                           device=device, on_batch=on_batch)
    prov = make_provenance("predict", {"checkpoint": str(ckpt), "batch_size": batch_size, "device": device,
                                       "heads": list(cfg.heads)}, [mpath, ckpt], argv=argv)
    voxel, origin = (1.0, 1.0, 1.0), src.origin_a
    written: list[str] = []
    with atomic_directory(out) as tmp:
        if "backbone" in probs:
            bb = probs["backbone"]
            for k, name in ((1, "ca_prob"), (2, "n_prob"), (3, "c_prob")):
                write_map(tmp / f"{name}.mrc", bb[k], voxel, origin, provenance=prov)
            write_map(tmp / "backbone_label.mrc", bb.argmax(0).astype(np.int8), voxel, origin,
                      provenance=prov, dtype="int8")
        if "amino" in probs:
            aa = probs["amino"][1:]
            aa = aa / np.maximum(aa.sum(axis=0, keepdims=True), 1e-12)
            np.save(tmp / "aa_prob.npy", aa.astype(np.float32))
            write_map(tmp / "amino_label.mrc", probs["amino"].argmax(0).astype(np.int8), voxel, origin,
                      provenance=prov, dtype="int8")
        if "secondary" in probs:
            write_map(tmp / "secondary_label.mrc", probs["secondary"].argmax(0).astype(np.int8), voxel,
                      origin, provenance=prov, dtype="int8")
        written = sorted(p.name for p in tmp.iterdir() if not p.name.endswith(".provenance.json"))
        summary = {"map": str(mpath), "checkpoint": str(ckpt), "shape": list(volume.shape),
                   "voxel_size_a": list(voxel), "origin_a": list(origin), "heads": list(cfg.heads),
                   "files": written, "provenance": prov}
        (tmp / "prediction.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def model_build(
    map_path: PathLike,
    sequence_path: PathLike,
    out_path: PathLike,
    *,
    checkpoint: PathLike | None = None,
    prediction_dir: PathLike | None = None,
    threshold: float | None = None,
    min_distance_a: float = 2.0,
    reference: PathLike | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    on_batch: Callable[[int, int], None] | None = None,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Map + sequence → Cα model: predict, pick Cα candidates, HMM-align the chains, write.

    Parameters
    ----------
    map_path, sequence_path, out_path
        The density map, a FASTA file (one record per chain), the model to write (.pdb/.cif).
    prediction_dir
        Where the predictions go (default: ``<out stem>_prediction`` beside the model).
    threshold, min_distance_a
        Cα candidates: minimum Cα probability (default: the threshold stored with the weights,
        chosen on validation maps when they were trained; else Cryo2Struct's 0.4) and the
        suppression distance. When fewer candidates than residues pass, the threshold is halved
        until enough do (not below :data:`MIN_CA_THRESHOLD`); if local maxima are still too few
        (broad Cα blobs), every voxel above the threshold competes in a greedy suppression at
        :data:`GREEDY_DISTANCE_A`. The result reports the threshold and the peak rule used.
    reference
        A deposited model: the result is compared with it (RMSD, % matched within 3 Å, identity).
    """
    from cryoset.trace.candidates import extract_candidates
    from cryoset.trace.fasta import read_fasta
    from cryoset.trace.model import format_from_suffix, write_traced_model
    from cryoset.trace.tracer import trace_backbone

    out = Path(out_path)
    kind = format_from_suffix(out)
    sequences = [s for _, s in read_fasta(sequence_path)]
    if not sequences:
        raise InputError(sequence_path, "holds no sequence")
    from cryoset.learn.voxel_train import voxel_net_threshold

    if threshold is None:
        threshold = voxel_net_threshold(resolve_checkpoint(checkpoint))
    if not 0 < threshold < 1 or min_distance_a < 0:
        raise InputError("--threshold", "the threshold must lie in (0, 1) and the distance be ≥ 0")
    pred_dir = Path(prediction_dir) if prediction_dir is not None else out.with_name(out.stem + "_prediction")
    summary = predict_map(map_path, pred_dir, checkpoint=checkpoint, batch_size=batch_size, device=device,
                          on_batch=on_batch, argv=argv)
    if "backbone" not in summary["heads"] or "amino" not in summary["heads"]:
        raise InputError(summary["checkpoint"], "model-build needs a network with backbone and amino heads")
    ca = read_map(pred_dir / "ca_prob.mrc")
    aa = np.load(pred_dir / "aa_prob.npy", allow_pickle=False)
    n_res = sum(len(s) for s in sequences)
    requested = threshold
    # The HMM needs at least one candidate per residue: halve the threshold until there are
    # enough (down to MIN_CA_THRESHOLD). Local maxima first; if they stay too few (broad Cα
    # blobs), greedy suppression, where every voxel above the threshold competes.
    for local in (True, False):
        threshold = requested
        while True:
            cands = extract_candidates(ca.data, aa, voxel_size_a=ca.voxel_size_a, origin_a=ca.origin_a,
                                       threshold=threshold, min_distance_a=min_distance_a if local else
                                       max(min_distance_a, GREEDY_DISTANCE_A), local_maxima=local)
            if len(cands) >= n_res or threshold / 2 < MIN_CA_THRESHOLD:
                break
            threshold /= 2
        if len(cands) >= n_res:
            break
    peaks = "local maxima" if local else "greedy"
    if len(cands) < n_res:
        raise InputError(map_path, f"only {len(cands)} Cα candidates above {threshold:.3g} for {n_res} residues "
                                   "(the map is not of this sequence, or is too small for it)")
    chains, _ = trace_backbone(cands, sequences)
    prov = make_provenance("model-build", {"checkpoint": summary["checkpoint"], "threshold": threshold,
                                           "min_distance_a": min_distance_a},
                           [map_path, sequence_path], argv=argv)
    write_traced_model(out, chains, kind, provenance=prov)
    result: dict[str, Any] = {"model": str(out), "prediction_dir": str(pred_dir), "candidates": len(cands),
                              "threshold": threshold, "threshold_requested": requested,
                              "candidate_peaks": peaks,
                              "residues": n_res, "chains": len(chains)}
    if reference is not None:
        result["comparison"] = compare_with_reference(out, reference)
    with atomic_path(out.with_name(out.stem + "_model_build.json")) as tmp:
        tmp.write_text(json.dumps({**result, "provenance": prov}, indent=2, default=str) + "\n")
    return result


def compare_with_reference(model: PathLike, reference: PathLike, max_distance_a: float = 3.0
                           ) -> Mapping[str, Any]:
    """RMSD, % matched and sequence identity of a Cα model against a reference model."""
    from cryoset.trace.compare import compare_ca
    from cryoset.trace.model import read_ca_table

    pred, ref = read_ca_table(model), read_ca_table(reference)
    cmp_ = compare_ca(pred[["x_a", "y_a", "z_a"]].to_numpy(), pred["residue_name"].to_numpy(),
                      ref[["x_a", "y_a", "z_a"]].to_numpy(), ref["residue_name"].to_numpy(),
                      max_distance_a=max_distance_a)
    return cmp_.to_dict()
