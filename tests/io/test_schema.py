"""Tests of the canonical picks / particle table schema."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryoset.errors import InputError
from cryoset.io import schema as S


def test_empty_picks_has_canonical_columns_and_dtypes() -> None:
    df = S.empty_picks()
    assert tuple(df.columns) == S.PICKS_COLUMNS
    assert len(df) == 0
    for column in (S.X_PX, S.Y_PX, S.SCORE, S.DIAMETER_PX):
        assert df[column].dtype == np.float64


def test_particle_columns_extend_picks_and_are_unique() -> None:
    assert S.PARTICLE_COLUMNS[: len(S.PICKS_COLUMNS)] == S.PICKS_COLUMNS
    assert len(set(S.PARTICLE_COLUMNS)) == len(S.PARTICLE_COLUMNS)
    assert S.STRING_COLUMNS | S.INTEGER_COLUMNS | S.FLOAT_COLUMNS == set(S.PARTICLE_COLUMNS)


def test_validate_picks_fills_optional_and_coerces() -> None:
    df = pd.DataFrame({"micrograph": [1, 2], "x_px": ["1.5", "2"], "y_px": [3, 4], "extra": ["a", "b"]})
    out = S.validate_picks(df, "p.csv")
    assert list(out.columns) == [*S.PICKS_COLUMNS, "extra"]
    assert out["x_px"].tolist() == [1.5, 2.0]
    assert out["micrograph"].tolist() == ["1", "2"]
    assert out["score"].isna().all() and out["diameter_px"].isna().all()


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        (pd.DataFrame({"micrograph": ["a"], "x_px": [1.0]}), "y_px"),
        (pd.DataFrame({"micrograph": ["a"], "x_px": ["left"], "y_px": [1.0]}), "x_px"),
        (pd.DataFrame({"micrograph": ["a"], "x_px": [np.inf], "y_px": [1.0]}), "non-finite"),
    ],
)
def test_validate_picks_rejects_bad_tables_naming_the_file(frame: pd.DataFrame, needle: str) -> None:
    with pytest.raises(InputError, match=needle) as info:
        S.validate_picks(frame, "picks.star")
    assert info.value.path == "picks.star"


def test_validate_particles_types_and_required() -> None:
    df = pd.DataFrame({"class_number": [1.0, 2.0], "defocus_u_a": ["100", "200"],
                       "image_index": [0, None]})
    out = S.validate_particles(df)
    assert out["class_number"].dtype == np.int64
    assert out["defocus_u_a"].dtype == np.float64
    assert str(out["image_index"].dtype) == "Int64"
    with pytest.raises(InputError, match="image_path"):
        S.validate_particles(df, "x.star", required=("image_path",))
    with pytest.raises(InputError, match="whole numbers"):
        S.validate_particles(pd.DataFrame({"class_number": [1.5]}))
