"""Issue #16: ``query`` is read-only — through ``ParticleStore.select``, ``cryoset query`` and
``cryoset classify2d --query`` a query can read the store and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoset.errors import InputError
from cryoset.store.dataset import ParticleStore
from cryoset.store.sql import read_only_connection, run_select


@pytest.fixture
def store(tmp_path: Path, rng: np.random.Generator) -> ParticleStore:
    st = ParticleStore.create(tmp_path / "store", chunk_particles=8)
    n = 12
    ann = pd.DataFrame({"pixel_size_a": 1.5, "voltage_kv": 300.0, "defocus_u_a": rng.uniform(8000, 30000, n),
                        "defocus_v_a": rng.uniform(8000, 30000, n), "defocus_angle_deg": rng.uniform(0, 180, n),
                        "class_number": rng.integers(1, 3, n)})
    st.add_experiment("EXP", rng.standard_normal((n, 16, 16)).astype(np.float32), ann)
    return ParticleStore.open(tmp_path / "store")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A readable CSV outside the store (what read_csv('/etc/passwd') stands for)."""
    secret = tmp_path / "secret.csv"
    secret.write_text("user,password\nroot,hunter2\n")
    return secret


def _refused(tmp_path: Path, store: ParticleStore, outside: Path) -> dict[str, str]:
    own = store.parquet_files()[0]
    return {
        "copy to": f"COPY particles TO '{tmp_path / 'leak.csv'}' (HEADER)",
        "copy over the store": f"COPY (SELECT 1 AS x) TO '{own}' (FORMAT parquet, USE_TMP_FILE false)",
        "read_csv": f"SELECT * FROM read_csv('{outside}')",
        "read_text": f"SELECT * FROM read_text('{outside}')",
        "replacement scan": f"SELECT * FROM '{outside}'",
        "glob": f"SELECT * FROM glob('{tmp_path}/*')",
        "attach": f"ATTACH '{tmp_path / 'x.duckdb'}' AS x",
        "install": "INSTALL httpfs",
        "load": "LOAD httpfs",
        "set access": "SET enable_external_access = true",
        "reset access": "RESET enable_external_access",
        "unlock": "SET lock_configuration = false",
        "allowed paths": f"SET allowed_paths = ['{outside}']",
        "pragma": "PRAGMA enable_profiling",
        "export": f"EXPORT DATABASE '{tmp_path / 'dump'}'",
        "two statements": f"SELECT 1; COPY particles TO '{tmp_path / 'leak.csv'}'",
        "query()": f"SELECT * FROM query('COPY particles TO ''{tmp_path / 'leak.csv'}''')",
    }


def _assert_untouched(tmp_path: Path, store: ParticleStore, before: bytes) -> None:
    assert store.parquet_files()[0].read_bytes() == before
    assert not (tmp_path / "leak.csv").exists() and not (tmp_path / "x.duckdb").exists()
    assert not (tmp_path / "dump").exists()


def test_select_refuses_everything_but_reading_the_store(tmp_path: Path, store: ParticleStore,
                                                         outside: Path) -> None:
    before = store.parquet_files()[0].read_bytes()
    for what, sql in _refused(tmp_path, store, outside).items():
        with pytest.raises(InputError, match=r"^query: ") as info:
            store.select(sql)
        assert "\n" not in str(info.value), what
        assert "hunter2" not in str(info.value), what
    _assert_untouched(tmp_path, store, before)


def test_normal_selects_still_work(store: ParticleStore) -> None:
    assert len(store.select()) == 12
    sel = store.select("WITH c AS (SELECT * FROM particles WHERE class_number = 1) "
                       "SELECT experiment_id, particle_index FROM c ORDER BY particle_index")
    expected = int((store.annotations("EXP")["class_number"] == 1).sum())
    assert len(sel) == expected
    assert int(store.query("FROM particles SELECT count(*) AS n")["n"][0]) == 12
    assert "defocus_u_a" in set(store.query("DESCRIBE particles")["column_name"])
    own = store.parquet_files()[0]
    assert len(store.query(f"SELECT * FROM read_parquet('{own}')")) == 12  # the store's own file


def test_connection_itself_is_sandboxed(tmp_path: Path, store: ParticleStore, outside: Path) -> None:
    """The DuckDB settings hold even without the SELECT-only filter (defence in depth)."""
    import duckdb

    for materialise in (False, True):
        con = read_only_connection(store.parquet_files(), materialise=materialise)
        try:
            assert con.execute("SELECT count(*) FROM particles").fetchone() == (12,)
            for sql in (f"COPY particles TO '{tmp_path / 'leak.csv'}'", f"SELECT * FROM read_csv('{outside}')",
                        f"ATTACH '{tmp_path / 'x.duckdb'}'", "INSTALL httpfs", "LOAD httpfs",
                        "SET enable_external_access = true", "RESET lock_configuration",
                        "SET autoinstall_known_extensions = true"):
                with pytest.raises(duckdb.Error):
                    con.execute(sql)
            settings = dict(con.execute("SELECT name, value FROM duckdb_settings() WHERE name IN "
                                        "('enable_external_access', 'lock_configuration', "
                                        "'autoinstall_known_extensions', 'autoload_known_extensions')").fetchall())
            assert settings == {"enable_external_access": "false", "lock_configuration": "true",
                                "autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
        finally:
            con.close()
    assert not (tmp_path / "leak.csv").exists()
    con = read_only_connection([])
    try:
        assert len(run_select(con, "SELECT * FROM particles")) == 0
    finally:
        con.close()


def test_cli_query_is_read_only(run_cli, tmp_path: Path, store: ParticleStore, outside: Path) -> None:  # type: ignore[no-untyped-def]
    before = store.parquet_files()[0].read_bytes()
    for what, sql in _refused(tmp_path, store, outside).items():
        code, out, err = run_cli("query", sql, "--store", store.root)
        assert code == 2, (what, out, err)
        assert err.startswith("error: query: ") and len(err.strip().splitlines()) == 1, (what, err)
        assert "hunter2" not in out + err
    _assert_untouched(tmp_path, store, before)
    code, out, err = run_cli("query", "SELECT count(*) AS n FROM particles", "--store", store.root, "--json")
    assert code == 0, err
    assert re.search(r'"n":\s*12\b', out), out


def test_cli_classify2d_query_is_read_only(run_cli, tmp_path: Path, store: ParticleStore, outside: Path) -> None:  # type: ignore[no-untyped-def]
    before = store.parquet_files()[0].read_bytes()
    for what in ("copy to", "read_csv", "attach", "install", "set access", "two statements"):
        sql = _refused(tmp_path, store, outside)[what]
        code, out, err = run_cli("classify2d", "--store", store.root, "--query", sql, "--out", tmp_path / "c2d")
        assert code == 2, (what, out, err)
        assert err.startswith("error: query: ") and len(err.strip().splitlines()) == 1, (what, err)
    _assert_untouched(tmp_path, store, before)
    assert not (tmp_path / "c2d").exists()
