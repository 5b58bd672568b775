"""One command-line vocabulary: every quantity's option, its unit, its help and its old spellings.

Each quantity has one option name that carries its unit (``--pixel-size-a``, ``--voltage-kv``,
``--box-px``) and is declared here once (:data:`TERMS`); commands declare it with
:func:`option`. Build configurations use the same names in snake_case (``pixel_size_a``).
Spellings used by earlier releases (:data:`OLD_SPELLINGS`) keep working for one release:
they are rewritten to the new option before parsing and a one-line notice goes to stderr
(``warning: --pixel-size is deprecated; use --pixel-size-a``). docs/cli.md is the table.

Every command and group is built from :class:`VocabularyCommand` / :class:`VocabularyGroup`
(:func:`use_vocabulary`, called once by ``build_app``): they do the rewriting and keep
Python type names (``<bool>``, ``<list[Path]>``) out of ``--help``.

Commands that report numbers print them with :func:`echo_json` under ``--json``: one JSON
object on stdout, with null where a number is missing or not finite (never NaN).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import typer
from typer import _click
from typer._coercion import PassThroughRuntimeParam, RuntimeParam, build_runtime_param
from typer._param_types import coerce_cli_path, routes_to_path
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import DefaultPlaceholder, OptionInfo

from cryoset.errors import InputError


@dataclass(frozen=True)
class Term:
    """One word of the vocabulary: an option name (with its unit), its metavar and its help."""

    option: str
    metavar: str
    help: str
    short: str | None = None


#: Every named quantity (and the few shared non-quantity options), by config-style key.
TERMS: dict[str, Term] = {t.option.removeprefix("--").replace("-", "_"): t for t in (
    # shared
    Term("--out", "PATH", "Output path.", short="-o"),
    Term("--json", "", "Print the result as one JSON object on stdout (null for missing numbers)."),
    Term("--format", "FORMAT", "Output format."),
    Term("--workers", "N", "Parallel worker processes.", short="-j"),
    Term("--seed", "N", "Random seed."),
    # sizes, Å
    Term("--pixel-size-a", "Å", "Pixel size of the micrographs, Å."),
    Term("--pixel-size-out-a", "Å", "Down-sample the output to this pixel size, Å."),
    Term("--template-pixel-size-a", "Å", "Pixel size of the templates, Å (default: the stack header)."),
    Term("--voxel-size-a", "Å", "Voxel size, Å."),
    Term("--diameter-a", "Å", "Particle diameter, Å."),
    Term("--diameter-px", "PX", "Particle diameter, pixels."),
    Term("--ice-thickness-a", "Å", "Mean ice thickness, Å."),
    Term("--max-shift-a", "Å", "Largest particle offset from the box centre, Å."),
    Term("--min-distance-a", "Å", "Minimum distance, Å."),
    Term("--max-distance-a", "Å", "Maximum distance, Å."),
    # defocus and resolution, Å
    Term("--defocus-min-a", "Å", "Smallest defocus, Å (underfocus positive)."),
    Term("--defocus-max-a", "Å", "Largest defocus, Å (underfocus positive)."),
    Term("--min-resolution-a", "Å", "Low-resolution end of the fit, Å."),
    Term("--max-resolution-a", "Å", "High-resolution end of the fit, Å."),
    Term("--resolution-a", "Å", "Target resolution, Å."),
    Term("--max-ctf-resolution-a", "Å", "Reject micrographs whose CTF fit is worse than this, Å."),
    # optics
    Term("--voltage-kv", "kV", "Accelerating voltage, kV."),
    Term("--cs-mm", "mm", "Spherical aberration, mm."),
    Term("--amplitude-contrast", "FRACTION", "Amplitude contrast (fraction, 0-1)."),
    Term("--dose-e-per-a2", "e/Å²", "Electron dose, e/Å²."),
    # sizes, pixels
    Term("--box-px", "PX", "Box edge, pixels."),
    Term("--overlap-px", "PX", "Sub-grid overlap on each face, voxels."),
    Term("--tile-px", "PX", "Power-spectrum tile size, pixels."),
    Term("--size-px", "PX", "Image edge, pixels."),
    Term("--micrograph-shape-px", "NY NX", "Micrograph height and width, pixels."),
    Term("--bg-radius-px", "PX", "Background radius, output pixels."),
    Term("--offset-range-px", "PX", "Translation search radius, pixels of the (cropped) box."),
    Term("--max-offset-px", "PX", "Cap on the total shift, pixels of the (cropped) box."),
    # angles, fractions, counts
    Term("--psi-step-deg", "DEG", "In-plane angular step, degrees."),
    Term("--tilt-deg", "DEG", "Specimen tilt, degrees."),
    Term("--min-distance-fraction", "FRACTION", "Minimum pick distance, fraction of the diameter."),
    Term("--n-classes", "N", "Number of classes.", short="-K"),
    Term("--n-iter", "N", "Number of iterations."),
    Term("--micrographs", "N", "Number of micrographs."),
    Term("--particles", "N", "Number of particle images."),
    Term("--particles-per-micrograph", "N", "Particles per micrograph."),
    Term("--protein-length", "RESIDUES", "Residues of the procedural protein."),
)}


def option(key: str, default: Any = ..., *, help: str | None = None, **kwargs: Any) -> Any:
    """``typer.Option`` for the vocabulary term ``key`` (its name, short name and metavar).

    ``help`` replaces the term's generic help; keep the unit in it.
    """
    term = TERMS[key]
    decls = [term.option, *([term.short] if term.short else [])]
    return typer.Option(default, *decls, metavar=term.metavar, help=help or term.help, **kwargs)


def json_option(help: str | None = None) -> Any:
    """The ``--json`` flag."""
    return option("json", False, help=help)


# ---------------------------------------------------------------------------------------------
# Old spellings


def _micrometres_to_defocus(values: Sequence[str]) -> list[str]:
    try:
        lo, hi = (float(v) * 1e4 for v in values)
    except ValueError:
        raise InputError("--defocus-range", f"expects two numbers in µm, got {' '.join(values)!r}") from None
    return ["--defocus-min-a", repr(round(lo, 6)), "--defocus-max-a", repr(round(hi, 6))]


def _comma_shape(values: Sequence[str]) -> list[str]:
    text = values[0] if values else ""
    parts = text.replace("x", ",").split(",")
    if len(parts) != 2:
        raise InputError("--original-shape", f"expected NY,NX (e.g. 4096,4096), got {text!r}")
    return ["--micrograph-shape-px", *(p.strip() for p in parts)]


def _json_file(rest: Sequence[str]) -> bool:
    return bool(rest) and not rest[0].startswith("-") and rest[0].lower().endswith(".json")


@dataclass(frozen=True)
class OldSpelling:
    """An option name of an earlier release, still accepted (with a notice) by ``commands``.

    ``nargs`` values follow it; ``rewrite`` turns them into the new tokens (default:
    ``[new, *values]``); ``when`` (given the tokens after it) limits the rewrite to the old
    usage when the old name is also a current option; ``use`` is the advice in the notice.
    """

    old: str
    new: str
    commands: tuple[str, ...]
    nargs: int = 1
    rewrite: Callable[[Sequence[str]], list[str]] | None = None
    when: Callable[[Sequence[str]], bool] | None = None
    use: str | None = None
    shown: str | None = None

    def notice(self) -> tuple[str, str]:
        """(old, new) as the deprecation line names them."""
        return self.shown or self.old, self.use or self.new


_SIMULATE_IMAGES = ("simulate micrographs", "simulate particles")
_MAPS = ("map prepare", "map subgrids", "map build")

#: Every option renamed since the previous release, and the commands that took it.
OLD_SPELLINGS: tuple[OldSpelling, ...] = (
    OldSpelling("--pixel-size", "--pixel-size-a", ("ctf", "pick", "extract", *_SIMULATE_IMAGES)),
    OldSpelling("--pixel-size", "--voxel-size-a", ("simulate map",)),
    OldSpelling("--voxel-size", "--voxel-size-a", ("map prepare", "map build")),
    OldSpelling("--template-pixel-size", "--template-pixel-size-a", ("pick",)),
    OldSpelling("--pixel-size-out", "--pixel-size-out-a", ("extract",)),
    OldSpelling("--diameter", "--diameter-a", ("classify2d",)),
    OldSpelling("--voltage", "--voltage-kv", ("extract", *_SIMULATE_IMAGES)),
    OldSpelling("--cs", "--cs-mm", ("extract",)),
    OldSpelling("--defocus-min", "--defocus-min-a", ("ctf",)),
    OldSpelling("--defocus-max", "--defocus-max-a", ("ctf",)),
    OldSpelling("--defocus-range", "--defocus-min-a", _SIMULATE_IMAGES, nargs=2,
                rewrite=_micrometres_to_defocus, use="--defocus-min-a and --defocus-max-a (Å, not µm)"),
    OldSpelling("--min-res", "--min-resolution-a", ("ctf",)),
    OldSpelling("--max-res", "--max-resolution-a", ("ctf",)),
    OldSpelling("--resolution", "--resolution-a", ("simulate map",)),
    OldSpelling("--max-ctf-resolution", "--max-ctf-resolution-a", ("pick",)),
    OldSpelling("--box", "--box-px", ("extract", "classify2d", "reconstruct", "simulate map",
                                      "simulate particles", *_MAPS)),
    OldSpelling("--box-size", "--box-px", ("convert",)),
    OldSpelling("--overlap", "--overlap-px", _MAPS),
    OldSpelling("--tile", "--tile-px", ("ctf",)),
    OldSpelling("--size", "--size-px", ("simulate micrographs", "store export")),
    OldSpelling("--micrograph-shape", "--micrograph-shape-px", ("info", "convert"), nargs=2),
    OldSpelling("--original-shape", "--micrograph-shape-px", ("datasets summary", "datasets import"),
                rewrite=_comma_shape, use="--micrograph-shape-px NY NX"),
    OldSpelling("--bg-radius", "--bg-radius-px", ("extract",)),
    OldSpelling("--min-distance", "--min-distance-fraction", ("pick",)),
    OldSpelling("--psi-step", "--psi-step-deg", ("classify2d",)),
    OldSpelling("--offset-range", "--offset-range-px", ("classify2d",)),
    OldSpelling("--max-offset", "--max-offset-px", ("classify2d",)),
    OldSpelling("--max-shift", "--max-shift-a", ("simulate particles",)),
    OldSpelling("--tilt", "--tilt-deg", ("simulate micrographs",)),
    OldSpelling("--ice-thickness", "--ice-thickness-a", ("simulate micrographs",)),
    OldSpelling("--dose", "--dose-e-per-a2", ("simulate micrographs",)),
    OldSpelling("--classes", "--n-classes", ("classify2d",)),
    OldSpelling("--iter", "--n-iter", ("classify2d",)),
    OldSpelling("--n", "--micrographs", ("simulate micrographs",)),
    OldSpelling("--particles", "--particles-per-micrograph", ("simulate micrographs",)),
    OldSpelling("--n", "--particles", ("simulate particles",)),
    OldSpelling("--length", "--protein-length", ("simulate protein",)),
    OldSpelling("--output", "--out", ("trace",)),
    OldSpelling("--jobs", "--workers", ("ctf",)),
    OldSpelling("--to", "--format", ("convert",)),
    OldSpelling("--table", "--out", ("datasets summary",)),
    OldSpelling("--json", "--out", ("datasets crosscheck",), when=_json_file, shown="--json FILE",
                use="--out FILE (--json now prints the report)"),
)


def _value_counts(command: _click.Command) -> dict[str, int]:
    """How many values each option of ``command`` takes (flags: 0)."""
    counts: dict[str, int] = {}
    for param in command.params:
        if isinstance(param, TyperOption):
            n = 0 if (param.is_flag or param.count) else max(param.nargs, 1)
            for name in (*param.opts, *param.secondary_opts):
                counts[name] = n
    return counts


def rewrite_old_spellings(command_path: str, command: _click.Command, args: Sequence[str],
                          notify: Callable[[str, str], None] | None = None) -> list[str]:
    """``args`` of ``command`` with every old spelling replaced by the current option.

    ``command_path`` is the command as typed after ``cryoset`` (``"simulate map"``). Each
    old spelling found is reported once through ``notify(old, new)``
    (default: :func:`cryoset.deprecation.notify_deprecated`). Values of current
    options and everything after ``--`` are left alone.
    """
    old = {o.old: o for o in OLD_SPELLINGS if command_path in o.commands}
    if not old:
        return list(args)
    if notify is None:
        from cryoset.deprecation import notify_deprecated

        notify = notify_deprecated
    counts = _value_counts(command)
    out: list[str] = []
    told: set[str] = set()
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            out.extend(args[i:])
            break
        name, eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        spelling = old.get(name)
        if spelling is not None and (spelling.when(args[i + 1:]) if spelling.when is not None
                                     else name not in counts):
            if eq:
                values: list[str] = [inline]
                i += 1
            else:
                values = list(args[i + 1:i + 1 + spelling.nargs])
                i += 1 + spelling.nargs
            if spelling.old not in told:
                told.add(spelling.old)
                notify(*spelling.notice())
            if spelling.rewrite is not None and len(values) == spelling.nargs:
                out.extend(spelling.rewrite(values))
            elif eq:
                out.append(f"{spelling.new}={inline}")
            else:
                out.extend([spelling.new, *values])
            continue
        step = 1 + (counts.get(name, 0) if not eq else 0)
        out.extend(args[i:i + step])
        i += step
    return out


# ---------------------------------------------------------------------------------------------
# Command classes


def _command_path(ctx: _click.Context) -> str:
    names: list[str] = []
    node: _click.Context | None = ctx
    while node is not None and node.parent is not None:
        names.append(node.info_name or "")
        node = node.parent
    return " ".join(reversed(names))


class _Argument(TyperArgument):
    """An argument whose help shows its name only (no ``<list[Path]>`` type column)."""

    def display_type_rich(self, ctx: _click.Context) -> str | None:
        return None


#: Typer's type column (``<str>``, ``<int>``, …) in plain words, like the vocabulary's metavars.
_PLAIN_TYPES = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "path": "PATH", "file": "FILE",
                "dir": "DIR"}


def plain_type(shown: str) -> str:
    """``<str>`` → ``TEXT``, ``<int>`` → ``INTEGER``, ``<float>`` → ``NUMBER``, ``<path>`` → ``PATH``;
    anything else (a list of choices) is left as it is."""
    body, dots = (shown[:-3], "...") if shown.endswith("...") else (shown, "")
    if not (body.startswith("<") and body.endswith(">")):
        return shown
    words = body[1:-1].split(",")
    if not all(w in _PLAIN_TYPES for w in words):
        return shown
    return " ".join(_PLAIN_TYPES[w] for w in words) + dots


class _Option(TyperOption):
    """An option without a vocabulary metavar whose type column is a plain word, not a Python type."""

    def display_type_rich(self, ctx: _click.Context) -> str | None:
        shown = super().display_type_rich(ctx)
        return plain_type(shown) if shown and self.metavar is None else shown


_INT_TEXT = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_FLOAT_TEXT = re.compile(r"-?([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})([eE][-+]?[0-9]{1,3})?")
_NO_VALUE = object()


def _fast_scalar(annotation: Any, value: Any) -> Any:
    """``value`` as Typer's pydantic adapter would return it for ``annotation``, for the plain
    cases that have exactly one answer; :data:`_NO_VALUE` for anything else."""
    if annotation is str:
        return value if type(value) is str else _NO_VALUE
    if annotation is int:
        if type(value) is int:
            return value
        return int(value) if type(value) is str and _INT_TEXT.fullmatch(value) else _NO_VALUE
    if annotation is float:
        if type(value) in (float, int):
            return float(value)
        if type(value) is str and _FLOAT_TEXT.fullmatch(value):
            number = float(value)
            return number if math.isfinite(number) else _NO_VALUE
        return _NO_VALUE
    if annotation is Path:
        if isinstance(value, Path):
            return value
        return Path(value) if type(value) is str and value else _NO_VALUE
    return _NO_VALUE


@dataclass(frozen=True)
class _PlainRuntimeParam(RuntimeParam):
    """Typer's value coercion without pydantic for ``str``, ``int``, ``float``, ``Path`` (and
    lists of them) carrying no constraints: the same values, ~0.1 s less start-up per command
    (pydantic and its adapters are imported and built only when a value needs them, e.g. an
    invalid one, whose error message then comes from Typer as before)."""

    descriptor: Any = None

    def _coerce_value(self, value: Any, param: Any, ctx: _click.Context) -> Any:
        annotation: Any = self.annotation
        origin: Any = get_origin(annotation)
        item = get_args(annotation)[0] if origin is list else None
        if item is not None and isinstance(value, (list, tuple)):
            out = [_fast_scalar(item, v) for v in value]
            if not any(v is _NO_VALUE for v in out):
                return [self._path(v, param, ctx) for v in out] if item is Path else out
        elif item is None:
            out_one = _fast_scalar(annotation, value)
            if out_one is not _NO_VALUE:
                return self._path(out_one, param, ctx) if annotation is Path else out_one
        return build_runtime_param(self.descriptor)._coerce_value(value, param=param, ctx=ctx)

    def _path(self, value: Path, param: Any, ctx: _click.Context) -> Any:
        # Typer's own path checks (exists, file_okay, …); given a Path they need no pydantic
        return coerce_cli_path(value, self.parameter_info, path_type=Path, param=param, ctx=ctx)


def _plain_coercion(param: _click.Parameter) -> None:
    """Give ``param`` a :class:`_PlainRuntimeParam` when its type and options allow it."""
    if not isinstance(param, (TyperOption, TyperArgument)) or param._runtime_param is not None:
        return
    desc = param.type_descriptor
    info = desc.parameter_info
    annotation: Any = desc.annotation
    origin: Any = get_origin(annotation)
    item = get_args(annotation)[0] if origin is list else annotation
    if item not in (str, int, float, Path) or desc.file_annotation is not None:
        return
    if item is not Path and routes_to_path(item, info):  # Typer would check it as a path
        return
    if (info.parser is not None or getattr(info, "click_type", None) is not None
            or info.min is not None or info.max is not None
            or getattr(info, "path_type", None) is not None):
        return
    param._runtime_param = _PlainRuntimeParam(parameter_info=info, annotation=annotation,
                                              descriptor=desc)


def _plain_params(params: list[_click.Parameter]) -> None:
    for param in params:
        _plain_coercion(param)
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""  # no "<bool>" column for flags
        elif type(param) is TyperOption and param.metavar is None:
            param.__class__ = _Option  # no "<str>", "<int>", "<float>" column either; _Option adds no state
        elif type(param) is TyperArgument:
            param.__class__ = _Argument  # Typer has no argument-class hook; _Argument adds no state


class _PlainHelp(_click.Command):
    """Help with no Python type words: plain parameter classes and a bare ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_params(self.params)

    def get_help_option(self, ctx: _click.Context) -> Any:
        opt = super().get_help_option(ctx)
        if opt is not None:
            opt.metavar = ""
            if isinstance(opt, TyperOption) and opt._runtime_param is None:
                # The flag is True or absent (None), neither of which is ever coerced; without
                # this Typer builds a pydantic adapter for it (~0.1 s of imports per command).
                opt._runtime_param = PassThroughRuntimeParam(annotation=bool,
                                                             parameter_info=OptionInfo())
        return opt


