"""The store's kept flags (``selection.parquet``, the ``selection`` view)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoset.errors import InputError
from cryoset.store.dataset import ParticleStore


@pytest.fixture
def store(tmp_path: Path) -> ParticleStore:
    rng = np.random.default_rng(4)
    st = ParticleStore.create(tmp_path / "store", chunk_particles=8)
    for name, n in (("A", 6), ("B", 4)):
        ann = pd.DataFrame({"pixel_size_a": 1.5, "voltage_kv": 300.0, "defocus_u_a": rng.uniform(8000, 30000, n),
                            "defocus_v_a": rng.uniform(8000, 30000, n), "defocus_angle_deg": 0.0})
        st.add_experiment(name, rng.standard_normal((n, 16, 16)).astype(np.float32), ann)
    return ParticleStore.open(tmp_path / "store")


def test_two_selections_merge_and_the_later_flag_wins(store: ParticleStore) -> None:
    assert store.read_selection().empty
    assert store.write_selection(["A", "A", "A"], [0, 1, 2], [True, False, True]) == 3
    # a second decision: overlaps A/2 (flag changes), adds B/3, leaves A/0 and A/1 alone
    assert store.write_selection(["A", "B"], [2, 3], [False, True], provenance={"who": "test"}) == 4
    table = store.read_selection()
    assert table.to_dict("list") == {"experiment_id": ["A", "A", "A", "B"], "particle_index": [0, 1, 2, 3],
                                     "kept": [True, False, False, True]}
    got = store.query("SELECT experiment_id, particle_index, kept FROM selection ORDER BY 1, 2")
    assert got["kept"].tolist() == [True, False, False, True]
    # experiments themselves are untouched
    assert store.num_particles("A") == 6 and store.num_particles("B") == 4


@pytest.mark.parametrize(("exps", "idx", "kept", "message"), [
    (["A"], [6], [True], "outside experiment 'A'"),
    (["A"], [-1], [True], "outside experiment 'A'"),
    (["A", "A"], [1, 1], [True, False], "given twice"),
    (["A", "A"], [1], [True], "2 experiment ids, 1 indices"),
])
def test_bad_selections_are_refused_and_nothing_is_written(store: ParticleStore, exps: list[str], idx: list[int],
                                                           kept: list[bool], message: str) -> None:
    with pytest.raises(InputError, match=message):
        store.write_selection(exps, idx, kept)
    assert store.read_selection().empty
    assert not store.selection_path.exists()
