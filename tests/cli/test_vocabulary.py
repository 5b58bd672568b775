"""One command-line vocabulary (docs/cli.md), checked over every command of the Typer app.

Every command that writes takes ``-o/--out``; quantities have one option name carrying their
unit (and build configs use the same names); every command that reports numbers takes
``--json``; every ``--help`` has an example and no Python types or keywords; old spellings
still work and print exactly one deprecation line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer import _click
from typer.core import TyperArgument, TyperGroup, TyperOption

from cryoset.cli._options import OLD_SPELLINGS, TERMS, OldSpelling, rewrite_old_spellings
from cryoset.cli.main import build_app
from cryoset.deprecation import deprecation_line

ROOT = typer.main.get_command(build_app())
DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _walk(cmd: _click.Command, path: tuple[str, ...]) -> list[tuple[str, _click.Command]]:
    if isinstance(cmd, TyperGroup):
        return [leaf for name, sub in cmd.commands.items() for leaf in _walk(sub, (*path, name))]
    return [(" ".join(path), cmd)]


def _groups(cmd: _click.Command, path: tuple[str, ...]) -> list[str]:
    if not isinstance(cmd, TyperGroup):
        return []
    return [" ".join(path), *(g for name, sub in cmd.commands.items() for g in _groups(sub, (*path, name)))]


COMMANDS: dict[str, _click.Command] = dict(_walk(ROOT, ()))
GROUPS: list[str] = _groups(ROOT, ())


def _options(cmd: _click.Command) -> list[TyperOption]:
    return [p for p in cmd.params if isinstance(p, TyperOption)]


def _names(cmd: _click.Command) -> set[str]:
    return {name for p in _options(cmd) for name in (*p.opts, *p.secondary_opts)}


#: Commands that write nothing (they read and report).
READ_ONLY = {"info", "validate", "evaluate-picks", "compare-models", "store info", "datasets list",
             "datasets info"}
#: Commands that write into something that is their subject rather than an output.
WRITES_ELSEWHERE = {
    "store create": "ROOT is the store it creates",
    "store add": "ROOT is the store it appends to",
    "embed": "STORE is the store it writes the vectors into",
    "datasets import": "--store is the store it appends to",
    "fetch empiar": "downloads go to the cache (--cache)",
    "fetch emdb": "downloads go to the cache (--cache)",
    "fetch pdb": "downloads go to the cache (--cache)",
    "view": "a web app: its decisions go into PROJECT_DIR, its subject (docs/view.md)",
}
#: Commands whose only output is a confirmation line (no numbers to report).
NO_NUMBERS = {
    "demo": "the numbers go to OUT/demo.json and OUT/report.html",
    "store create": "prints the store path",
    "map subgrids": "prints the output path",
    "view": "a web server: it prints its address",
}

#: Spellings that no command may use: the renamed ones, and unit-less names of quantities.
FORBIDDEN = ({o.old for o in OLD_SPELLINGS} - {"--json", "--particles"}) | {
    "--apix", "--angpix", "--pixel-size", "--voxel-size", "--diameter", "--defocus", "--kv", "--voltage",
    "--cs", "--spherical-aberration", "--resolution", "--box", "--box-size", "--output", "--size", "--shape",
}
#: A value option whose name has one of these words must end with a unit (or say it is a ratio).
QUANTITY_WORDS = ("pixel-size", "voxel-size", "diameter", "voltage", "defocus", "resolution", "box",
                  "thickness", "shift", "distance", "radius", "tile", "dose", "tilt", "offset", "psi",
                  "shape", "overlap", "cs")
UNIT_SUFFIXES = ("-a", "-px", "-kv", "-mm", "-deg", "-e-per-a2", "-fraction", "-factor", "-gb")
#: Never in help text: Python types and keywords.
PYTHON_IN_HELP = ("<bool>", "=True", "=False", "None", "permissive=", "<list[", "List[", "<NoneType",
                  "<str>", "<int>", "<float>", "<path>")  # Typer's type column is Python's names


def _help(run_cli: Any, path: str) -> str:
    code, out, err = run_cli(*path.split(), "--help")
    assert code == 0, err
    return str(out)


def test_the_walk_finds_every_command() -> None:
    assert {"info", "ctf", "pick", "extract", "classify2d", "simulate micrographs", "store info", "query",
            "datasets crosscheck", "fetch record"} <= set(COMMANDS)
    assert READ_ONLY | set(WRITES_ELSEWHERE) | set(NO_NUMBERS) <= set(COMMANDS)


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_that_writes_has_out_and_o(path: str) -> None:
    if path in READ_ONLY or path in WRITES_ELSEWHERE:
        return
    outs = [p for p in _options(COMMANDS[path]) if "--out" in p.opts]
    assert outs, f"{path} writes but has no --out"
    assert "-o" in outs[0].opts, f"{path}: --out has no -o"
    assert not {"--output", "--output-dir", "--outdir"} & _names(COMMANDS[path])


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_that_reports_numbers_has_json(path: str) -> None:
    if path in NO_NUMBERS:
        return
    flags = [p for p in _options(COMMANDS[path]) if "--json" in p.opts]
    assert flags and flags[0].is_flag, f"{path} has no --json flag"


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_option_names_follow_the_vocabulary(path: str) -> None:
    cmd = COMMANDS[path]
    assert not FORBIDDEN & _names(cmd), f"{path} uses {sorted(FORBIDDEN & _names(cmd))}"
    terms = {t.option: t for t in TERMS.values()}
    for opt in _options(cmd):
        long = next(o for o in opt.opts if o.startswith("--"))
        words = long.removeprefix("--").split("-")
        if not opt.is_flag and any(w in long if "-" in w else w in words for w in QUANTITY_WORDS):
            assert long.endswith(UNIT_SUFFIXES), f"{path}: {long} names a quantity without its unit"
        if long in terms:  # declared through cli._options.option: the vocabulary's metavar and short name
            term = terms[long]
            assert opt.metavar == (term.metavar or ""), f"{path}: {long} not declared with option()"
            assert term.short is None or term.short in opt.opts, f"{path}: {long} lacks {term.short}"


def test_a_quantity_has_one_unit_everywhere() -> None:
    """The same quantity never appears in two units (no µm beside Å, no --diameter-nm)."""
    stems: dict[str, set[str]] = {}
    for cmd in COMMANDS.values():
        for opt in _options(cmd):
            long = next(o for o in opt.opts if o.startswith("--"))
            for suffix in ("-a", "-nm", "-um", "-kv", "-v", "-mm", "-deg", "-rad"):
                if long.endswith(suffix) and not opt.is_flag:
                    stems.setdefault(long.removesuffix(suffix), set()).add(suffix)
    mixed = {stem: units for stem, units in stems.items() if len(units) > 1}
    assert not mixed


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_help_has_an_example_and_no_python(path: str, run_cli: Any) -> None:
    text = _help(run_cli, path)
    assert "Example" in text, f"{path}: no example in --help"
    assert re.search(rf"cryoset {re.escape(path)}\b", text), f"{path}: the example does not run {path}"
    found = [bad for bad in PYTHON_IN_HELP if bad in text]
    assert not found, f"{path} --help shows {found}"


@pytest.mark.parametrize("path", GROUPS)
def test_group_help_has_no_python(path: str, run_cli: Any) -> None:
    text = _help(run_cli, path)
    assert not [bad for bad in PYTHON_IN_HELP if bad in text]


def test_config_keys_are_the_option_names() -> None:
    from cryoset.pipeline import config

    options = {name for cmd in COMMANDS.values() for name in _names(cmd)}
    keys = {key for spec in (*config._SECTIONS.values(), config._SIMULATED, config._LOCAL) for key in spec}
    missing = sorted(k for k in keys if "--" + k.replace("_", "-") not in options)
    assert not missing, f"build-config keys without a command-line option of the same name: {missing}"


# --------------------------------------------------------------------------- old spellings


def _sample(opt: TyperOption) -> list[str]:
    """Command-line values for ``opt``."""
    annotation = opt.type_descriptor.annotation
    text = str(annotation)
    if "tuple" in text:
        return ["16", "24"]
    if "int" in text and "float" not in text:
        return ["16"]
    if "float" in text:
        return ["7.5"]
    return ["x.json"]


def _context(path: str, args: list[str]) -> _click.Context:
    """Parse ``cryoset PATH ARGS`` into the command's context (nothing runs; missing required
    options are not an error)."""
    parent = _click.Context(ROOT, info_name="cryoset")
    cmd: _click.Command = ROOT
    for name in path.split():
        assert isinstance(cmd, TyperGroup)
        cmd = cmd.commands[name]
        if isinstance(cmd, TyperGroup):
            parent = _click.Context(cmd, info_name=name, parent=parent)
    return cmd.make_context(path.split()[-1], args, parent=parent, resilient_parsing=True)


def test_an_old_spelling_means_one_thing_per_command() -> None:
    pairs = [(c, o.old) for o in OLD_SPELLINGS for c in o.commands]
    assert len(pairs) == len(set(pairs))
    assert {c for c, _ in pairs} <= set(COMMANDS)


def _cases() -> list[tuple[str, OldSpelling]]:
    return [(c, o) for o in OLD_SPELLINGS for c in o.commands if o.rewrite is None and o.when is None]


@pytest.mark.parametrize(("path", "spelling"), _cases(), ids=lambda v: v if isinstance(v, str) else v.old)
def test_old_spelling_still_works_with_one_notice(path: str, spelling: OldSpelling,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cmd = COMMANDS[path]
    assert spelling.new in _names(cmd) and spelling.old not in _names(cmd)
    new = next(p for p in _options(cmd) if spelling.new in p.opts)
    values = _sample(new)
    assert len(values) == spelling.nargs
    expected = _context(path, [spelling.new, *values]).params[str(new.name)]
    assert expected is not None and capsys.readouterr().err == ""
    got = _context(path, [spelling.old, *values]).params[str(new.name)]
    assert got == expected
    assert capsys.readouterr().err == deprecation_line(spelling.old, spelling.new) + "\n"


def test_defocus_range_in_micrometres_becomes_angstroms(capsys: pytest.CaptureFixture[str]) -> None:
    for path in ("simulate micrographs", "simulate particles"):
        params = _context(path, ["--defocus-range", "1.2", "2.8"]).params
        assert (params["defocus_min_a"], params["defocus_max_a"]) == (12000.0, 28000.0)
        assert capsys.readouterr().err == deprecation_line(
            "--defocus-range", "--defocus-min-a and --defocus-max-a (Å, not µm)") + "\n"


def test_original_shape_becomes_micrograph_shape_px(capsys: pytest.CaptureFixture[str]) -> None:
    for path in ("datasets summary", "datasets import"):
        assert _context(path, ["x", "--original-shape", "4096,3072"]).params["original_shape"] == (4096, 3072)
        assert capsys.readouterr().err == deprecation_line("--original-shape", "--micrograph-shape-px NY NX") + "\n"


def test_crosscheck_json_file_becomes_out(capsys: pytest.CaptureFixture[str]) -> None:
    params = _context("datasets crosscheck", ["a", "b", "--json", "report.json"]).params
    assert params["json_out"] == Path("report.json") and params["as_json"] is False
    assert capsys.readouterr().err == deprecation_line(
        "--json FILE", "--out FILE (--json now prints the report)") + "\n"
    params = _context("datasets crosscheck", ["a", "b", "--json"]).params
    assert params["as_json"] is True and params["json_out"] is None
    assert capsys.readouterr().err == ""


def test_values_and_the_end_of_options_are_left_alone() -> None:
    told: list[tuple[str, str]] = []
    cmd = COMMANDS["store export"]
    args = ["ds", "--selection", "--size", "--size=8", "--", "--size"]
    assert rewrite_old_spellings("store export", cmd, args, lambda o, n: told.append((o, n))) == [
        "ds", "--selection", "--size", "--size-px=8", "--", "--size"]
    assert told == [("--size", "--size-px")]
    # an old spelling is only rewritten for the commands that had it
    assert rewrite_old_spellings("ctf", COMMANDS["ctf"], ["--box", "3"]) == ["--box", "3"]


def test_old_spelling_end_to_end(run_cli: Any, tmp_path: Path) -> None:
    code, out, err = run_cli("simulate", "protein", "--length", 30, "--out", tmp_path / "p.pdb", "--json")
    assert code == 0
    assert err == deprecation_line("--length", "--protein-length") + "\n"
    assert json.loads(out)["residues"] == 30


def test_old_config_key_still_works_with_one_notice(capsys: pytest.CaptureFixture[str]) -> None:
    from cryoset.pipeline.config import load_config

    exp = [{"id": "a", "simulated": {"seed": 1, "protein_length": 50, "micrographs": 1}}]
    cfg = load_config({"experiments": exp, "extract": {"pixel_size_a": 3.0}})
    assert cfg["extract"]["pixel_size_out_a"] == 3.0 and "pixel_size_a" not in cfg["extract"]
    assert capsys.readouterr().err == deprecation_line("config: extract.pixel_size_a", "extract.pixel_size_out_a") + "\n"
    assert load_config({"experiments": exp, "extract": {"pixel_size_out_a": 3.0}})["extract"]["pixel_size_out_a"] == 3.0
    assert capsys.readouterr().err == ""


def test_docs_list_every_old_spelling_and_term() -> None:
    text = DOC.read_text(encoding="utf-8")
    for spelling in OLD_SPELLINGS:
        old, new = spelling.notice()
        assert f"`{old}` | `{new}`" in text, f"docs/cli.md lacks {old} → {new}"
    for term in TERMS.values():
        assert f"`{term.option}`" in text, f"docs/cli.md lacks {term.option}"


def test_no_argument_or_flag_shows_a_python_type() -> None:
    """The help column of arguments and flags is empty (Typer would print <list[Path]>, <bool>)."""
    for path, cmd in COMMANDS.items():
        ctx = _click.Context(cmd, info_name=path)
        for param in cmd.params:
            if isinstance(param, TyperArgument) or (isinstance(param, TyperOption) and param.is_flag):
                shown = param.display_type_rich(ctx) or ""
                assert "<" not in shown, f"{path}: {param.name} shows {shown}"


def test_plain_type_words() -> None:
    """Issue #16 review: options without a vocabulary metavar showed ``<str>``, ``<int>``, ``<float>``."""
    from cryoset.cli._options import plain_type

    assert [plain_type(t) for t in ("<str>", "<int>", "<float>", "<path>", "<int,int>", "<int>...")] == [
        "TEXT", "INTEGER", "NUMBER", "PATH", "INTEGER INTEGER", "INTEGER..."]
    assert plain_type("<blob|template>") == "<blob|template>"