class VocabularyCommand(_PlainHelp, TyperCommand):
    """A command that accepts old spellings (with a notice) and prints no Python types in help."""

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, rewrite_old_spellings(_command_path(ctx), self, args))


class VocabularyGroup(_PlainHelp, TyperGroup):
    """A command group whose help prints no Python types."""


def use_vocabulary(app: typer.Typer) -> None:
    """Build every command of ``app`` (and of its groups) with the vocabulary classes."""
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):  # leave a command's own class alone
            command.cls = VocabularyCommand
    for group in app.registered_groups:
        sub = group.typer_instance
        own = sub.info.cls if isinstance(sub, typer.Typer) else None
        if isinstance(group.cls, DefaultPlaceholder) and (
                own is None or isinstance(own, DefaultPlaceholder) or own is TyperGroup):
            group.cls = VocabularyGroup
        if isinstance(sub, typer.Typer):
            use_vocabulary(sub)


# ---------------------------------------------------------------------------------------------
# JSON output


def echo_json(obj: Mapping[str, Any]) -> None:
    """Print ``obj`` as one JSON object on stdout (no NaN or Infinity: null instead)."""
    from cryoset.io.jsontext import json_safe

    typer.echo(json.dumps(json_safe(obj), indent=2, allow_nan=False, default=str))
