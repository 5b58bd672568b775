"""Start-up cost of the command line: building it and printing help imports no heavy library.

A module check, not a timing: a fresh interpreter imports ``cryoset.cli.main``, builds the app
and renders ``--help`` for the root, every command and every command of every group (found by
walking the built click tree, so new commands are covered as they are added); then none of the
heavy libraries may be in ``sys.modules``.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from cryoset.cli import _defaults

#: Libraries that ``cryoset --help`` / ``cryoset COMMAND --help`` must not import.
HEAVY = ("torch", "numba", "zarr", "duckdb", "matplotlib", "numpy", "scipy", "pandas", "pyarrow",
         "h5py", "requests", "safetensors", "sklearn", "dask", "pydantic")

_SCRIPT = r"""
import json, sys
import typer
from typer.testing import CliRunner

import cryoset.cli.main
from cryoset.cli._options import VocabularyGroup

app = cryoset.cli.main.build_app()
root = typer.main.get_command(app)
paths = [[]]

def walk(group, prefix):
    ctx = typer.Context(group, info_name="cryoset")
    for name in group.list_commands(ctx):
        sub = group.get_command(ctx, name)
        paths.append(prefix + [name])
        if hasattr(sub, "list_commands"):
            walk(sub, prefix + [name])

walk(root, [])
runner = CliRunner()
failed = []
lazy_differs = []
for path in paths:
    result = runner.invoke(app, [*path, "--help"], prog_name="cryoset")
    if result.exit_code != 0 or "Usage" not in result.output:
        failed.append([path, result.exit_code, result.output[-300:]])
    if path:  # what main() builds for ``cryoset NAME …``: NAME's module alone
        lazy = runner.invoke(cryoset.cli.main.build_app(path[0]), [*path, "--help"], prog_name="cryoset")
        if lazy.output != result.output:
            lazy_differs.append(path)
json.dump({"paths": paths, "failed": failed, "lazy_differs": lazy_differs,
           "heavy": [m for m in HEAVY if m in sys.modules]}, sys.stdout)
"""


@pytest.fixture(scope="module")
def startup() -> dict[str, list[object]]:
    code = f"HEAVY = {HEAVY!r}\n{_SCRIPT}"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, list[object]] = json.loads(proc.stdout)
    return result


def test_help_of_every_command_imports_no_heavy_library(startup: dict[str, list[object]]) -> None:
    assert startup["heavy"] == [], f"--help imported {startup['heavy']}"


def test_every_help_renders(startup: dict[str, list[object]]) -> None:
    paths = startup["paths"]
    # the root, the top-level commands and the groups' commands are all there
    assert [] in paths and ["extract"] in paths and ["pick"] in paths and ["reconstruct"] in paths
    assert any(len(p) == 2 for p in paths if isinstance(p, list)), "no group command was walked"
    assert startup["failed"] == []


def test_building_one_command_gives_the_same_help(startup: dict[str, list[object]]) -> None:
    """``cryoset NAME …`` builds only NAME's module (start-up); its help is the full app's."""
    assert startup["lazy_differs"] == []


def test_unknown_command_falls_back_to_the_full_app() -> None:
    from cryoset.cli.main import build_app

    assert len(build_app("no-such-command").registered_commands) == len(build_app().registered_commands)
    assert len(build_app("extract").registered_commands) < len(build_app().registered_commands)


def test_import_of_the_cli_alone_is_light() -> None:
    code = ("import sys, cryoset, cryoset.cli.main\n"
            f"print([m for m in {HEAVY!r} + ('importlib.metadata',) if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]"


def test_the_parameter_classes_module_is_light() -> None:
    """The CLI reads its option defaults off ``cryoset.workflows.params``: it imports no heavy library."""
    code = ("import sys, cryoset.workflows.params\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(("alias", "target"), [
    ("PICK", "cryoset.workflows.pick:PickParams"), ("EXTRACT", "cryoset.workflows.pick:ExtractParams"),
    ("CTF", "cryoset.workflows.ctf:CtfParams"), ("CLASSIFY2D", "cryoset.workflows.classify2d:Classify2DParams"),
    ("RECONSTRUCT", "cryoset.workflows.reconstruct:ReconstructParams"),
    ("TRACE", "cryoset.workflows.trace:TraceParams")])
def test_cli_defaults_are_the_workflow_parameter_classes(alias: str, target: str) -> None:
    module_name, class_name = target.split(":")
    assert getattr(_defaults, alias) is getattr(importlib.import_module(module_name), class_name)


def test_fetch_limit_default_equals_the_download_limit() -> None:
    from cryoset.archives.download import Limits

    assert _defaults.MAX_DOWNLOAD_GB == Limits().max_download_bytes / 1e9


def test_version_is_read_lazily() -> None:
    import cryoset

    assert isinstance(cryoset.__version__, str) and cryoset.__version__
    with pytest.raises(AttributeError):
        cryoset.no_such_attribute  # noqa: B018


_VALUES = ("72", "-3", "0", "007", "1_000", " 7", "+7", "5.36", "-1e-3", ".5", "5.", "1e400", "inf", "nan",
           "abc", "", "a/b.mrc", "~/x", "-", 72, 5.0, True)


@pytest.mark.parametrize("annotation", ["int", "float", "str", "Path", "list[Path]", "list[int]"])
def test_plain_coercion_gives_what_typer_gives(annotation: str) -> None:
    """The pydantic-free coercion of cli/_options.py returns Typer's values and raises its errors."""
    from pathlib import Path

    import typer
    from typer._coercion import build_runtime_param, resolve_type_descriptor
    from typer.models import OptionInfo

    from cryoset.cli._options import _PlainRuntimeParam

    ann = {"int": int, "float": float, "str": str, "Path": Path, "list[Path]": list[Path],
           "list[int]": list[int]}[annotation]
    info = OptionInfo()
    desc = resolve_type_descriptor(ann, info)
    fast = _PlainRuntimeParam(parameter_info=info, annotation=ann, descriptor=desc)
    slow = build_runtime_param(desc)
    ctx = typer.Context(typer.core.TyperCommand("x"))

    def outcome(rp: object, value: object) -> tuple[object, ...]:
        try:
            return ("ok", rp._coerce_value(value, param=None, ctx=ctx))  # type: ignore[attr-defined]
        except Exception as exc:  # the comparison is the point
            return ("error", type(exc).__name__, str(exc))

    values = [(v,) for v in _VALUES] if not annotation.startswith("list") else [
        (("72", "5"),), (("a.mrc", "b.mrc"),), (("x", ""),), (("7", "abc"),)]
    for (value,) in values:
        a, b = outcome(fast, value), outcome(slow, value)
        if a[0] == "ok" and b[0] == "ok":
            assert (type(a[1]) is type(b[1]) and a[1] == b[1]) or (a[1] != a[1] and b[1] != b[1]), (value, a, b)
        else:
            assert a == b, (value, a, b)
