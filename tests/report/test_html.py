"""HTML report builder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cryoset.report.html import Report


def test_report_escapes_and_links(tmp_path: Path) -> None:
    r = Report("T <1>")
    r.heading("A & B")
    r.paragraph("x < y")
    r.table(pd.DataFrame({"name": ["a"], "v": [0.123456]}))
    (tmp_path / "img").mkdir()
    r.figure(tmp_path / "img" / "p.png", "a plot", relative_to=tmp_path)
    r.mapping({"k": 1})
    r.provenance({"cryoset_version": "1"})
    out = r.write(tmp_path / "report.html")
    text = out.read_text()
    assert "<h1>T &lt;1&gt;</h1>" in text
    assert "A &amp; B" in text and "x &lt; y" in text
    assert 'src="img/p.png"' in text
    assert "0.1235" in text
    assert text.startswith("<!DOCTYPE html>")
