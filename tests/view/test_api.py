"""``cryoset view``'s JSON API (Starlette's TestClient, no browser): every write, the version
conflict, and the files equal to what the command line writes for the same decisions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("starlette")
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx`")

from starlette.testclient import TestClient  # noqa: E402

from cryoset.view.app import create_app  # noqa: E402
from cryoset.view.project import CACHE_DIR  # noqa: E402

from .conftest import DIAMETER_A  # noqa: E402


def _client(project: Path) -> TestClient:
    return TestClient(create_app(project), raise_server_exceptions=False)


def _content(path: Path) -> str:
    """A text file without its provenance comment lines (they hold times and command lines)."""
    return "\n".join(line for line in path.read_text().splitlines() if not line.startswith("# cryoset provenance"))


def _files(folder: Path) -> dict[str, str]:
    return {p.name: _content(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix in (".star", ".csv")}


def test_micrograph_list_image_and_picks(project: Path) -> None:
    from cryoset.io.coords import read_coords

    c = _client(project)
    mics = c.get("/api/micrographs").json()["micrographs"]
    ctf = pd.read_csv(project / "ctf" / "ctf.csv")
    scores = pd.read_parquet(project / "picks" / "picks_scores.parquet")
    assert [m["key"] for m in mics] == ["micrograph_0000", "micrograph_0001"]
    for m, row in zip(mics, ctf.to_dict("records"), strict=True):
        assert m["fit_resolution_a"] == pytest.approx(row["fit_resolution_a"])
        assert m["defocus_a"] == pytest.approx((row["defocus_u_a"] + row["defocus_v_a"]) / 2)
        mine = scores[scores["micrograph"] == m["name"]]
        assert m["picks"] == int((mine["Reason"] == "").sum())
        assert m["picks"] == len(read_coords(project / "picks" / f"{m['key']}.star"))
    r = c.get("/api/micrographs/micrograph_0000/image.png?contrast=2.5&lowpass_a=15")
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    from io import BytesIO

    from PIL import Image

    assert Image.open(BytesIO(r.content)).size == (512, 512)  # 512 px: no binning
    cached = list((project / CACHE_DIR / "cache").glob("micrograph_0000_*_c2.5_lp15.png"))
    assert len(cached) == 1 and cached[0].read_bytes() == r.content
    assert c.get("/api/micrographs/micrograph_0000/image.png?contrast=2.5&lowpass_a=15").content == r.content
    p = c.get("/api/micrographs/micrograph_0000/picks").json()
    assert p["diameter_px"] == pytest.approx(DIAMETER_A / 1.5)
    assert (p["nx"], p["ny"], p["bin"]) == (512, 512, 1)
    fps = [q for q in p["picks"] if q["reason"]]
    assert fps and all(q["reason"] == "on carbon/ice mask" for q in fps)
    assert c.get("/api/micrographs/micrograph_0000/ctf.png").content[:4] == b"\x89PNG"


def test_add_remove_pick_and_version_conflict(project: Path) -> None:
    from cryoset.io.coords import read_coords

    c = _client(project)
    star = project / "picks" / "micrograph_0000.star"
    before = read_coords(star)
    p = c.get("/api/micrographs/micrograph_0000/picks").json()
    r = c.post("/api/micrographs/micrograph_0000/picks",
               json={"action": "add", "x_px": 250.0, "y_px": 260.0, "version": p["version"]})
    assert r.status_code == 200, r.text
    added = r.json()
    after = read_coords(star)
    assert len(after) == len(before) + 1
    assert ((after["x_px"] - 250).abs() < 1e-3).any() and ((after["y_px"] - 260).abs() < 1e-3).any()
    # reloading shows the saved state
    again = c.get("/api/micrographs/micrograph_0000/picks").json()
    assert again["version"] == added["version"] != p["version"]
    assert any(abs(q["x_px"] - 250) < 1e-3 and abs(q["y_px"] - 260) < 1e-3 for q in again["picks"])
    # a second tab with the old version: 409, a clear message, nothing written
    stale = c.post("/api/micrographs/micrograph_0000/picks",
                   json={"action": "add", "x_px": 100.0, "y_px": 100.0, "version": p["version"]})
    assert stale.status_code == 409
    assert "changed since you loaded them" in stale.json()["error"]
    assert len(read_coords(star)) == len(after)
    # remove the pick just added (a click within the radius)
    r = c.post("/api/micrographs/micrograph_0000/picks",
               json={"action": "remove", "x_px": 252.0, "y_px": 258.0, "version": added["version"]})
    assert r.status_code == 200, r.text
    final = read_coords(star)
    assert len(final) == len(before)
    np.testing.assert_allclose(final[["x_px", "y_px"]].to_numpy(), before[["x_px", "y_px"]].to_numpy())
    log = [json.loads(line) for line in (project / CACHE_DIR / "log.jsonl").read_text().splitlines()]
    assert [e["action"] for e in log] == ["pick add", "pick remove"] and all(e["user"] and e["utc"] for e in log)


def test_apply_thresholds_writes_what_cryoset_pick_writes(project: Path, tmp_path: Path) -> None:
    from cryoset.cli.main import main

    c = _client(project)
    p = c.get("/api/micrographs/micrograph_0001/picks").json()
    assert c.post("/api/micrographs/micrograph_0001/picks",
                  json={"action": "add", "x_px": 300.0, "y_px": 200.0, "version": p["version"]}).status_code == 200
    insp = c.get("/api/inspection").json()
    ncc = np.array([v for v in insp["ncc"] if v is not None])
    min_ncc = float(np.median(ncc))
    h = insp["histograms"]["ncc"]
    assert sum(h["counts"]) == len(ncc) and len(h["edges"]) == len(h["counts"]) + 1
    r = c.post("/api/inspection/apply", json={"min_ncc": min_ncc, "max_power": 50.0})
    assert r.status_code == 200, r.text
    applied = r.json()
    cand = Path(applied["candidates"])
    assert cand.is_dir() and cand.parent == project / CACHE_DIR
    # the same decisions on the command line
    mics = sorted((project / "sim" / "micrographs").glob("*.mrc"))
    other = tmp_path / "cli_picks"
    code = main(["pick", *map(str, mics), "--diameter-a", str(DIAMETER_A), "--method", "import",
                 "--import-dir", str(cand), "--mask-dir", str(project / "sim" / "masks"),
                 "--min-ncc", repr(min_ncc), "--max-power", "50", "--out", str(other)])
    assert code == 0
    assert _files(project / "picks") == _files(other)
    pd.testing.assert_frame_equal(pd.read_parquet(project / "picks" / "picks_scores.parquet"),
                                  pd.read_parquet(other / "picks_scores.parquet"))
    fp = pd.read_csv(project / "picks" / "false_positives.csv")
    assert (fp["Reason"] == f"NCC below {min_ncc:g}").sum() > 0
    assert applied["picks"] + applied["rejected"] == len(pd.read_parquet(other / "picks_scores.parquet"))
    prov = json.loads((project / "picks" / "provenance.json").read_text())
    assert prov["parameters"]["min_ncc"] == min_ncc and prov["parameters"]["method"] == "import"
    # the page's state after a reload: thresholds in force, the NCC rejections
    insp = c.get("/api/inspection").json()
    assert insp["thresholds"]["min_ncc"] == min_ncc
    mics_json = c.get("/api/micrographs").json()["micrographs"]
    assert sum(m["picks"] for m in mics_json) == applied["picks"]


def test_reject_micrographs_by_ctf_fit(project: Path) -> None:
    c = _client(project)
    res = pd.read_csv(project / "ctf" / "ctf.csv")["fit_resolution_a"]
    cut = float(res.min() + res.max()) / 2
    r = c.post("/api/inspection/apply", json={"max_ctf_resolution_a": cut})
    assert r.status_code == 200, r.text
    fp = pd.read_csv(project / "picks" / "false_positives.csv")
    worst = pd.read_csv(project / "ctf" / "ctf.csv").sort_values("fit_resolution_a").iloc[-1]
    assert (fp["Reason"] == f"CTF fit worse than {cut:g} A").sum() > 0
    assert set(fp.loc[fp["Reason"].str.startswith("CTF"), "Micrographs Filename"]) == {worst["micrograph"]}


def test_class_selection_writes_kept_particles(project: Path) -> None:
    from cryoset.io.particles import read_particles

    d = project / "classes"
    c = _client(project)
    cl = c.get("/api/classes").json()
    assert [k["class_number"] for k in cl["classes"]] == [1, 2, 3]
    stats = pd.read_csv(d / "classes.csv")
    for k, row in zip(cl["classes"], stats.to_dict("records"), strict=True):
        assert k["population"] == row["population"] and k["verdict"] == row["verdict"]
        assert k["keep"] == (row["verdict"] == "good") and k["ess"] > 0 and k["eca"] > 0
    assert c.get("/api/classes/2/image.png").content[:4] == b"\x89PNG"
    original = read_particles(d / "particles_kept.star").table
    # the junk rule's own selection, saved: classify2d's files, unchanged
    r = c.post("/api/classes/selection", json={"keep": [k["class_number"] for k in cl["classes"] if k["keep"]],
                                               "keep_recovered": True, "version": cl["version"]})
    assert r.status_code == 200, r.text
    pd.testing.assert_frame_equal(read_particles(d / "particles_kept.star").table, original, check_like=True)
    # reject class 2
    saved = r.json()
    r = c.post("/api/classes/selection", json={"keep": [1, 3], "keep_recovered": True, "version": saved["version"]})
    assert r.status_code == 200, r.text
    table = read_particles(d / "particles.star").table
    kept = read_particles(d / "particles_kept.star").table
    assert (table["rlnCryosetKept"] == 1).sum() == len(kept) == (table["class_number"] != 2).sum()
    pd.testing.assert_frame_equal(kept, table[table["class_number"] != 2].reset_index(drop=True))
    sel = pd.read_csv(d / "particles_selected.csv")
    assert len(sel) == len(kept)
    record = json.loads((d / "class_selection.json").read_text())
    assert record["keep"] == [1, 3] and record["user"] and record["utc"] and record["kept"] == len(kept)
    assert json.loads((d / "class_selection.json.provenance.json").read_text())["command"] == "view select classes"
    # reload: the saved selection; a stale tab: 409
    again = c.get("/api/classes").json()
    assert [k["keep"] for k in again["classes"]] == [True, False, True]
    stale = c.post("/api/classes/selection", json={"keep": [1], "version": cl["version"]})
    assert stale.status_code == 409 and "reload" in stale.json()["error"]
    assert len(read_particles(d / "particles_kept.star").table) == len(kept)


@pytest.mark.parametrize(("method", "path", "body", "status", "needle"), [
    ("get", "/api/micrographs/nope/picks", None, 404, "no micrograph 'nope'"),
    ("get", "/api/micrographs/micrograph_0000/image.png?contrast=abc", None, 400, "'contrast' must be a number"),
    ("get", "/api/micrographs/micrograph_0000/image.png?contrast=100", None, 400, "contrast must be between"),
    ("post", "/api/micrographs/micrograph_0000/picks", b"{not json", 400, "not JSON"),
    ("post", "/api/micrographs/micrograph_0000/picks", {"action": "move"}, 400, "'action' must be"),
    ("post", "/api/micrographs/micrograph_0000/picks", {"action": "add", "x_px": 1e9, "y_px": 3, "version": ""},
     400, "outside the micrograph"),
    ("post", "/api/inspection/apply", {"min_ncc": "high"}, 400, "'min_ncc' must be a finite number"),
    ("post", "/api/classes/selection", {"keep": [9], "version": ""}, 409, "changed since"),
    ("get", "/api/classes/99/image.png", None, 404, "no class 99"),
    ("get", "/api/nothing", None, 404, "Not Found"),
])
def test_bad_requests_get_one_line_json(project: Path, method: str, path: str, body: object, status: int,
                                        needle: str) -> None:
    c = _client(project)
    if method == "get":
        r = c.get(path)
    elif isinstance(body, bytes):
        r = c.post(path, content=body)
    else:
        r = c.post(path, json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error and "\n" not in error and "Traceback" not in r.text


def test_page_and_static_files_are_served(project: Path) -> None:
    c = _client(project)
    page = c.get("/")
    assert page.status_code == 200 and "cryoset view" in page.text
    for name in ("app.js", "style.css"):
        assert c.get(f"/static/{name}").status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from the internet


def test_an_unexpected_error_is_one_line_json(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryoset.view import project as module

    def broken(self: object) -> None:
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(module.Project, "micrographs", broken)
    r = _client(project).get("/api/micrographs")
    assert r.status_code == 500
    assert r.json()["error"].startswith("internal error (RuntimeError: disk on fire second line)")
    assert "Traceback" not in r.text


def test_a_port_in_use_is_one_line_exit_2(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from cryoset.cli.main import main

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["view", str(project), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --port: cannot serve on 127.0.0.1:")


def test_bad_project_folder_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryoset.cli.main import main

    (tmp_path / "empty").mkdir()
    assert main(["view", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "empty" in err and "\n" not in err


def test_png_micrographs_keep_their_pixel_size_across_applies(project_template: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A PNG has no pixel size: the view takes ``pick``'s ``--pixel-size-a`` from its command
    line and keeps it for later applies (run_pick's record does not hold it)."""
    from cryoset.cli.main import main
    from cryoset.io.images import read_image, write_png

    mic = tmp_path / "mics" / "mic.png"
    write_png(mic, read_image(project_template / "sim" / "micrographs" / "micrograph_0000.mrc").data)
    project = tmp_path / "png_project"
    monkeypatch.setattr("sys.argv", ["cryoset", "pick", str(mic), "--pixel-size-a", "1.5"])
    assert main(["pick", str(mic), "--pixel-size-a", "1.5", "--diameter-a", str(DIAMETER_A),
                 "--out", str(project / "picks")]) == 0
    c = _client(project)
    assert c.get("/api/micrographs/mic/picks").json()["diameter_px"] == pytest.approx(DIAMETER_A / 1.5)
    assert c.get("/api/micrographs/mic/image.png").status_code == 200
    for min_ncc in (0.05, 0.02):  # the second apply reads the first's record
        r = c.post("/api/inspection/apply", json={"min_ncc": min_ncc})
        assert r.status_code == 200, r.text
    cand = Path(r.json()["candidates"])
    other = tmp_path / "cli"
    assert main(["pick", str(mic), "--pixel-size-a", "1.5", "--diameter-a", str(DIAMETER_A), "--method",
                 "import", "--import-dir", str(cand), "--min-ncc", "0.02", "--out", str(other)]) == 0
    assert _files(project / "picks") == _files(other)


