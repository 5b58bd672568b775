"""No module imports from a higher layer (issue #17, item 4); the picture is docs/architecture.md.

Every ``import``/``from … import`` of every module under src/cryoset is parsed (``ast``, so
imports inside functions and under ``TYPE_CHECKING`` count too) and checked against the
layer order below, lowest first. A package may import from its own layer or lower ones;
packages of one layer must not import each other in a cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import cryoset

#: The layers, lowest first: top-level package or module name → layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "deprecation", "geometry", "testing", "__init__"),  # 0 base
    ("io", "provenance"),  # 1 formats (provenance re-exports io.provenance)
    ("fourier",),  # 2 Fourier-space primitives
    ("ctf", "simulate", "particles", "picking", "recon", "classify", "maps", "trace",
     "store", "archives", "catalog"),  # 3 kernels and stores
    ("report", "datasets", "learn"),  # 4 figures, published datasets, models
    ("workflows",),  # 5 paths in, files out
    ("pipeline", "_compile"),  # 6 builds and the demo; numba warm-up at install (all kernels)
    ("cli", "view", "__main__"),  # 7 the command line; cryoset view's web app (issue #21)
)  # fmt: skip

#: The one allowed upward import: the demo drives the command line as a user would, via
#: ``cryoset.cli.main.main(argv)`` (docs/architecture.md).
ALLOWED_UPWARD: frozenset[tuple[str, str]] = frozenset({("cryoset.pipeline.demo", "cryoset.cli.main")})

_ROOT = Path(cryoset.__file__).parent
_LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append(target)
            out += [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}".count(".") >= 1]
    return [t for t in out if t == "cryoset" or t.startswith("cryoset.")]


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _edges() -> list[tuple[str, str]]:
    return [(_module_name(p), t) for p in sorted(_ROOT.rglob("*.py")) for t in _imports(p)]


def test_every_package_has_a_layer() -> None:
    tops = {_top(_module_name(p)) for p in _ROOT.rglob("*.py")}
    assert not tops - set(_LAYER), f"add these to LAYERS (and docs/architecture.md): {sorted(tops - set(_LAYER))}"


def test_no_upward_imports() -> None:
    bad = []
    for src, target in _edges():
        a, b = _top(src), _top(target)
        if b not in _LAYER:  # cryoset.<name> that is an attribute of cryoset/__init__ (e.g. __version__)
            continue
        if _LAYER[b] > _LAYER[a] and not any(
            src == s and target.startswith(t) for s, t in ALLOWED_UPWARD
        ):
            bad.append(f"{src} (layer {_LAYER[a]}) imports {target} (layer {_LAYER[b]})")
    assert not bad, "\n".join(sorted(set(bad)))


def test_no_cycles_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for src, target in _edges():
        a, b = _top(src), _top(target)
        allowed = any(src == s and target.startswith(t) for s, t in ALLOWED_UPWARD)
        if a != b and b in _LAYER and not allowed:
            graph[a].add(b)
    cycles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if a in graph.get(b, set())})
    assert not cycles, f"packages importing each other: {cycles}"


def test_io_images_above_io_mrc() -> None:
    """``io/images`` reads MRC micrographs through ``io/mrc``; ``io/mrc`` never imports it back."""
    assert not any(t.startswith("cryoset.io.images") for t in _imports(_ROOT / "io" / "mrc.py"))


def test_architecture_doc_names_every_layer() -> None:
    text = (_ROOT.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    for names in LAYERS:
        for name in names:
            if name not in ("__init__", "__main__", "testing"):
                assert name in text, name
