"""End to end in a real headless browser: Debian's Chromium driven by Selenium (the system
browser and driver; nothing downloaded). Skipped, with the reason, when either is absent
(``apt-get install chromium chromium-driver``; .ci/run installs them).

With ``CRYOSET_VIEW_SCREENSHOTS=DIR`` the test saves a screenshot of each view there
(docs/view-*.png were made so).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("selenium")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.skipif(not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
                       reason="needs the system Chromium and chromedriver "
                              "(apt-get install chromium chromium-driver)"),
    pytest.mark.slow,
]

from .conftest import DIAMETER_A  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(project: Path) -> Iterator[str]:
    import uvicorn

    from cryoset.view.app import create_app

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(project), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _stable_count(driver: Any, selector: str, polls: int = 5) -> int:
    """The number of elements matching ``selector`` once it has not changed for ``polls`` polls (0.1 s)."""
    import time

    counts: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        counts.append(len(driver.find_elements("css selector", selector)))
        if len(counts) >= polls and len(set(counts[-polls:])) == 1:
            return counts[-1]
        time.sleep(0.1)
    raise AssertionError(f"{selector}: count never settled ({counts[-polls:]})")


def _wait(driver: Any, condition: Any, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def _text(driver: Any, element_id: str) -> str:
    """The element's text, shown or not (a hidden tab's counters too)."""
    return str(driver.find_element("id", element_id).get_attribute("textContent")).strip()


def _shot(driver: Any, name: str) -> None:
    folder = os.environ.get("CRYOSET_VIEW_SCREENSHOTS")
    if folder:
        driver.save_screenshot(str(Path(folder) / f"view-{name}.png"))


def _click_at(driver: Any, x_px: float, y_px: float, nx: int, ny: int) -> None:
    """Click the micrograph at pixel (x, y)."""
    from selenium.webdriver.common.action_chains import ActionChains

    overlay = driver.find_element("id", "overlay")
    w, h = overlay.size["width"], overlay.size["height"]
    ActionChains(driver).move_to_element_with_offset(
        overlay, round((x_px / nx - 0.5) * w), round((y_px / ny - 0.5) * h)).click().perform()


def test_curation_in_the_browser(project: Path, server: str, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    from cryoset.cli.main import main
    from cryoset.io.coords import read_coords
    from cryoset.io.particles import read_particles

    d = browser
    d.get(server + "/")
    _wait(d, lambda d: len(d.find_elements("css selector", "#miclist tbody tr")) == 2)
    _wait(d, lambda d: _text(d, "passCount").isdigit() and len(d.find_elements("css selector", "#overlay circle")) > 0)
    _wait(d, lambda d: d.execute_script("return document.getElementById('mic').complete && "
                                        "document.getElementById('mic').naturalWidth") == 512)
    assert _text(d, "msg") == ""
    _shot(d, "micrographs")

    # keyboard navigation
    d.find_element("tag name", "body").send_keys("j")
    _wait(d, lambda d: "sel" in d.find_elements("css selector", "#miclist tbody tr")[1].get_attribute("class"))
    d.find_element("tag name", "body").send_keys("k")
    _wait(d, lambda d: "sel" in d.find_elements("css selector", "#miclist tbody tr")[0].get_attribute("class"))
    _wait(d, lambda d: "micrograph_0000" in _text(d, "micinfo"))

    # add a pick by clicking where there is none, then remove it by clicking it
    star = project / "picks" / "micrograph_0000.star"
    before = read_coords(star)
    scores = pd.read_parquet(project / "picks" / "picks_scores.parquet")
    mine = scores[scores["micrograph"] == "micrograph_0000.mrc"][["x_px", "y_px"]].to_numpy()
    grid = [(x, y) for x in range(60, 460, 20) for y in range(60, 460, 20)]
    free = max(grid, key=lambda p: np.min(np.hypot(mine[:, 0] - p[0], mine[:, 1] - p[1])))
    n_circles = _stable_count(d, "#overlay circle")  # the overlay of micrograph 0 fully drawn
    _click_at(d, *free, 512, 512)
    _wait(d, lambda d: _text(d, "msg") == "pick added and saved")
    _wait(d, lambda d: len(d.find_elements("css selector", "#overlay circle")) == n_circles + 1)
    after = read_coords(star)
    assert len(after) == len(before) + 1
    new = after[~after["x_px"].round(3).isin(before["x_px"].round(3))]
    assert len(new) == 1 and abs(new["x_px"].iloc[0] - free[0]) < 3 and abs(new["y_px"].iloc[0] - free[1]) < 3
    _click_at(d, *free, 512, 512)
    _wait(d, lambda d: _text(d, "msg") == "pick removed and saved")
    assert len(read_coords(star)) == len(before)
    assert len(d.find_elements("css selector", "#overlay circle")) == n_circles

    # inspection: move the NCC slider, see the count change, apply
    d.find_element("css selector", "button[data-tab=inspect]").click()
    _wait(d, lambda d: _text(d, "total").isdigit())
    all_pass = int(_text(d, "passCount"))
    slider = d.find_element("id", "min_ncc")
    slider.click()
    slider.send_keys(Keys.HOME)
    counts = []
    for _ in range(20):  # right until some picks fail and some still pass
        slider.send_keys(Keys.ARROW_RIGHT * 10)
        counts.append(int(_text(d, "passCount")))
        if 0 < counts[-1] < all_pass:
            break
    assert 0 < counts[-1] < all_pass, counts
    assert int(_text(d, "passCurrent")) <= counts[-1]
    assert d.find_element("id", "use_ncc").is_selected()
    min_ncc = float(d.execute_script("return Number(document.getElementById('min_ncc').value)"))
    passing = int(_text(d, "passCount"))
    # the live count is the inspection's verdict on the scores on disk (mask rejections stay)
    scores = pd.read_parquet(project / "picks" / "picks_scores.parquet")
    open_ = (scores["Reason"] == "") | scores["Reason"].str.match(r"^(NCC|power) ")
    assert passing == int((open_ & (scores["ncc"] >= min_ncc)).sum())
    _shot(d, "inspection")
    d.find_element("id", "apply").click()
    _wait(d, lambda d: _text(d, "applied").startswith("written:"), timeout=60)
    cand = sorted((project / ".cryoset-view").glob("candidates-*"))[-1]
    other = tmp_path / "cli_picks"
    mics = sorted((project / "sim" / "micrographs").glob("*.mrc"))
    assert main(["pick", *map(str, mics), "--diameter-a", str(DIAMETER_A), "--method", "import",
                 "--import-dir", str(cand), "--mask-dir", str(project / "sim" / "masks"),
                 "--min-ncc", repr(min_ncc), "--out", str(other)]) == 0
    for name in ("micrograph_0000.star", "micrograph_0001.star"):
        pd.testing.assert_frame_equal(read_coords(project / "picks" / name), read_coords(other / name))
    pd.testing.assert_frame_equal(pd.read_csv(project / "picks" / "false_positives.csv", comment="#"),
                                  pd.read_csv(other / "false_positives.csv", comment="#"))
    kept = sum(len(read_coords(project / "picks" / f"micrograph_000{i}.star")) for i in (0, 1))
    # the live count is inspect_picks' verdict on the scores shown; apply re-scores the candidates
    assert abs(kept - passing) <= 2
    assert int(_text(d, "passCount")) == kept  # after the reload: the saved state

    # 2D classes: reject class 2 and save
    d.find_element("css selector", "button[data-tab=classes]").click()
    _wait(d, lambda d: len(d.find_elements("css selector", ".card")) == 3)
    d.find_element("css selector", ".card[data-j='2']").click()
    _wait(d, lambda d: "reject" in d.find_element("css selector", ".card[data-j='2']").get_attribute("class"))
    d.find_element("id", "saveclasses").click()
    _wait(d, lambda d: _text(d, "msg").startswith("selection saved"))
    _wait(d, lambda d: d.execute_script(
        "return [...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)"))
    _shot(d, "classes")
    table = read_particles(project / "classes" / "particles.star").table
    kept_particles = read_particles(project / "classes" / "particles_kept.star").table
    assert len(kept_particles) == int((table["class_number"] != 2).sum())
    assert set(kept_particles["class_number"]) == {1, 3}

    # CTF view
    d.find_element("css selector", "button[data-tab=ctf]").click()
    _wait(d, lambda d: d.execute_script("const i = document.getElementById('ctfplot'); "
                                        "return i.complete && i.naturalWidth > 0"))
    res = pd.read_csv(project / "ctf" / "ctf.csv")["fit_resolution_a"]
    box = d.find_element("id", "maxres")
    box.clear()
    box.send_keys(f"{(res.min() + res.max()) / 2:.3f}")
    _wait(d, lambda d: _text(d, "ctfcount") == f"1 of {len(res)} micrographs rejected")
    assert d.find_element("id", "use_res").is_selected()
    _shot(d, "ctf")

    # a reload shows the saved state
    d.get(server + "/")
    d.find_element("css selector", "button[data-tab=classes]").click()
    _wait(d, lambda d: len(d.find_elements("css selector", ".card.reject")) == 1)
    assert "saved by" in _text(d, "classinfo")


def test_a_stale_tab_gets_a_clear_message(project: Path, server: str, browser: Any) -> None:
    """Two tabs on one micrograph: the second edit, made on the old version, is refused with a
    message and nothing is lost."""
    from cryoset.io.coords import read_coords

    d = browser
    d.get(server + "/")
    _wait(d, lambda d: len(d.find_elements("css selector", "#overlay circle")) > 0)
    first = d.current_window_handle
    d.switch_to.new_window("tab")
    d.get(server + "/")
    _wait(d, lambda d: len(d.find_elements("css selector", "#overlay circle")) > 0)
    _click_at(d, 40, 470, 512, 512)
    _wait(d, lambda d: _text(d, "msg") == "pick added and saved")
    d.switch_to.window(first)
    _click_at(d, 470, 40, 512, 512)
    _wait(d, lambda d: "changed since you loaded them" in _text(d, "msg"))
    picks = read_coords(project / "picks" / "micrograph_0000.star")
    assert (((picks["x_px"] - 40).abs() < 3) & ((picks["y_px"] - 470).abs() < 3)).sum() == 1
    assert not (((picks["x_px"] - 470).abs() < 3) & ((picks["y_px"] - 40).abs() < 3)).any()


def test_recovery_tab_drops_a_class_recovery(store_project: Path, server: str, browser: Any) -> None:
    """The recovery tab of a store-based classification: drop the recovery of the one class
    the pass took particles from, save; the kept STAR and the store's flags lose them."""
    from cryoset.io.particles import read_particles
    from cryoset.store import ParticleStore

    d = browser
    d.get(server + "/")
    d.find_element("css selector", "button[data-tab=recovery]").click()
    _wait(d, lambda d: len(d.find_elements("css selector", ".recgroup")) == 1)
    group = d.find_element("css selector", ".recgroup")
    j = int(group.get_attribute("data-j"))
    assert "accepted" in group.find_element("css selector", ".card").text
    group.find_element("css selector", ".card").click()
    _wait(d, lambda d: "dropped" in d.find_element("css selector", ".recgroup .card").text)
    d.find_element("id", "saverecovery").click()
    _wait(d, lambda d: _text(d, "msg").startswith("selection saved"))
    _shot(d, "recovery")
    table = read_particles(store_project / "classes" / "particles.star").table
    recovered = (table["rlnCryosetRecovered"] == 1) & (table["class_number"] == j)
    assert recovered.any() and not (table.loc[recovered, "rlnCryosetKept"] == 1).any()
    kept = read_particles(store_project / "classes" / "particles_kept.star").table
    assert len(kept) == int((table["rlnCryosetKept"] == 1).sum())
    flags = ParticleStore.open(store_project / "store").query("SELECT kept FROM selection")
    assert int(flags["kept"].sum()) == len(kept) and len(flags) == len(table)