def _store_flags(project: Path) -> pd.DataFrame:
    """``cryoset query`` of the store's ``selection`` view joined to the particles' positions."""
    from cryoset.cli.main import main

    out = project / "flags.parquet"
    sql = ("SELECT p.micrograph, p.x_px, p.y_px, s.kept FROM particles p "
           "JOIN selection s USING (experiment_id, particle_index)")
    assert main(["query", sql, "--store", str(project / "store"), "--out", str(out)]) == 0
    return pd.read_parquet(out)


def _by_position(table: pd.DataFrame) -> pd.Series:
    return pd.Series([str(m) for m in table["micrograph"]], index=pd.MultiIndex.from_arrays(
        [[str(m) for m in table["micrograph"]]]
        + [np.round(table[c].to_numpy(np.float32).astype(np.float64), 2) for c in ("x_px", "y_px")]))


def test_store_classification_selection_sets_the_store_kept_flags(store_project: Path) -> None:
    from cryoset.io.particles import read_particles
    from cryoset.store import ParticleStore

    d = store_project / "classes"
    c = _client(store_project)
    original = _content(d / "particles_kept.star")
    table = read_particles(d / "particles.star").table
    cl = c.get("/api/classes").json()
    assert cl["store"] == str((store_project / "store").resolve())
    assert not (store_project / "store" / "selection.parquet").exists()
    # the junk rule's own choice: classify2d's kept STAR unchanged, the store flags = its rlnCryosetKept
    r = c.post("/api/classes/selection", json={"keep": [k["class_number"] for k in cl["classes"] if k["keep"]],
                                               "keep_recovered": True, "version": cl["version"]})
    assert r.status_code == 200, r.text
    assert _content(d / "particles_kept.star") == original
    # reject class 1 (good by the rule)
    r = c.post("/api/classes/selection", json={"keep": [2], "keep_recovered": True, "version": r.json()["version"]})
    assert r.status_code == 200, r.text
    table = read_particles(d / "particles.star").table
    expected = (table["class_number"] == 2) | (table["rlnCryosetRecovered"] == 1)
    assert (table["rlnCryosetKept"] == 1).tolist() == expected.tolist()
    kept = read_particles(d / "particles_kept.star").table
    pd.testing.assert_frame_equal(kept, table[expected].reset_index(drop=True))
    flags = _store_flags(store_project)
    store = ParticleStore.open(store_project / "store")
    assert len(flags) == len(table) < store.num_particles("demo")  # the query's subset only
    # every particle of the classification: its store flag is its kept flag (matched by position)
    want = pd.Series(expected.to_numpy(), index=_by_position(table).index)
    got = pd.Series(flags["kept"].to_numpy(), index=_by_position(flags).index)
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False)
    rejected = flags.loc[~flags["kept"].to_numpy()]
    assert len(rejected) == int((~expected).sum()) > int((table["class_number"] == 3).sum())  # class 1 went too
    # reload: the saved state
    again = c.get("/api/classes").json()
    assert [k["keep"] for k in again["classes"]] == [False, True, False]
    assert again["kept"] == int(expected.sum())
    prov = json.loads(pq_metadata(store_project / "store" / "selection.parquet"))
    assert prov["command"] == "view select classes" and prov["parameters"]["keep"] == [2]


