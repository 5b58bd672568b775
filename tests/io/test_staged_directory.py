"""``staged_directory``: an output folder appears only when complete, merged into what is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryoset.io.atomic import staged_directory


def test_nothing_appears_when_the_block_fails(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_directory(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("rejected input")
    assert list(tmp_path.iterdir()) == []


def test_success_merges_files_replaces_same_names_and_whole_directories(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "store.zarr").mkdir(parents=True)
    (out / "store.zarr" / "stale_chunk").write_text("old")
    (out / "plots").mkdir()
    (out / "plots" / "older.png").write_text("old plot")
    (out / "mine.txt").write_text("the user's")
    (out / "a.txt").write_text("old a")
    with staged_directory(out, merge=("plots",)) as tmp:
        (tmp / "a.txt").write_text("new a")
        (tmp / "store.zarr").mkdir()
        (tmp / "store.zarr" / "chunk").write_text("new")
        (tmp / "plots").mkdir()
        (tmp / "plots" / "new.png").write_text("new plot")
    assert (out / "a.txt").read_text() == "new a" and (out / "mine.txt").read_text() == "the user's"
    assert sorted(p.name for p in (out / "store.zarr").iterdir()) == ["chunk"]  # replaced whole
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["new.png", "older.png"]  # merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left


def test_an_existing_regular_file_is_refused_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("a file")
    with pytest.raises(FileExistsError), staged_directory(out):
        pytest.fail("the block must not run")
