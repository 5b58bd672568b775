"""Read-only SQL over a store's Parquet files (what ``cryoset query`` and ``--query`` run).

A query may only *read* the store: the connection is an in-memory DuckDB database with

* a ``particles`` view over the store's own ``annotations.parquet`` files, created first;
* ``allowed_paths`` set to exactly those files, then ``enable_external_access = false``:
  every other file, directory, URL and database (``read_csv('/etc/passwd')``, ``COPY …
  TO``, ``ATTACH``, ``EXPORT DATABASE``, ``INSTALL``/``LOAD``) is refused by DuckDB itself;
* ``autoinstall_known_extensions`` and ``autoload_known_extensions`` off;
* ``lock_configuration = true``, so no ``SET``/``RESET`` can undo the above.

On top of that, the text must be exactly one ``SELECT`` statement (``WITH``, ``FROM …``,
``DESCRIBE``, ``SUMMARIZE`` included): ``allowed_paths`` lets DuckDB *write* the store's
files too, so ``COPY particles TO '<store file>'`` is refused before it runs.

With DuckDB older than 1.1 (no ``allowed_paths``) the view is materialised as an
in-memory table before external access is turned off (the same isolation, more memory).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cryoset.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

#: The view every query sees.
VIEW = "particles"


def _literal(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def _supports_allowed_paths(con: Any) -> bool:
    rows = con.execute("SELECT count(*) FROM duckdb_settings() WHERE name = 'allowed_paths'").fetchone()
    return bool(rows and rows[0])


def read_only_connection(parquet_files: Sequence[str | os.PathLike[str]], *,
                         materialise: bool | None = None,
                         extra_views: Mapping[str, Sequence[str | os.PathLike[str]]] | None = None) -> Any:
    """An in-memory DuckDB connection that can read ``parquet_files`` (as ``particles``) and nothing else.

    Parameters
    ----------
    parquet_files
        The store's annotation files; none gives an empty ``particles`` view.
    materialise
        Copy the data into an in-memory table instead of reading the files lazily through
        ``allowed_paths``. None: only when this DuckDB has no ``allowed_paths`` setting.
    extra_views
        More read-only views, ``name → Parquet files`` (e.g. ``embeddings_<name>`` over the
        embedding index files of ``cryoset embed``); their files are allowed too.

    Returns
    -------
    duckdb.DuckDBPyConnection
        Locked configuration: external access off, extension auto-install/-load off.
    """
    import duckdb

    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                              "autoload_known_extensions": False})
    try:
        files = [os.path.abspath(p) for p in parquet_files]
        if files:
            source = f"read_parquet([{', '.join(_literal(f) for f in files)}], union_by_name=true)"
        else:
            source = "(SELECT NULL::VARCHAR AS experiment_id, NULL::BIGINT AS particle_index WHERE false)"
        if materialise is None:
            materialise = not _supports_allowed_paths(con)
        extra = {name: [os.path.abspath(p) for p in paths] for name, paths in (extra_views or {}).items() if paths}
        if materialise or not files:
            con.execute(f"CREATE TABLE {VIEW} AS SELECT * FROM {source}")
            for name, paths in extra.items():
                con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet([{', '.join(map(_literal, paths))}], "
                            "union_by_name=true)")
        else:
            con.execute(f"CREATE VIEW {VIEW} AS SELECT * FROM {source}")
            for name, paths in extra.items():
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{', '.join(map(_literal, paths))}], "
                            "union_by_name=true)")
            allowed = files + [p for paths in extra.values() for p in paths]
            con.execute(f"SET allowed_paths = [{', '.join(_literal(f) for f in allowed)}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def run_select(con: Any, sql: str) -> pd.DataFrame:
    """Run one ``SELECT`` on ``con``; anything else, or any DuckDB error, is a one-line :class:`InputError`.

    Raises
    ------
    InputError
        ``query: …`` — not exactly one SELECT statement (``COPY``, ``ATTACH``, ``SET``,
        ``INSTALL``, ``PRAGMA``, several statements, …), a syntax error, or an access the
        connection refuses (a file outside the store).
    """
    import duckdb

    try:
        statements = con.extract_statements(sql)
        if len(statements) != 1:
            raise InputError("query", f"give exactly one SELECT statement (got {len(statements)} statements)")
        kind = statements[0].type
        if kind != duckdb.StatementType.SELECT:
            raise InputError("query", f"only a SELECT can run on the store (got {kind.name}); "
                             "queries are read-only")
        frame: pd.DataFrame = con.execute(sql).df()
    except duckdb.Error as exc:
        raise InputError("query", f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    return frame