def pq_metadata(path: Path) -> str:
    import pyarrow.parquet as pq

    return pq.read_schema(path).metadata[b"cryoset_provenance"].decode()


def test_recovery_view_accepts_or_drops_recovery_per_class(store_project: Path) -> None:
    from cryoset.io.particles import read_particles

    d = store_project / "classes"
    c = _client(store_project)
    table = read_particles(d / "particles.star").table
    recovered = table[table["rlnCryosetRecovered"] == 1]
    assert len(recovered) > 0
    rv = c.get("/api/recovery").json()
    assert rv["recovered"] == len(recovered)
    assert [g["class_number"] for g in rv["classes"]] == sorted(set(recovered["class_number"]))
    verdicts = dict(zip(*(pd.read_csv(d / "classes.csv")[k] for k in ("class_number", "verdict")), strict=True))
    for g in rv["classes"]:
        mine = recovered[recovered["class_number"] == g["class_number"]]
        assert g["verdict"] == verdicts[g["class_number"]] != "good" and g["accepted"]
        assert [p["row"] for p in g["particles"]] == mine.index.tolist()
        assert [p["ess"] for p in g["particles"]] == pytest.approx(mine["rlnCryosetPoseEss"].tolist())
        assert [p["max_prob"] for p in g["particles"]] == pytest.approx(mine["max_prob"].tolist())
        assert all(p["kept"] for p in g["particles"])
        assert c.get(f"/api/classes/{g['class_number']}/image.png").content[:4] == b"\x89PNG"
    # drop the recovery of the first class: its recovered particles leave the kept STAR (and the store)
    j = rv["classes"][0]["class_number"]
    rest = [g["class_number"] for g in rv["classes"][1:]]
    r = c.post("/api/classes/selection", json={"keep": rv["keep"], "recovered_classes": rest,
                                               "version": rv["version"]})
    assert r.status_code == 200, r.text
    table = read_particles(d / "particles.star").table
    good = table["class_number"].isin(rv["keep"])
    expected = good | ((table["rlnCryosetRecovered"] == 1) & table["class_number"].isin(rest))
    assert (table["rlnCryosetKept"] == 1).tolist() == expected.tolist()
    # the same writer as a class choice that keeps no recovered particle of class j
    pd.testing.assert_frame_equal(read_particles(d / "particles_kept.star").table,
                                  table[expected].reset_index(drop=True))
    flags = _store_flags(store_project)
    assert int(flags["kept"].sum()) == int(expected.sum())
    again = c.get("/api/recovery").json()
    assert again["recovered_classes"] == rest
    assert [g["accepted"] for g in again["classes"]] == [g["class_number"] != j for g in again["classes"]]
    assert not any(p["kept"] for p in again["classes"][0]["particles"])
    bad = c.post("/api/classes/selection", json={"keep": rv["keep"], "recovered_classes": [True],
                                                 "version": again["version"]})
    assert bad.status_code == 400 and "'recovered_classes'" in bad.json()["error"]
