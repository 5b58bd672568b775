"""The SSL corpus: held-out proteins and acquisition settings never in train, annotations that
match the simulation, normalised images at one box, real micrograph crops in train only, and
the same stores from the same seed."""

from __future__ import annotations

import json
from pathlib import Path

import gemmi
import numpy as np
import pytest

from cryoset.store.dataset import ParticleStore
from cryoset.workflows.ssl_corpus import (
    PROTEIN_GROUPS,
    SSLCorpusOptions,
    build_ssl_corpus,
    micrograph_crops,
    plan_experiments,
    real_structures,
)

TINY = SSLCorpusOptions(particles_per_experiment=4, box_px=32, procedural_proteins=2, procedural_length_range=(40, 50),
                        heldout_real_groups=3, heldout_procedural=1, crops_per_micrograph=3, seed=7)
SETTING_COLUMNS = ["pixel_size_a", "voltage_kv", "defocus_min_a", "defocus_max_a", "dose_e_per_a2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:  # type: ignore[type-arg]
    from cryoset.testing import require_shared_data

    shared = require_shared_data("structures")
    require_shared_data("micrographs", "empiar_10028")
    out = tmp_path_factory.mktemp("ssl") / "corpus"
    summary = build_ssl_corpus(shared.parent, out, TINY)
    return out, summary


def _chain_kmers(path: Path) -> list[set[str]]:
    st = gemmi.read_structure(str(path))
    st.setup_entities()
    out = []
    for ch in st[0]:
        seq = gemmi.one_letter_code([r.name for r in ch.get_polymer()])
        if len(seq) >= 10:
            out.append({seq[i:i + 5] for i in range(len(seq) - 4)})
    return out


def test_proteins_sharing_chains_are_grouped(corpus: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    """Any two real models with a chain in common (> 50 % of its 5-mers) are in one protein group,
    so splitting groups never puts one chain in both stores."""
    from cryoset.testing import require_shared_data

    models = real_structures(require_shared_data())
    kmers = {stem: _chain_kmers(p) for stem, p in models.items()}
    stems = sorted(kmers)
    for i, a in enumerate(stems):
        for b in stems[i + 1:]:
            shared = any(len(ka & kb) > 0.5 * min(len(ka), len(kb)) for ka in kmers[a] for kb in kmers[b])
            if shared:
                assert PROTEIN_GROUPS.get(a, a) == PROTEIN_GROUPS.get(b, b), (a, b)
    assert PROTEIN_GROUPS["adk_open"] == PROTEIN_GROUPS["adk_closed"]


def test_heldout_proteins_and_settings_are_never_in_train(corpus: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    out, summary = corpus
    train = ParticleStore.open(out / "train-store")
    held = ParticleStore.open(out / "heldout-store")
    tr = train.query("SELECT * FROM particles")
    he = held.query("SELECT * FROM particles")
    sim = tr[tr["source"] == "simulated"]
    assert set(sim["structure"]).isdisjoint(set(he["structure"]))
    assert set(sim["sample_name"]).isdisjoint(set(he["sample_name"]))
    combos_tr = set(map(tuple, sim[SETTING_COLUMNS].drop_duplicates().to_numpy().tolist()))
    combos_he = set(map(tuple, he[SETTING_COLUMNS].drop_duplicates().to_numpy().tolist()))
    assert combos_tr.isdisjoint(combos_he)
    # every held-out protein is imaged under two settings, each setting of the reserved grid part
    per = he.groupby("structure")["acquisition"].nunique()
    assert (per == TINY.settings_per_structure).all()
    assert set(he["acquisition"]) <= set(summary["heldout_settings"])
    assert he["structure"].nunique() == 3 + 1 == len(summary["heldout_structures"])
    # micrograph crops only in train; labels of the simulated rows are complete
    assert set(he["source"]) == {"simulated"}
    assert (tr["source"] == "micrograph").sum() == summary["micrograph_crops"] == 7 * TINY.crops_per_micrograph
    assert summary["train_particles"] == len(tr) and summary["heldout_particles"] == len(he)
    for frame in (sim, he):
        assert frame["structure"].notna().all() and frame["defocus_a"].notna().all()
        assert (frame["image_size_px"] == TINY.box_px).all()
    experiments = json.loads((out / "summary.json").read_text())
    assert experiments["train_structures"] == summary["train_structures"]


def test_annotations_match_the_simulated_acquisition(corpus: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    out, _ = corpus
    he = ParticleStore.open(out / "heldout-store").query("SELECT * FROM particles")
    assert np.allclose(he["defocus_a"], 0.5 * (he["defocus_u_a"] + he["defocus_v_a"]), rtol=1e-6)
    half = TINY.astigmatism_a / 2
    assert (he["defocus_a"] >= he["defocus_min_a"] - 1).all() and (he["defocus_a"] <= he["defocus_max_a"] + 1).all()
    assert (he["astigmatism_a"] <= 2 * half + 1).all()
    assert np.allclose(he["snr"], TINY.snr_at_40_e * he["dose_e_per_a2"] / 40, rtol=1e-6)
    assert set(he["split"]) == {"test"}


def test_images_are_normalised_like_extracted_particles(corpus: tuple[Path, dict]) -> None:  # type: ignore[type-arg]
    out, _ = corpus
    for name in ("train-store", "heldout-store"):
        store = ParticleStore.open(out / name)
        for exp in store.experiments():
            img = store.read_images(exp, np.arange(store.num_particles(exp)))
            assert img.shape[1:] == (TINY.box_px, TINY.box_px)
            yy, xx = np.mgrid[:TINY.box_px, :TINY.box_px] - TINY.box_px // 2
            bg = img[:, (xx * xx + yy * yy) > (0.375 * TINY.box_px) ** 2]
            # uint8 storage: mean 0, sd 1 outside the circle up to the quantisation
            assert np.abs(bg.mean(axis=1)).max() < 0.05
            assert np.abs(bg.std(axis=1) - 1).max() < 0.05


def test_same_seed_same_stores_other_seed_other_stores(corpus: tuple[Path, dict],  # type: ignore[type-arg]
                                                       tmp_path: Path) -> None:
    out, _ = corpus
    again = tmp_path / "again"
    build_ssl_corpus(_shared(), again, TINY)
    for name in ("train-store", "heldout-store"):
        a, b = ParticleStore.open(out / name), ParticleStore.open(again / name)
        assert a.experiments() == b.experiments()
        for exp in a.experiments():
            rows = np.arange(a.num_particles(exp))
            for x, y in zip(a.read_stored(exp, rows), b.read_stored(exp, rows), strict=True):
                assert np.array_equal(x, y)
            assert a.annotations(exp).equals(b.annotations(exp))
    assert (out / "experiments.csv").read_bytes() == (again / "experiments.csv").read_bytes()
    other = SSLCorpusOptions(**{**TINY.__dict__, "seed": 8})
    stems = [*real_structures(_shared()), "proc_00", "proc_01"]
    exps_other, _, _ = plan_experiments(stems, other)
    exps_same, _, _ = plan_experiments(stems, TINY)
    assert [e.experiment_id for e in exps_other] != [e.experiment_id for e in exps_same]


def _shared() -> Path:
    from cryoset.testing import require_shared_data

    return require_shared_data()


def test_micrograph_crops_are_inverted_windows_marked_near_labels() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 5.0, (200, 300)).astype(np.float32)
    image[90:110, 140:160] = 40.0  # a dark "particle" centred at x=150, y=100
    crops, table = micrograph_crops(image, 400, 32, np.random.default_rng(1),
                                    particle_xy=np.array([[150.0, 100.0]]), diameter_px=20.0)
    assert crops.shape == (400, 32, 32)
    assert (table["x_px"] >= 16).all() and (table["x_px"] <= 300 - 16).all()
    assert (table["y_px"] >= 16).all() and (table["y_px"] <= 200 - 16).all()
    near = table["labelled_particle"].to_numpy() == 1
    d = np.hypot(table["x_px"].to_numpy() - 150, table["y_px"].to_numpy() - 100)
    assert np.array_equal(near, d <= 10)
    assert near.any()
    # a window centred on the dark particle shows it white (contrast inverted)
    k = int(np.argmin(d))
    assert crops[k, 16, 16] > 3


def test_cli_refuses_a_missing_shared_data_folder(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, stdout, stderr = run_cli("train", "ssl-corpus", "--shared-data", tmp_path / "nope", "-o", tmp_path / "c")
    assert code == 2
    assert "nope" in (stdout + stderr) and "Traceback" not in (stdout + stderr)
    assert not (tmp_path / "c").exists()
