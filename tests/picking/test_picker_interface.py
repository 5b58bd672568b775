"""One picker interface (issue #17, item 4): blob, template and imported pickers are
:class:`~cryoset.picking.base.Picker` subclasses in a registry, and the four steps compose
to exactly what the ``pick_*`` functions return."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoset.picking import base
from cryoset.picking.base import (
    Peaks,
    Picker,
    PreparedMicrograph,
    ScoreMap,
    available_pickers,
    register_picker,
)
from cryoset.picking.blob import BlobPicker, BlobSettings, pick_blobs
from cryoset.picking.imported import ImportedPicker, score_imported
from cryoset.picking.peaks import picks_table
from cryoset.picking.template import TemplatePicker, TemplateSettings, pick_templates

from .scene import DIAMETER_PX, PIXEL_A, make_scene, sphere_projection


def test_registry_holds_the_three_pickers() -> None:
    pickers = available_pickers()
    assert pickers["blob"] is BlobPicker
    assert pickers["template"] is TemplatePicker
    assert pickers["import"] is ImportedPicker


def test_steps_compose_to_the_pick_functions() -> None:
    img, truth = make_scene(4, snr=0.5, n=10, size=256)
    blob = BlobPicker(BlobSettings(DIAMETER_PX * PIXEL_A))
    prepared = blob.prepare(img, PIXEL_A)
    score = blob.score_map(prepared)
    assert score.values is not None and score.values.shape == prepared.work.shape
    peaks = blob.peaks(prepared, score)
    pd.testing.assert_frame_equal(blob.picks(prepared, score, peaks, "m"),
                                  pick_blobs(img, PIXEL_A, blob.settings, micrograph="m"))
    tmpl = sphere_projection(64, DIAMETER_PX, 32, 32)
    ts = TemplateSettings(DIAMETER_PX * PIXEL_A, angle_step_deg=90)
    pd.testing.assert_frame_equal(TemplatePicker(ts, tmpl, PIXEL_A).pick(img, PIXEL_A, micrograph="m"),
                                  pick_templates(img, PIXEL_A, tmpl, PIXEL_A, ts, micrograph="m"))
    pd.testing.assert_frame_equal(ImportedPicker(truth, DIAMETER_PX).pick(img, PIXEL_A),
                                  score_imported(img, truth, DIAMETER_PX))


def test_a_new_picker_is_one_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # registered for this test only

    @register_picker("brightest-pixel-test")
    class Brightest(Picker):
        def prepare(self, image: object, pixel_size_a: float) -> PreparedMicrograph:
            a = np.asarray(image, np.float32)
            return PreparedMicrograph(a, a, 1.0, pixel_size_a, 10.0)

        def score_map(self, micrograph: PreparedMicrograph) -> ScoreMap:
            return ScoreMap(micrograph.work)

        def peaks(self, micrograph: PreparedMicrograph, score: ScoreMap) -> Peaks:
            assert score.values is not None
            iy, ix = np.unravel_index(int(np.argmax(score.values)), score.values.shape)
            xy = np.array([[float(ix), float(iy)]])
            return Peaks(xy, np.array([float(score.values[iy, ix])]), xy)

        def picks(self, micrograph: PreparedMicrograph, score: ScoreMap, peaks: Peaks, name: str) -> pd.DataFrame:
            return picks_table(name, peaks.xy, peaks.values, micrograph.diameter_px)

    img = np.zeros((16, 16), np.float32)
    img[5, 9] = 1.0
    out = available_pickers()["brightest-pixel-test"]().pick(img, 1.0, micrograph="m")
    assert out[["x_px", "y_px"]].to_numpy().tolist() == [[9.0, 5.0]]
    with pytest.raises(ValueError, match="already registered"):
        register_picker("blob")(Brightest)
