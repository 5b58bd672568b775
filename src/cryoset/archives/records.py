"""Catalogue hand-off: what the archive clients learn, as one experiment row.

A row is a flat dict (JSON/Parquet friendly) that the catalogue (``cryoset.catalog``)
takes as an experiment record, so a dataset build can start from a list of ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cryoset.archives.emdb import EmdbEntry
from cryoset.archives.empiar import EmpiarEntry
from cryoset.archives.pdb import EntitySequence

#: Columns of an experiment record, in order.
EXPERIMENT_COLUMNS: tuple[str, ...] = (
    "experiment_id", "empiar_id", "emdb_ids", "pdb_ids", "title", "experiment_type",
    "micrograph_imageset", "num_micrographs", "micrograph_format", "pixel_size_a",
    "image_width_px", "image_height_px", "frames_per_image", "voltage_kv", "cs_mm",
    "dose_e_per_a2", "resolution_a", "symmetry", "molecular_weight_mda", "method",
    "sequences",
)


def _micrograph_set(entry: EmpiarEntry) -> Any:
    for s in entry.imagesets:
        if s.category.startswith("micrographs"):
            return s
    return entry.imagesets[0] if entry.imagesets else None


def experiment_record(
    empiar: EmpiarEntry | None,
    emdb: Sequence[EmdbEntry] = (),
    sequences: Mapping[str, Sequence[EntitySequence]] | None = None,
) -> dict[str, Any]:
    """Combine EMPIAR, EMDB and PDB metadata into one experiment row.

    The micrograph imageset is the first whose category starts with ``micrographs``.
    Acquisition parameters and resolution come from the first EMDB entry that has them.
    ``sequences`` maps PDB id → entity sequences; the row lists unique sequences.
    """
    if empiar is None and not emdb:
        raise ValueError("empiar: need an EMPIAR entry or at least one EMDB entry")
    mset = _micrograph_set(empiar) if empiar is not None else None

    def first(attr: str) -> Any:
        for e in emdb:
            value = getattr(e, attr)
            if value not in (None, ""):
                return value
        return None

    pdb_ids = sorted({p for e in emdb for p in e.pdb_ids} | set((sequences or {}).keys()))
    seqs = sorted({s.sequence for lst in (sequences or {}).values() for s in lst if s.sequence})
    emdb_ids = [f"EMD-{e.emdb_id}" for e in emdb]
    if empiar is not None:
        emdb_ids = sorted(set(emdb_ids) | set(empiar.emdb_ids))
    return {
        "experiment_id": f"EMPIAR-{empiar.empiar_id}" if empiar is not None else emdb_ids[0],
        "empiar_id": empiar.empiar_id if empiar is not None else "",
        "emdb_ids": emdb_ids,
        "pdb_ids": pdb_ids,
        "title": empiar.title if empiar is not None else (first("title") or ""),
        "experiment_type": empiar.experiment_type if empiar is not None else "",
        "micrograph_imageset": mset.name if mset else "",
        "num_micrographs": mset.num_images if mset else None,
        "micrograph_format": mset.data_format if mset else "",
        "pixel_size_a": mset.pixel_width_a if mset else None,
        "image_width_px": mset.image_width_px if mset else None,
        "image_height_px": mset.image_height_px if mset else None,
        "frames_per_image": mset.frames_per_image if mset else None,
        "voltage_kv": first("voltage_kv"),
        "cs_mm": first("cs_mm"),
        "dose_e_per_a2": first("dose_e_per_a2"),
        "resolution_a": first("resolution_a"),
        "symmetry": first("symmetry") or "",
        "molecular_weight_mda": first("molecular_weight_mda"),
        "method": first("method") or "",
        "sequences": seqs,
    }
