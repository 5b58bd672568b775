"""Cryo2StructData's per-entry files in both directions (issue #24): the ``.npz`` sub-grids in the
published box order (axis 0 fastest, re-stated from the published grid division), and the
sequence files (deposited FASTA, combined and atomic sequences, Clustal alignment)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cryoset.datasets.cryo2struct import (
    published_box_order,
    read_entry_sequences,
    read_npz_subgrid_files,
    subsequence_alignment,
    write_entry_sequences,
    write_npz_subgrids,
)
from cryoset.errors import InputError
from cryoset.learn.published import NpzSubgridDataset
from cryoset.maps.subgrids import split, stitch

SHAPE = (45, 50, 33)


def _published_manifest(full: np.ndarray) -> list[np.ndarray]:
    """The published division: pad 32 with zeros, start at 26, step 20, axis 0 fastest."""
    box, core = 32, 20
    s = full.shape
    padded = np.zeros((s[0] + 2 * box, s[1] + 2 * box, s[2] + 2 * box))
    padded[box:box + s[0], box:box + s[1], box:box + s[2]] = full
    start = box - (box - core) // 2
    x = y = z = start
    out = []
    while z + (box - core) / 2 < s[2] + box:
        out.append(padded[x:x + box, y:y + box, z:z + box])
        x += core
        if x + (box - core) / 2 >= s[0] + box:
            y += core
            x = start
            if y + (box - core) / 2 >= s[1] + box:
                z += core
                y = start
                x = start
    return out


@pytest.fixture()
def volumes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    density = rng.random(SHAPE, dtype=np.float32)
    backbone = rng.integers(0, 4, SHAPE).astype(np.uint8)
    amino = rng.integers(0, 21, SHAPE).astype(np.uint8)
    return density, backbone, amino


def test_npz_files_follow_the_published_box_order(volumes: tuple[np.ndarray, ...], tmp_path: Path) -> None:
    density, backbone, amino = volumes
    files = write_npz_subgrids(tmp_path, "EMD-5168", density, {"backbone": backbone, "amino": amino})
    manifest = _published_manifest(density)
    atom_manifest = _published_manifest(backbone.astype(np.float32))
    assert len(files) == len(manifest) == 3 * 3 * 2
    for i, f in enumerate(files):
        assert f.name == f"EMD-5168_{i}.npz"
        with np.load(f) as z:
            assert sorted(z.files) == ["amino_grid", "atom_grid", "protein_grid"]
            assert np.array_equal(z["protein_grid"], manifest[i].astype(np.float32))
            assert np.array_equal(z["atom_grid"], atom_manifest[i].astype(np.float32))
    order = published_box_order(SHAPE)
    assert sorted(order.tolist()) == list(range(18)) and order[:3].tolist() == [0, 6, 12]


def test_npz_read_back_is_our_order_and_stitches_to_the_map(volumes: tuple[np.ndarray, ...], tmp_path: Path) -> None:
    density, backbone, amino = volumes
    write_npz_subgrids(tmp_path / "npz", "EMD-5168", density, {"backbone": backbone, "amino": amino})
    arrays = read_npz_subgrid_files(tmp_path / "npz", SHAPE)
    assert np.array_equal(arrays["density"], split(density)[0])  # theirs train ours: same tensors
    assert np.array_equal(stitch(arrays["density"], SHAPE), density)
    assert np.array_equal(stitch(arrays["backbone"], SHAPE).astype(np.uint8), backbone)
    assert np.array_equal(stitch(arrays["amino"], SHAPE).astype(np.uint8), amino)
    ds = NpzSubgridDataset(sorted((tmp_path / "npz").glob("*.npz")))
    x, labels = ds[0]
    assert tuple(x.shape) == (1, 32, 32, 32) and set(labels) == {"backbone", "amino"}
    (tmp_path / "npz" / "EMD-5168_3.npz").unlink()
    with pytest.raises(InputError, match="first missing: 3"):
        read_npz_subgrid_files(tmp_path / "npz", SHAPE)


def test_entry_sequence_files_round_trip(tmp_path: Path) -> None:
    deposited = {"3MFP_1|Chain A|Actin|Homo sapiens": "MDDDIAALVVDNGSGMCKAGFAGDDAPRAVFPSIV",
                 "3MFP_2|Chain B|Cofilin|Homo sapiens": "MASGVAVSDGV"}
    atomic = "DIAALVVDNGSGMCKAGFAGDDAPRAVFPSIVASGVAVSDG"
    files = write_entry_sequences(tmp_path, "3MFP", deposited, atomic)
    assert [f.name for f in files] == ["3mfp.fasta", "3mfp_all_chain_combined.fasta", "atomic.fasta",
                                       "dealign_clustal_input.fasta", "dealign_clustal_output.fasta"]
    seqs = read_entry_sequences(tmp_path)
    assert seqs.deposited == deposited and seqs.atomic == atomic
    assert seqs.combined == "".join(deposited.values())
    assert seqs.alignment is not None
    assert seqs.alignment["original"] == seqs.combined
    assert seqs.alignment["atom"].replace("-", "") == atomic
    assert seqs.alignment == subsequence_alignment(seqs.combined, atomic)
    with pytest.raises(InputError, match="subsequence"):
        subsequence_alignment("MKT", "MKW")
