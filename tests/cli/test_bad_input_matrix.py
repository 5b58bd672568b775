"""The bad-input matrix: every command × {empty file, truncated file, wrong-format file,
NaN content, negative size, missing file, output under a regular file}.

Every cell must end with exit code 2, exactly one line on stderr (``error: …``) naming the
file or the parameter, no traceback, and nothing written: neither in the cell's own folder
nor next to the (shared, read-only) good inputs. The inputs are tiny and seeded, and every
command runs in-process, so the whole matrix takes seconds.

Cells that do not apply are left out, with the reason, in :data:`NOT_APPLICABLE`.
"""

from __future__ import annotations

import shutil
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from cryoset.cli.main import COMMAND_MODULES, build_app
from cryoset.testing import relion31_optics_block

KINDS = ("empty", "truncated", "wrong-format", "nan", "negative", "missing", "output-under-file")

# ----------------------------------------------------------------------------- inputs


def _png_bytes() -> bytes:
    """A valid 8×8 grayscale PNG: the "wrong format" for every non-image input."""
    raw = b"".join(b"\x00" + bytes(range(8)) for _ in range(8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


_PARTICLES_HEAD = """
data_particles

loop_
_rlnImageName #1
_rlnMicrographName #2
_rlnCoordinateX #3
_rlnCoordinateY #4
_rlnDefocusU #5
_rlnDefocusV #6
_rlnDefocusAngle #7
_rlnAngleRot #8
_rlnAngleTilt #9
_rlnAnglePsi #10
_rlnOriginXAngst #11
_rlnOriginYAngst #12
_rlnOpticsGroup #13
_rlnRandomSubset #14
"""


def particles_star(n: int, *, stack: str = "particles.mrcs", pixel: str = "2.0", size: int = 16,
                   defocus: str = "15000.0", index_offset: int = 0) -> str:
    """A RELION 3.1 particle STAR for ``n`` images of ``stack`` with poses and CTF."""
    rows = [
        f"{k + 1 + index_offset:06d}@{stack} mic.mrc {20 + k} {30 + k} {defocus} 14000.0 10.0 "
        f"{37.0 * k % 360:.1f} {23.0 * k % 180:.1f} {11.0 * k % 360:.1f} 0.0 0.0 1 {1 + k % 2}"
        for k in range(n)
    ]
    return relion31_optics_block(pixel, size) + "\n" + _PARTICLES_HEAD + "\n".join(rows) + "\n"


_MIC_CTF_STAR = """
data_optics

loop_
_rlnOpticsGroup #1
_rlnOpticsGroupName #2
_rlnMicrographPixelSize #3
_rlnVoltage #4
_rlnSphericalAberration #5
_rlnAmplitudeContrast #6
1 opticsGroup1 2.0 300.0 2.7 0.1

data_micrographs

loop_
_rlnMicrographName #1
_rlnOpticsGroup #2
_rlnDefocusU #3
_rlnDefocusV #4
_rlnDefocusAngle #5
_rlnCtfMaxResolution #6
mic.mrc 1 {defocus} 14000.0 10.0 6.0
"""


def pdb_text(coords: list[tuple[str, str, str]]) -> str:
    """ATOM records of consecutive ALA residues (N, CA, C each) at the given coordinate texts."""
    lines = []
    names = ("N", "CA", "C")
    for k, (x, y, z) in enumerate(coords):
        res = k // 3 + 1
        name = names[k % 3]
        lines.append(f"ATOM  {k + 1:5d}  {name:<3s} ALA A{res:4d}    {x:>8s}{y:>8s}{z:>8s}"
                     f"  1.00  0.00           {name[0]}")
    return "\n".join(lines) + "\nEND\n"


def _model_coords(rng: np.random.Generator, n_res: int, centre: float) -> list[tuple[str, str, str]]:
    pts = centre + rng.uniform(-6.0, 6.0, size=(3 * n_res, 3))
    return [tuple(f"{v:.3f}" for v in p) for p in pts]  # type: ignore[misc]


@dataclass(frozen=True)
class Inputs:
    """The good inputs every cell starts from (treated as read-only)."""

    root: Path

    def __getattr__(self, name: str) -> Path:  # inputs.mic → root/"mic.mrc" etc.
        return self.root / _NAMES[name]


_NAMES = {
    "mic": "mic.mrc", "picks": "picks", "mic_ctf": "mic_ctf.star", "star": "particles.star",
    "stack": "particles.mrcs", "map": "map.mrc", "model": "model.pdb", "fasta": "seq.fasta",
    "ca_npy": "ca.npy", "aa_npy": "aa.npy", "templates": "templates.mrcs", "store": "store",
    "zarr": "sub.zarr", "config": "build.yaml", "map_list": "maps.csv", "records": "records.csv",
    "coords": "picks/mic.star", "png": "image.png", "selection": "selection.parquet",
    "panda": "panda", "panda_h5": "panda/10017_particles.h5", "prepared": "prepared",
    "weights": "voxelnet.safetensors", "vit": "vit.safetensors",
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    from cryoset.io.coords import write_coords
    from cryoset.io.mrc import write_map, write_stack
    from cryoset.store.dataset import ParticleStore
    from cryoset.workflows.maps import write_subgrids

    rng = np.random.default_rng(20261123)
    root = tmp_path_factory.mktemp("good")
    inp = Inputs(root)
    write_stack(inp.mic, rng.normal(size=(1, 128, 128)).astype(np.float32), 2.0)
    import pandas as pd

    picks = pd.DataFrame({"micrograph": "mic.mrc", "x_px": [40.0, 64.0, 90.0], "y_px": [40.0, 70.0, 88.0]})
    write_coords(inp.coords, picks)
    inp.mic_ctf.write_text(_MIC_CTF_STAR.format(defocus="15000.0"))
    write_stack(inp.stack, rng.normal(size=(8, 16, 16)).astype(np.float32), 2.0)
    inp.star.write_text(particles_star(8))
    zz, yy, xx = np.mgrid[:16, :16, :16]
    density = np.exp(-((zz - 8.0) ** 2 + (yy - 8.0) ** 2 + (xx - 8.0) ** 2) / 20.0).astype(np.float32)
    write_map(inp.map, density, 2.0)
    inp.model.write_text(pdb_text(_model_coords(rng, 4, 15.0)))
    inp.fasta.write_text(">A\nAAAA\n")
    ca = np.zeros((16, 16, 16), np.float32)  # a 4-residue chain of Cα peaks 3.8 Å apart (1 Å voxels)
    for k in range(4):
        ca[8, 8, 2 + 4 * k] = 1.0
    np.save(inp.ca_npy, ca)
    np.save(inp.aa_npy, np.full((20, 16, 16, 16), 0.05, np.float32))
    write_stack(inp.templates, rng.normal(size=(2, 16, 16)).astype(np.float32), 2.0)
    store = ParticleStore.create(inp.store)
    store.add_experiment("x", rng.normal(size=(4, 16, 16)).astype(np.float32),
                         pd.DataFrame({"pixel_size_a": [2.0] * 4}))
    pd.DataFrame({"experiment_id": ["x"], "particle_index": [0]}).to_parquet(inp.selection)
    from cryoset.store.exports import export_hdf5

    export_hdf5(store, store.select(), inp.panda_h5, size=16)
    from cryoset.maps.dataset import PrepareOptions
    from cryoset.workflows.maps import prepare_map

    prepare_map(inp.map, inp.prepared, inp.model, options=PrepareOptions(box=8, overlap=2, subgrids=False))
    _tiny_voxelnet(inp.weights)
    _tiny_vit(inp.vit)
    write_subgrids(inp.zarr, {"density": density}, box=8, overlap=2,
                   attributes={"voxel_size_a": [2.0] * 3, "origin_a": [0.0] * 3})
    inp.config.write_text(
        "experiments:\n  - id: sim\n    simulated: {seed: 1, protein_length: 20, micrographs: 1}\n")
    inp.map_list.write_text("emdb_id,map\nEMD-1,map.mrc\n")
    inp.records.write_text("experiment_id,empiar_id,sequences\nEMPIAR-1,1,MKV\n")
    inp.png.write_bytes(_png_bytes())
    return inp


def _tiny_voxelnet(path: Path) -> None:
    """A small, randomly initialised voxel-network checkpoint (as tests/learn writes them)."""
    from dataclasses import asdict

    import torch

    from cryoset.learn.checkpoint import write_weights
    from cryoset.learn.voxel_train import KIND
    from cryoset.learn.voxelnet import VoxelNetConfig, build_voxel_net

    torch.manual_seed(0)
    cfg = VoxelNetConfig(base_channels=4, levels=3)
    write_weights(path, build_voxel_net(cfg).state_dict(), kind=KIND, config={"model": asdict(cfg)})


def _tiny_vit(path: Path) -> None:
    """A small, randomly initialised ViT checkpoint (``cryoset embed`` / ``featuremap``)."""
    import torch

    from cryoset.learn.vit import VisionTransformer, ViTConfig
    from cryoset.learn.vit_weights import save_vit

    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(embed_dim=16, depth=1, num_heads=1, patch_size=8, img_size=16))
    save_vit(path, model, metadata={"normalization": {"kind": "store"}, "input_size": 16})


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time (files). A directory's own
    mtime changes when a temporary entry comes and goes, and a store's lock file records who
    last held it: neither is output."""
    return {str(p.relative_to(root)): (0, 0) if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if not p.name.endswith(".lock")}


# ----------------------------------------------------------------------------- cells


@dataclass
class Cell:
    """One bad-input case: ``argv(inputs, tmp)`` gives the command line; the error line must
    contain ``needle(inputs, tmp)``."""

    command: str
    kind: str
    argv: Callable[[Inputs, Path], list[object]]
    needle: Callable[[Inputs, Path], str]

    @property
    def id(self) -> str:
        return f"{self.command}:{self.kind}"


def _file(name: str, content: bytes | str) -> Callable[[Inputs, Path], Path]:
    """A bad input written into the cell folder."""

    def make(inp: Inputs, tmp: Path) -> Path:
        p = tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            p.write_text(content)
        else:
            p.write_bytes(content)
        return p

    return make


def _truncate(attr: str, keep: int | None = None, name: str | None = None) -> Callable[[Inputs, Path], Path]:
    """A copy of a good input cut short (by default to 2/3 of its size)."""

    def make(inp: Inputs, tmp: Path) -> Path:
        data = getattr(inp, attr).read_bytes()
        p = tmp / (name or getattr(inp, attr).name)
        p.write_bytes(data[: keep if keep is not None else 2 * len(data) // 3])
        return p

    return make


def _nan_mrc(name: str, shape: tuple[int, ...], *, stack: bool) -> Callable[[Inputs, Path], Path]:
    def make(inp: Inputs, tmp: Path) -> Path:
        p = tmp / name
        data = np.random.default_rng(1).normal(size=shape).astype(np.float32)
        data.reshape(-1)[::7] = np.nan
        with mrcfile.new(p) as mrc, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # mrcfile: "Data array contains NaN"
            mrc.set_data(data)
            if stack:
                mrc.set_image_stack()
            mrc.voxel_size = 2.0
        return p

    return make


def _blocked(tmp: Path, name: str = "out") -> Path:
    """An output path whose parent is a regular file."""
    blocker = tmp / "blocker"
    blocker.write_text("a regular file\n")
    return blocker / name


def _png(name: str) -> Callable[[Inputs, Path], Path]:
    return _file(name, _png_bytes())


def _probe_file(tmp: Path, index: int, file_name: str = "x_particles.h5") -> Path:
    """A cryoPANDA probe Parquet file naming one particle of the good store's experiment ``x``."""
    import pandas as pd

    path = tmp / "probe.parquet"
    pd.DataFrame({"FileIndex": [0], "FileName": [file_name], "FileParticleIndex": [index], "BinIndex": [0],
                  "BinCenter": [1.0], "AnnotationValue": [1.0]}).to_parquet(path)
    return path


def _missing(name: str) -> Callable[[Inputs, Path], Path]:
    return lambda inp, tmp: tmp / name


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _object_npy(path: Path) -> Path:
    """A ``.npy`` holding Python objects (loading it would unpickle)."""
    arr = np.empty((4, 4, 4), dtype=object)
    arr[...] = 0.5
    np.save(path, arr, allow_pickle=True)
    return path


def _nan_npy(path: Path) -> Path:
    data = np.full((16, 16, 16), np.nan, np.float32)
    data[8, 8, 8] = 1.0
    np.save(path, data)
    return path


def _oversized_mrc(good: Path, path: Path) -> Path:
    """A map whose header says 16-bit integers while the data block holds float32: the file
    is twice the size its mode and shape imply (``validate`` says INVALID)."""
    shutil.copy2(good, path)
    with mrcfile.open(path, mode="r+", permissive=True) as mrc:
        mrc.header.mode = 1
    return path


def _truncated_zarr(good: Path, path: Path) -> Path:
    shutil.copytree(good, path)
    chunks = sorted(p for p in (path / "density").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunks[0].write_bytes(chunks[0].read_bytes()[:40])
    return path


def _nan_zarr(path: Path) -> Path:
    from cryoset.workflows.maps import write_subgrids

    data = np.full((16, 16, 16), np.nan, np.float32)
    return write_subgrids(path, {"density": data}, box=8, overlap=2,
                          attributes={"voxel_size_a": [2.0] * 3, "origin_a": [0.0] * 3})


def _pickle_zarr(path: Path) -> Path:
    """A Zarr v2 sub-grid store whose ``density`` array declares the pickle filter."""
    import json

    path.mkdir()
    (path / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (path / ".zattrs").write_text(json.dumps({"map_shape": [8, 8, 8], "box": 8, "overlap": 2}))
    (path / "density").mkdir()
    (path / "density" / ".zarray").write_text(json.dumps({
        "shape": [1, 8, 8, 8], "chunks": [1, 8, 8, 8], "dtype": "<f4", "fill_value": 0.0,
        "order": "C", "filters": [{"id": "pickle", "protocol": 5}], "compressor": None,
        "dimension_separator": ".", "zarr_format": 2}))
    (path / "density" / "0.0.0.0").write_bytes(b"\x80\x05N.")  # pickle of None
    return path


def cells() -> list[Cell]:
    out: list[Cell] = []

    def add(command: str, kind: str, make: Callable[[Inputs, Path], Path] | None,
            argv: Callable[[Inputs, Path, Path | None], list[object]], needle: str | None = None) -> None:
        """``make`` builds the bad path (also the needle unless ``needle`` names a parameter)."""
        made: dict[str, Path] = {}

        def build(inp: Inputs, tmp: Path) -> list[object]:
            path = make(inp, tmp) if make is not None else None
            if path is not None:
                made["path"] = path
            return argv(inp, tmp, path)

        def find(inp: Inputs, tmp: Path) -> str:
            if needle is not None:
                return needle
            return made["path"].name

        out.append(Cell(command, kind, build, find))

    png = _png

    # --- info FILE…
    add("info", "empty", _file("e.mrc", b""), lambda i, t, p: ["info", p])
    add("info", "truncated", _truncate("mic", 1500), lambda i, t, p: ["info", p])
    add("info", "wrong-format", png("w.star"), lambda i, t, p: ["info", p])
    add("info", "nan", _file("n.pdb", pdb_text([("nan", "1.0", "2.0")] * 3)), lambda i, t, p: ["info", p])
    add("info", "negative", None, lambda i, t, p: ["info", i.coords, "--micrograph-shape-px", "-5", "-5"],
        "--micrograph-shape-px")
    add("info", "missing", _missing("m.mrc"), lambda i, t, p: ["info", p])
    # info has no output.

    # --- validate FILE…: a file that is readable as MRC but breaks rules (wrong format, NaN)
    # is a verdict (exit 1, rules on stdout), not an error; see NOT_APPLICABLE.
    add("validate", "empty", _file("e.mrc", b""), lambda i, t, p: ["validate", p])
    add("validate", "truncated", _truncate("mic", 600), lambda i, t, p: ["validate", p])
    add("validate", "missing", _missing("m.mrc"), lambda i, t, p: ["validate", p])

    # --- convert IN OUT
    add("convert", "empty", _file("e.star", b""), lambda i, t, p: ["convert", p, t / "o.box"])
    add("convert", "truncated", _truncate("coords", 40, "t.star"), lambda i, t, p: ["convert", p, t / "o.box"])
    add("convert", "wrong-format", png("w.star"), lambda i, t, p: ["convert", p, t / "o.box"])
    add("convert", "nan", _file("n.star", "data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\nnan 10\n"),
        lambda i, t, p: ["convert", p, t / "o.box", "--box-px", "10"])
    add("convert", "negative", None,
        lambda i, t, p: ["convert", i.coords, t / "o.box", "--box-px", "-10"], "--box-px")
    add("convert", "missing", _missing("m.star"), lambda i, t, p: ["convert", p, t / "o.box"])
    add("convert", "output-under-file", None,
        lambda i, t, p: ["convert", i.coords, _blocked(t, "o.box"), "--box-px", "10"], "blocker")

    # --- ctf MICROGRAPHS… --out
    def ctf(p: object, *extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, q: ["ctf", q if p is None else p, "--out", t / "ctf", "--no-plots", *extra]

    add("ctf", "empty", _file("e.mrc", b""), ctf(None))
    add("ctf", "truncated", _truncate("mic"), ctf(None))
    add("ctf", "wrong-format", png("w.mrc"), ctf(None))
    add("ctf", "nan", _nan_mrc("n.mrc", (1, 128, 128), stack=True), ctf(None))
    add("ctf", "negative", None, lambda i, t, p: ["ctf", i.mic, "--out", t / "ctf", "--pixel-size-a", "-1"],
        "--pixel-size-a")
    add("ctf", "missing", _missing("m.mrc"), ctf(None))
    add("ctf", "output-under-file", None, lambda i, t, p: ["ctf", i.mic, "--out", _blocked(t)], "blocker")

    # --- pick MICROGRAPHS… --diameter-a --out
    def pick(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["pick", p, "--diameter-a", "20", "--out", t / "picks", *extra]

    add("pick", "empty", _file("e.mrc", b""), pick())
    add("pick", "truncated", _truncate("mic"), pick())
    add("pick", "wrong-format", png("w.mrc"), pick())
    add("pick", "nan", _nan_mrc("n.mrc", (1, 128, 128), stack=True), pick())
    add("pick", "negative", None, lambda i, t, p: ["pick", i.mic, "--diameter-a", "-20", "--out", t / "o"],
        "--diameter-a")
    add("pick", "missing", _missing("m.mrc"), pick())
    add("pick", "output-under-file", None,
        lambda i, t, p: ["pick", i.mic, "--diameter-a", "20", "--out", _blocked(t)], "blocker")
    add("pick", "nan-templates", _nan_mrc("n.mrcs", (2, 16, 16), stack=True),
        lambda i, t, p: ["pick", i.mic, "--diameter-a", "20", "--out", t / "o", "--method", "template",
                         "--templates", p])

    # --- evaluate-picks PICKS TRUTH (no output)
    add("evaluate-picks", "empty", _file("e.star", b""), lambda i, t, p: ["evaluate-picks", p, i.coords])
    add("evaluate-picks", "truncated", _truncate("coords", 40, "t.star"),
        lambda i, t, p: ["evaluate-picks", p, i.coords])
    add("evaluate-picks", "wrong-format", png("w.star"), lambda i, t, p: ["evaluate-picks", p, i.coords])
    add("evaluate-picks", "nan", _file("n.star", "data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\nnan 10\n"),
        lambda i, t, p: ["evaluate-picks", p, i.coords])
    add("evaluate-picks", "negative", None,
        lambda i, t, p: ["evaluate-picks", i.coords, i.coords, "--diameter-px", "-5"], "--diameter-px")
    add("evaluate-picks", "missing", _missing("m.star"), lambda i, t, p: ["evaluate-picks", p, i.coords])

    # --- extract MICROGRAPHS… --picks --out
    def extract(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["extract", p.parent / "mic.mrc" if p is not None else i.mic, "--picks",
                                i.picks, "--box-px", "16", "--out", t / "parts", *extra]

    add("extract", "empty", _file("e/mic.mrc", b""), extract())
    add("extract", "truncated", _truncate("mic", name="mic.mrc"), extract())
    add("extract", "wrong-format", png("w/mic.mrc"), extract())
    add("extract", "nan", _nan_mrc("mic.mrc", (1, 128, 128), stack=True), extract())
    add("extract", "negative", None,
        lambda i, t, p: ["extract", i.mic, "--picks", i.picks, "--box-px", "16", "--out", t / "o",
                         "--pixel-size-out-a", "-1"], "--pixel-size-out-a")
    add("extract", "missing", _missing("x/mic.mrc"), extract())
    add("extract", "output-under-file", None,
        lambda i, t, p: ["extract", i.mic, "--picks", i.picks, "--box-px", "16", "--out", _blocked(t)], "blocker")
    add("extract", "huge-box", None,
        lambda i, t, p: ["extract", i.mic, "--picks", i.picks, "--box-px", "100000", "--out", t / "o"], "--box-px")
    add("extract", "picks-at-edge", _file("edge/mic.star", "data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n"
                                           "1 1\n126 126\n"),
        lambda i, t, p: ["extract", i.mic, "--picks", p.parent, "--box-px", "32", "--out", t / "o"], "edge")

    # --- classify2d STAR --out, reconstruct STAR --out
    def star_with(stack_maker: Callable[[Inputs, Path], Path] | None, star: str | None = None
                  ) -> Callable[[Inputs, Path], Path]:
        def make(i: Inputs, t: Path) -> Path:
            if stack_maker is not None:
                stack_maker(i, t)
            else:
                shutil.copy2(i.stack, t / "particles.mrcs")
            p = t / "particles.star"
            p.write_text(star if star is not None else particles_star(8))
            return p
        return make

    nan_stack = _nan_mrc("particles.mrcs", (8, 16, 16), stack=True)
    trunc_stack = _truncate("stack", 1024 + 3 * 16 * 16 * 4)
    for cmd, argv in (
        ("classify2d", lambda i, out: ["-K", "2", "--n-iter", "1", "--out", out]),
        ("reconstruct", lambda i, out: ["--out", out / "map.mrc"]),
        ("abinitio", lambda i, out: ["--n-iter", "1", "--out", out]),
        ("refine", lambda i, out: ["--reference", i.map, "--iterations", "1", "--out", out]),
    ):
        def run(cmd: str = cmd, argv: Callable[[Inputs, Path], list[object]] = argv
                ) -> Callable[[Inputs, Path, Path | None], list[object]]:
            return lambda i, t, p: [cmd, p, *argv(i, t / "res")]

        add(cmd, "empty", _file("e.star", b""), run())
        add(cmd, "truncated", star_with(trunc_stack), run(), "particles.mrcs")
        add(cmd, "wrong-format", png("w.star"), run())
        add(cmd, "nan", star_with(nan_stack), run(), "particles.mrcs")
        add(cmd, "nan-ctf", star_with(None, particles_star(8, defocus="nan")), run(), "NaN")
        add(cmd, "negative", star_with(None, particles_star(8, pixel="-2.0")), run())
        add(cmd, "zero-pixel-size", star_with(None, particles_star(8, pixel="0.0")), run())
        add(cmd, "missing", _missing("m.star"), run())
        add(cmd, "output-under-file", None,
            lambda i, t, p, cmd=cmd, argv=argv: [cmd, i.star, *argv(i, _blocked(t))], "blocker")
        add(cmd, "index-out-of-range", star_with(None, particles_star(8, index_offset=4)), run())
        add(cmd, "image-size-contradicts-stack", star_with(None, particles_star(8, size=32)), run())
    add("reconstruct", "nan-reference", _nan_mrc("ref.mrc", (16, 16, 16), stack=False),
        lambda i, t, p: ["reconstruct", i.star, "--out", t / "r.mrc", "--reference", p])
    add("reconstruct", "missing-reference", _missing("ref.mrc"),
        lambda i, t, p: ["reconstruct", i.star, "--out", t / "r.mrc", "--reference", p])

    # --- poses export STAR --out DIR [--store STORE --experiment ID] (reads the STAR only, no images)
    def poses(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["poses", "export", p if p is not None else i.star, "--out", t / "poses", *extra]

    good_star = particles_star(8)
    add("poses export", "empty", _file("e.star", b""), poses())
    add("poses export", "truncated", _file("t.star", good_star[: good_star.rindex("\n", 0, -1) + 12]), poses())
    add("poses export", "wrong-format", png("w.star"), poses())
    add("poses export", "nan", _file("n.star", good_star.replace(" 37.0 23.0 11.0 ", " nan 23.0 11.0 ")), poses())
    add("poses export", "negative", None, poses("--match-tolerance-px", "-1"), "--match-tolerance-px")
    add("poses export", "missing", _missing("m.star"), poses())
    add("poses export", "output-under-file", None,
        lambda i, t, p: ["poses", "export", i.star, "--out", _blocked(t)], "blocker")
    add("poses export", "unknown-experiment", None,
        lambda i, t, p: ["poses", "export", i.star, "--out", t / "poses", "--store", i.store, "--experiment", "NOPE"],
        "NOPE")

    # --- postprocess HALF1 HALF2 --out DIR, mask-create MAP --out MASK (the bad file as half 1 / the map)
    def map_cmd(cmd: str, *extra: str) -> Callable[[Inputs, Path, Path | None], list[object]]:
        def argv(i: Inputs, t: Path, p: Path | None) -> list[object]:
            out = ["--out", t / "post"] if cmd == "postprocess" else ["--out", t / "mask.mrc"]
            return [cmd, i.map if p is None else p, *([i.map] if cmd == "postprocess" else []), *out, *extra]
        return argv

    for cmd in ("postprocess", "mask-create"):
        add(cmd, "empty", _file("e.mrc", b""), map_cmd(cmd))
        add(cmd, "truncated", _truncate("map"), map_cmd(cmd))
        add(cmd, "wrong-format", _png("w.mrc"), map_cmd(cmd))
        add(cmd, "nan", _nan_mrc("n.mrc", (16, 16, 16), stack=False), map_cmd(cmd))
        add(cmd, "missing", _missing("m.mrc"), map_cmd(cmd))
        add(cmd, "negative", None, map_cmd(cmd, "--extend-px", "-1"), "--extend-px")
    add("postprocess", "output-under-file", None,
        lambda i, t, p: ["postprocess", i.map, i.map, "--out", _blocked(t)], "blocker")
    add("mask-create", "output-under-file", None,
        lambda i, t, p: ["mask-create", i.map, "--out", _blocked(t, "m.mrc")], "blocker")
    add("postprocess", "nan-half2", _nan_mrc("n2.mrc", (16, 16, 16), stack=False),
        lambda i, t, p: ["postprocess", i.map, p, "--out", t / "post"])
    add("postprocess", "nan-mask", _nan_mrc("mask.mrc", (16, 16, 16), stack=False),
        lambda i, t, p: ["postprocess", i.map, i.map, "--out", t / "post", "--mask", p])

    # --- trace CA --aa-prob --sequence -o
    def trace(ca: Callable[[Inputs, Path], Path] | None = None) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["trace", p if p is not None else i.ca_npy, "--aa-prob", i.aa_npy,
                                "--sequence", i.fasta, "-o", t / "trace.pdb"]

    add("trace", "empty", _file("e.npy", b""), trace())
    add("trace", "truncated", _truncate("ca_npy", 200), trace())
    add("trace", "wrong-format", png("w.npy"), trace())
    add("trace", "object-npy", lambda i, t: _object_npy(t / "o.npy"), trace())
    add("trace", "nan", lambda i, t: _nan_npy(t / "n.npy"), trace())
    add("trace", "negative", None,
        lambda i, t, p: ["trace", i.ca_npy, "--aa-prob", i.aa_npy, "--sequence", i.fasta, "-o", t / "o.pdb",
                         "--voxel-size-a", "-1"], "--voxel-size-a")
    add("trace", "missing", _missing("m.npy"), trace())
    add("trace", "output-under-file", None,
        lambda i, t, p: ["trace", i.ca_npy, "--aa-prob", i.aa_npy, "--sequence", i.fasta, "-o",
                         _blocked(t, "o.pdb")], "blocker")

    # --- predict MAP -o, model-build MAP --sequence -o (the voxel network on a map)
    for cmd, extra, out_name in (("predict", [], "pred"), ("model-build", ["--sequence", "FASTA"], "m.pdb")):
        def net(cmd: str = cmd, extra: list[str] = extra, out_name: str = out_name
                ) -> Callable[[Inputs, Path, Path | None], list[object]]:
            return lambda i, t, p: [cmd, p, *[i.fasta if e == "FASTA" else e for e in extra],
                                    "--checkpoint", i.weights, "-o", t / out_name]

        add(cmd, "empty", _file("e.mrc", b""), net())
        add(cmd, "truncated", _truncate("map"), net())
        add(cmd, "wrong-format", png("w.mrc"), net())
        add(cmd, "nan", _nan_mrc("n.mrc", (16, 16, 16), stack=False), net())
        add(cmd, "negative", None,
            lambda i, t, p, cmd=cmd, extra=extra, out_name=out_name: [
                cmd, i.map, *[i.fasta if e == "FASTA" else e for e in extra], "--checkpoint", i.weights,
                "-o", t / out_name, "--batch-size", "-1"], "--batch-size")
        add(cmd, "missing", _missing("m.mrc"), net())
        add(cmd, "output-under-file", None,
            lambda i, t, p, cmd=cmd, extra=extra, out_name=out_name: [
                cmd, i.map, *[i.fasta if e == "FASTA" else e for e in extra], "--checkpoint", i.weights,
                "-o", _blocked(t, out_name)],
            "blocker")

    # --- train voxel CONFIG, train voxel-corpus STRUCTURE… -o
    def train(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["train", "voxel", p, "-o", t / "run", *extra]

    add("train voxel", "empty", _file("e.yaml", b""), train())
    add("train voxel", "truncated", _file("t.yaml", "data:\n  maps: [a, b\n"), train())
    add("train voxel", "wrong-format", png("w.yaml"), train())
    def train_config(body: str) -> Callable[[Inputs, Path], Path]:
        return lambda i, t: _file("c.yaml", f"data: [{i.prepared}]\n{body}")(i, t)

    add("train voxel", "nan", train_config("train: {lr: .nan}\n"), train())
    add("train voxel", "negative", train_config("train: {epochs: -1}\n"), train())
    add("train voxel", "missing", _missing("m.yaml"), train())
    add("train voxel", "output-under-file", train_config(""),
        lambda i, t, p: ["train", "voxel", p, "-o", _blocked(t)], "blocker")

    def corpus(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["train", "voxel-corpus", p, "-o", t / "corpus", *extra]

    add("train voxel-corpus", "empty", _file("e.pdb", b""), corpus())
    add("train voxel-corpus", "truncated", _truncate("model", 100), corpus())
    add("train voxel-corpus", "wrong-format", png("w.pdb"), corpus())
    add("train voxel-corpus", "nan", _file("n.pdb", pdb_text([("nan", "1.0", "2.0")] * 3)), corpus())
    add("train voxel-corpus", "negative", None,
        lambda i, t, p: ["train", "voxel-corpus", i.model, "-o", t / "c", "--variants", "-1"], "--variants")
    add("train voxel-corpus", "missing", _missing("m.pdb"), corpus())
    add("train voxel-corpus", "output-under-file", None,
        lambda i, t, p: ["train", "voxel-corpus", i.model, "-o", _blocked(t)], "blocker")

    # --- train ssl-corpus --shared-data DIR -o: bad structure files inside the shared data folder
    def in_shared(make: Callable[[Inputs, Path], Path]) -> Callable[[Inputs, Path], Path]:
        def wrapped(i: Inputs, t: Path) -> Path:
            p = make(i, t)
            target = t / "shared" / "structures" / p.name
            target.parent.mkdir(parents=True, exist_ok=True)
            p.rename(target)
            return target
        return wrapped

    def ssl_corpus(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["train", "ssl-corpus", "--shared-data", t / "shared", "-o", t / "corpus", *extra]

    add("train ssl-corpus", "empty", in_shared(_file("e.pdb", b"")), ssl_corpus())
    add("train ssl-corpus", "truncated", in_shared(_truncate("model", 100)), ssl_corpus())
    add("train ssl-corpus", "wrong-format", in_shared(png("w.pdb")), ssl_corpus())
    add("train ssl-corpus", "nan", in_shared(_file("n.pdb", pdb_text([("nan", "1.0", "2.0")] * 3))), ssl_corpus())
    add("train ssl-corpus", "negative", None,
        lambda i, t, p: ["train", "ssl-corpus", "--shared-data", t, "-o", t / "c",
                         "--particles-per-experiment", "-1"], "--particles-per-experiment")
    add("train ssl-corpus", "missing", _missing("nope"),
        lambda i, t, p: ["train", "ssl-corpus", "--shared-data", p, "-o", t / "c"])
    add("train ssl-corpus", "output-under-file", None,
        lambda i, t, p: ["train", "ssl-corpus", "--shared-data", t, "-o", _blocked(t)], "blocker")

    # --- train ssl CONFIG -o OUT (the configuration is checked before any store is read)
    def ssl(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["train", "ssl", p, "-o", t / "run", *extra]

    def ssl_config(body: str) -> Callable[[Inputs, Path], Path]:
        return lambda i, t: _file("s.yaml", f"data: [{t / 'store'}]\n{body}")(i, t)

    add("train ssl", "empty", _file("e.yaml", b""), ssl())
    add("train ssl", "truncated", _file("t.yaml", "data: [a, b\noptim: {epochs: 2\n"), ssl())
    add("train ssl", "wrong-format", png("w.yaml"), ssl())
    add("train ssl", "nan", ssl_config("optim: {min_lr: .nan}\n"), ssl())
    add("train ssl", "negative", ssl_config("optim: {epochs: -1}\n"), ssl())
    add("train ssl", "missing", _missing("m.yaml"), ssl())
    add("train ssl", "output-under-file", ssl_config(""),
        lambda i, t, p: ["train", "ssl", p, "-o", _blocked(t)], "blocker")

    # --- compare-models PRED REF (no output)
    add("compare-models", "empty", _file("e.pdb", b""), lambda i, t, p: ["compare-models", p, i.model])
    add("compare-models", "truncated", _truncate("model", 100), lambda i, t, p: ["compare-models", p, i.model])
    add("compare-models", "wrong-format", png("w.pdb"), lambda i, t, p: ["compare-models", p, i.model])
    add("compare-models", "nan", _file("n.pdb", pdb_text([("nan", "1.0", "2.0")] * 3)),
        lambda i, t, p: ["compare-models", p, i.model])
    add("compare-models", "negative", None,
        lambda i, t, p: ["compare-models", i.model, i.model, "--max-distance-a", "-1"], "--max-distance-a")
    add("compare-models", "missing", _missing("m.pdb"), lambda i, t, p: ["compare-models", p, i.model])
    add("compare-models", "garbage-coordinates", _file("g.pdb", pdb_text([("abc.def", "1.0", "2.0")] * 3)),
        lambda i, t, p: ["compare-models", p, i.model])

    # --- query SQL --store [--out]
    def store_json(content: str) -> Callable[[Inputs, Path], Path]:
        def make(i: Inputs, t: Path) -> Path:
            (t / "s").mkdir()
            (t / "s" / "store.json").write_text(content)
            return t / "s" / "store.json"
        return make

    add("query", "empty", store_json(""), lambda i, t, p: ["query", "SELECT 1", "--store", p.parent])
    add("query", "truncated", store_json('{"format": "cryo'), lambda i, t, p: ["query", "SELECT 1", "--store", p.parent])
    add("query", "wrong-format", store_json("\x89PNG"), lambda i, t, p: ["query", "SELECT 1", "--store", p.parent])
    add("query", "negative", None, lambda i, t, p: ["query", "SELECT 1", "--store", i.store, "--show", "-1"],
        "--show")
    add("query", "missing", _missing("nostore"), lambda i, t, p: ["query", "SELECT 1", "--store", p])
    add("query", "output-under-file", None,
        lambda i, t, p: ["query", "SELECT 1 AS a", "--store", i.store, "--out", _blocked(t, "q.parquet")],
        "blocker")

    # --- build CONFIG --out
    def build(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["build", p, "--out", t / "b", "--quiet", *extra]

    def config(sim: str) -> str:
        return f"experiments:\n  - id: sim\n    simulated: {{seed: 1, protein_length: 20, micrographs: 1{sim}}}\n"

    add("build", "empty", _file("e.yaml", b""), build())
    add("build", "truncated", _truncate("config", 60), build())
    add("build", "wrong-format", png("w.yaml"), build())
    add("build", "nan", _file("n.yaml", config(", pixel_size_a: .nan")), build())
    add("build", "negative", _file("neg.yaml", config(", size_px: -512")), build())
    add("build", "absurd-size", _file("huge.yaml", config(", size_px: 10000000")), build())
    add("build", "missing", _missing("m.yaml"), build())
    add("build", "output-under-file", None, lambda i, t, p: ["build", i.config, "--out", _blocked(t)], "blocker")

    # --- simulate protein/map/micrographs/particles
    add("simulate protein", "negative", None,
        lambda i, t, p: ["simulate", "protein", "--protein-length", "-5", "--out", t / "p.pdb"], "length")
    add("simulate protein", "output-under-file", None,
        lambda i, t, p: ["simulate", "protein", "--out", _blocked(t, "p.pdb")], "blocker")
    sims: dict[str, tuple[list[object], list[object], str]] = {
        "map": (["--resolution-a", "8", "--box-px", "16"], ["--voxel-size-a", "-1"], "--voxel-size-a"),
        "micrographs": (["--micrographs", "1", "--size-px", "128", "--particles-per-micrograph", "1"],
                        ["--size-px", "-64"], "size"),
        "particles": (["--particles", "2", "--box-px", "16"], ["--box-px", "-16"], "box"),
    }
    for sub, (ok, neg, neg_needle) in sims.items():
        def sim(sub: str = sub, ok: list[object] = ok, out: str = "o.mrc" if sub == "map" else "o"
                ) -> Callable[[Inputs, Path, Path | None], list[object]]:
            return lambda i, t, p: ["simulate", sub, "--model", p, *ok, "--out", t / out]

        name = f"simulate {sub}"
        target = "o.mrc" if sub == "map" else "o"
        add(name, "empty", _file("e.pdb", b""), sim())
        add(name, "truncated", _truncate("model", 100), sim())
        add(name, "wrong-format", png("w.pdb"), sim())
        add(name, "nan", _file("n.pdb", pdb_text([("nan", "1.0", "2.0")] * 3)), sim())
        add(name, "negative", None,
            lambda i, t, p, sub=sub, neg=neg, target=target: ["simulate", sub, "--model", i.model, *neg,
                                                              "--out", t / target], neg_needle)
        add(name, "missing", _missing("m.pdb"), sim())
        add(name, "output-under-file", None,
            lambda i, t, p, sub=sub, ok=ok, target=target: ["simulate", sub, "--model", i.model, *ok,
                                                            "--out", _blocked(t, target)], "blocker")

    # --- map prepare/subgrids/stitch/build
    def prepare(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["map", "prepare", p, "--out", t / "prep", "--box-px", "8", "--overlap-px", "2", *extra]

    add("map prepare", "empty", _file("e.mrc", b""), prepare())
    add("map prepare", "truncated", _truncate("map"), prepare())
    add("map prepare", "wrong-format", png("w.mrc"), prepare())
    add("map prepare", "nan", _nan_mrc("n.mrc", (16, 16, 16), stack=False), prepare())
    add("map prepare", "negative", None,
        lambda i, t, p: ["map", "prepare", i.map, "--out", t / "o", "--voxel-size-a", "-1"], "--voxel-size-a")
    add("map prepare", "missing", _missing("m.mrc"), prepare())
    add("map prepare", "output-under-file", None,
        lambda i, t, p: ["map", "prepare", i.map, "--out", _blocked(t), "--box-px", "8", "--overlap-px", "2"], "blocker")
    add("map prepare", "model-outside-map", _file("far.pdb", pdb_text([("500.0", "500.0", "500.0")] * 3)),
        lambda i, t, p: ["map", "prepare", i.map, "--model", p, "--out", t / "o", "--box-px", "8", "--overlap-px", "2"])
    add("map prepare", "garbage-model", _file("g.pdb", pdb_text([("abc.def", "1.0", "2.0")] * 3)),
        lambda i, t, p: ["map", "prepare", i.map, "--model", p, "--out", t / "o", "--box-px", "8", "--overlap-px", "2"])
    add("map prepare", "size-contradicts-mode", lambda i, t: _oversized_mrc(i.map, t / "big.mrc"), prepare())

    def subgrids(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["map", "subgrids", p, "--out", t / "s.zarr", "--box-px", "8", "--overlap-px", "2", *extra]

    add("map subgrids", "empty", _file("e.mrc", b""), subgrids())
    add("map subgrids", "truncated", _truncate("map"), subgrids())
    add("map subgrids", "wrong-format", png("w.mrc"), subgrids())
    add("map subgrids", "nan", _nan_mrc("n.mrc", (16, 16, 16), stack=False), subgrids())
    add("map subgrids", "negative", None,
        lambda i, t, p: ["map", "subgrids", i.map, "--out", t / "s.zarr", "--box-px", "-8"], "--box-px")
    add("map subgrids", "missing", _missing("m.mrc"), subgrids())
    add("map subgrids", "output-under-file", None,
        lambda i, t, p: ["map", "subgrids", i.map, "--out", _blocked(t, "s.zarr"), "--box-px", "8",
                         "--overlap-px", "2"], "blocker")

    def stitch() -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["map", "stitch", p, "--out", t / "st.mrc"]

    add("map stitch", "empty", lambda i, t: _mkdir(t / "e.zarr"), stitch())
    add("map stitch", "truncated", lambda i, t: _truncated_zarr(i.zarr, t / "t.zarr"), stitch())
    add("map stitch", "wrong-format", png("w.zarr"), stitch())
    add("map stitch", "nan", lambda i, t: _nan_zarr(t / "n.zarr"), stitch())
    add("map stitch", "missing", _missing("m.zarr"), stitch())
    add("map stitch", "output-under-file", None,
        lambda i, t, p: ["map", "stitch", i.zarr, "--out", _blocked(t, "st.mrc")], "blocker")
    add("map stitch", "pickle-codec", lambda i, t: _pickle_zarr(t / "p.zarr"), stitch())

    def mbuild() -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["map", "build", p, "--out", t / "mb", "--workers", "1"]

    add("map build", "empty", _file("e.csv", b""), mbuild())
    add("map build", "truncated", _truncate("map_list", 5, "t.csv"), mbuild())
    add("map build", "wrong-format", png("w.csv"), mbuild())
    add("map build", "negative", None,
        lambda i, t, p: ["map", "build", i.map_list, "--out", t / "mb", "--voxel-size-a", "-1"], "--voxel-size-a")
    add("map build", "missing", _missing("m.csv"), mbuild())
    add("map build", "output-under-file", None,
        lambda i, t, p: ["map", "build", i.map_list, "--out", _blocked(t), "--workers", "1"], "blocker")

    # --- store create/add/info/export
    add("store create", "negative", None,
        lambda i, t, p: ["store", "create", t / "s", "--chunk-particles", "-1"], "--chunk-particles")
    add("store create", "output-under-file", None, lambda i, t, p: ["store", "create", _blocked(t)], "blocker")

    def add_star(star_maker: Callable[[Inputs, Path], Path]) -> Callable[[Inputs, Path], Path]:
        def make(i: Inputs, t: Path) -> Path:
            shutil.copytree(i.store, t / "store")
            return star_maker(i, t)
        return make

    def store_add() -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["store", "add", t / "store", "--experiment", "e1", "--star", p]

    add("store add", "empty", add_star(_file("e.star", b"")), store_add())
    add("store add", "truncated", add_star(star_with(trunc_stack)), store_add(), "particles.mrcs")
    add("store add", "wrong-format", add_star(png("w.star")), store_add())
    add("store add", "nan", add_star(star_with(nan_stack)), store_add(), "particles.mrcs")
    add("store add", "negative", add_star(star_with(None, particles_star(8, pixel="-2.0"))), store_add())
    add("store add", "missing", add_star(_missing("m.star")), store_add())
    add("store add", "output-under-file", None,
        lambda i, t, p: ["store", "add", _blocked(t), "--experiment", "e1", "--star", i.star], "blocker")
    add("store add", "index-out-of-range", add_star(star_with(None, particles_star(8, index_offset=4))),
        store_add())
    add("store add", "image-size-contradicts-stack",
        add_star(star_with(None, particles_star(8, size=32))), store_add())

    add("store info", "empty", store_json(""), lambda i, t, p: ["store", "info", p.parent])
    add("store info", "truncated", store_json('{"format": "cryo'), lambda i, t, p: ["store", "info", p.parent])
    add("store info", "wrong-format", store_json("[1, 2]"), lambda i, t, p: ["store", "info", p.parent])
    add("store info", "missing", _missing("nostore"), lambda i, t, p: ["store", "info", p])

    def export(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["store", "export", i.store, "--format", "relion", "--out", t / "ex",
                                "--selection", p, *extra]

    add("store export", "empty", _file("e.parquet", b""), export())
    add("store export", "truncated", _truncate("selection", 20, "t.parquet"), export())
    add("store export", "wrong-format", png("w.parquet"), export())
    add("store export", "negative", None,
        lambda i, t, p: ["store", "export", i.store, "--format", "hdf5", "--out", t / "x.h5", "--size-px", "-5"],
        "--size-px")
    add("store export", "missing", _missing("m.parquet"), export())
    add("store export", "output-under-file", None,
        lambda i, t, p: ["store", "export", i.store, "--format", "hdf5", "--out", _blocked(t, "x.h5")],
        "blocker")

    # --- catalog curate RECORDS --out
    def curate(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["catalog", "curate", p, "--out", t / "cat.csv", "--method", "align", *extra]

    add("catalog curate", "empty", _file("e.csv", b""), curate())
    add("catalog curate", "truncated", _truncate("records", 10, "t.csv"), curate())
    add("catalog curate", "wrong-format", png("w.json"), curate())
    add("catalog curate", "negative", None,
        lambda i, t, p: ["catalog", "curate", i.records, "--out", t / "c.csv", "--threshold", "-0.5"],
        "threshold")
    add("catalog curate", "missing", _missing("m.csv"), curate())
    add("catalog curate", "output-under-file", None,
        lambda i, t, p: ["catalog", "curate", i.records, "--out", _blocked(t, "c.csv"), "--method", "align"],
        "blocker")

    # --- fetch (offline: nothing leaves the machine)
    add("fetch empiar", "negative", None,
        lambda i, t, p: ["fetch", "empiar", "10028", "--offline", "--files", "*", "--count", "-1"], "--count")
    add("fetch empiar", "output-under-file", None,
        lambda i, t, p: ["fetch", "empiar", "10028", "--offline", "--cache", _blocked(t)], "blocker")
    add("fetch emdb", "negative", None,
        lambda i, t, p: ["fetch", "emdb", "5168", "--offline", "--workers", "-1"], "--workers")
    add("fetch emdb", "output-under-file", None,
        lambda i, t, p: ["fetch", "emdb", "5168", "--offline", "--cache", _blocked(t)], "blocker")
    add("fetch pdb", "output-under-file", None,
        lambda i, t, p: ["fetch", "pdb", "3MFP", "--offline", "--cache", _blocked(t)], "blocker")
    for kind, content in (("empty", b""), ("truncated", b'[{"experiment_id": "E'), ("wrong-format", _png_bytes())):
        add("fetch record", kind, _file(f"{kind}.json", content),
            lambda i, t, p: ["fetch", "record", "EMD-5168", "--offline", "--cache", t / "cache", "--out", p])
    add("fetch record", "output-under-file", None,
        lambda i, t, p: ["fetch", "record", "EMD-5168", "--offline", "--cache", _blocked(t)], "blocker")

    # --- datasets
    add("datasets info", "missing", None, lambda i, t, p: ["datasets", "info", "no-such-dataset"],
        "no-such-dataset")
    add("datasets download", "negative", None,
        lambda i, t, p: ["datasets", "download", "cryoppp", "--out", t / "d", "--offline", "--retries", "-1"],
        "--retries")
    add("datasets download", "output-under-file", None,
        lambda i, t, p: ["datasets", "download", "cryoppp", "--out", _blocked(t), "--offline"], "blocker")
    for sub in ("summary", "import"):
        def ds(sub: str = sub, *extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
            tail: list[object] = ["--layout", "cryoppp"]
            return lambda i, t, p: (["datasets", sub, p, *tail]
                                    + (["--store", t / "st", "--experiment", "e"] if sub == "import" else [])
                                    + list(extra))

        add(f"datasets {sub}", "empty", lambda i, t: _mkdir(t / "entry"), ds())
        add(f"datasets {sub}", "wrong-format", png("w.png"), ds())
        add(f"datasets {sub}", "missing", _missing("nothing"), ds())
        add(f"datasets {sub}", "negative", lambda i, t: _mkdir(t / "entry"),
            ds(sub, "--micrograph-shape-px", "-5", "-5"), "--micrograph-shape-px")
    add("datasets summary", "output-under-file", None,
        lambda i, t, p: ["datasets", "summary", i.panda, "--layout", "cryopanda", "--out",
                         _blocked(t, "t.csv")], "blocker")
    add("datasets import", "output-under-file", None,
        lambda i, t, p: ["datasets", "import", i.panda, "--layout", "cryopanda", "--store", _blocked(t)],
        "blocker")
    def c2s_entry(map_maker: Callable[[Inputs, Path], Path]) -> Callable[[Inputs, Path], Path]:
        def make(i: Inputs, t: Path) -> Path:
            (t / "theirs").mkdir()
            shutil.move(map_maker(i, t), t / "theirs" / "emd_normalized_map.mrc")
            return t / "theirs" / "emd_normalized_map.mrc"
        return make

    add("datasets crosscheck", "empty", lambda i, t: _mkdir(t / "theirs"),
        lambda i, t, p: ["datasets", "crosscheck", p, p])
    add("datasets crosscheck", "truncated", c2s_entry(_truncate("map")),
        lambda i, t, p: ["datasets", "crosscheck", p.parent, i.prepared])
    add("datasets crosscheck", "nan", c2s_entry(_nan_mrc("n.mrc", (16, 16, 16), stack=False)),
        lambda i, t, p: ["datasets", "crosscheck", p.parent, i.prepared])
    add("datasets crosscheck", "output-under-file", None,
        lambda i, t, p: ["datasets", "crosscheck", i.prepared, i.prepared, "--out", _blocked(t, "r.json")],
        "blocker")
    for sub in ("summary", "import"):
        add(f"datasets {sub}", "truncated", _truncate("panda_h5", 900, "10017_particles.h5"),
            lambda i, t, p, sub=sub: ["datasets", sub, p, "--layout", "cryopanda"]
            + (["--store", t / "st"] if sub == "import" else []))
    add("datasets crosscheck", "wrong-format", png("w.png"), lambda i, t, p: ["datasets", "crosscheck", p, p])

    def ds_export(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["datasets", "export", i.store, "--layout", "cryopanda", "--out", t / "ex",
                                "--selection", p, *extra]

    add("datasets export", "empty", _file("e.parquet", b""), ds_export())
    add("datasets export", "truncated", _truncate("selection", 20, "t.parquet"), ds_export())
    add("datasets export", "wrong-format", png("w.parquet"), ds_export())
    add("datasets export", "missing", _missing("m.parquet"), ds_export())
    add("datasets export", "output-under-file", None,
        lambda i, t, p: ["datasets", "export", i.store, "--layout", "cryopanda", "--out", _blocked(t)], "blocker")
    add("datasets export", "index-out-of-range", lambda i, t: _probe_file(t, 9), ds_export())
    add("datasets export", "unknown-experiment", lambda i, t: _probe_file(t, 0, "10005_particles.h5"),
        ds_export(), "not in the store")
    add("datasets crosscheck", "missing", _missing("nothing"), lambda i, t, p: ["datasets", "crosscheck", p, p])

    # --- demo --out
    add("demo", "output-under-file", None, lambda i, t, p: ["demo", "--quick", "--out", _blocked(t)], "blocker")

    # --- embed STORE (vectors into the store), featuremap MICROGRAPH -o (a ViT checkpoint)
    def embed(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["embed", p.parent if p is not None and p.name == "store.json" else p,
                                "--checkpoint", i.vit, *extra]

    add("embed", "empty", store_json(""), embed())
    add("embed", "truncated", store_json('{"format": "cryo'), embed())
    add("embed", "wrong-format", store_json("[1, 2]"), embed())
    add("embed", "negative", None, lambda i, t, p: ["embed", i.store, "--checkpoint", i.vit, "--batch-size", "-1"],
        "--batch-size")
    add("embed", "missing", _missing("nostore"), embed())
    add("embed", "pickled-checkpoint", lambda i, t: _pickled_pth(t / "evil.pth"),
        lambda i, t, p: ["embed", i.store, "--checkpoint", p])

    def fmap(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["featuremap", p, "--checkpoint", i.vit, "--window-px", "32", "-o", t / "fm", *extra]

    add("featuremap", "empty", _file("e.mrc", b""), fmap())
    add("featuremap", "truncated", _truncate("mic"), fmap())
    add("featuremap", "wrong-format", png("w.mrc"), fmap())
    add("featuremap", "nan", _nan_mrc("n.mrc", (1, 128, 128), stack=True), fmap())
    add("featuremap", "negative", None,
        lambda i, t, p: ["featuremap", i.mic, "--checkpoint", i.vit, "--window-px", "-1", "-o", t / "fm"],
        "--window-px")
    add("featuremap", "missing", _missing("m.mrc"), fmap())
    add("featuremap", "output-under-file", None,
        lambda i, t, p: ["featuremap", i.mic, "--checkpoint", i.vit, "-o", _blocked(t)], "blocker")
    add("featuremap", "pickled-checkpoint", lambda i, t: _pickled_pth(t / "evil.pth"),
        lambda i, t, p: ["featuremap", i.mic, "--checkpoint", p, "-o", t / "fm"])

    # --- probe CONFIG -o (linear probes), probe-corpus -o (issue #19)
    def probe(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["probe", p, "-o", t / "probes", *extra]

    def probe_config(body: str) -> Callable[[Inputs, Path], Path]:
        return lambda i, t: _file("p.yaml", f"store: {i.store}\nembedding: cls\n{body}")(i, t)

    add("probe", "empty", _file("e.yaml", b""), probe())
    add("probe", "truncated", _file("t.yaml", "store: [a, b\n"), probe())
    add("probe", "wrong-format", png("w.yaml"), probe())
    add("probe", "nan", probe_config("probe: {lrs: [.nan]}\n"), probe())
    add("probe", "negative", probe_config("split: {heldout_fraction: -0.5}\n"), probe())
    add("probe", "missing", _missing("m.yaml"), probe())
    add("probe", "output-under-file", probe_config(""), lambda i, t, p: ["probe", p, "-o", _blocked(t)], "blocker")
    add("probe-corpus", "negative", None, lambda i, t, p: ["probe-corpus", "-o", t / "pc",
                                                           "--particles-per-experiment", "-1"],
        "--particles-per-experiment")
    add("probe-corpus", "missing", _missing("noshared"),
        lambda i, t, p: ["probe-corpus", "-o", t / "pc", "--shared-data", p])
    add("probe-corpus", "output-under-file", None,
        lambda i, t, p: ["probe-corpus", "-o", _blocked(t), "--procedural-chains", "1",
                         "--particles-per-experiment", "4"], "blocker")

    # --- view PROJECT_DIR (issue #21): the folder is checked before the server starts
    def view(*extra: object) -> Callable[[Inputs, Path, Path | None], list[object]]:
        return lambda i, t, p: ["view", p, *extra]

    add("view", "empty", lambda i, t: _mkdir(t / "emptyproject"), view())
    add("view", "truncated", _file("proj/picks/provenance.json", '{"command": "pick", "inp'),
        lambda i, t, p: ["view", t / "proj"])
    add("view", "wrong-format", png("project.png"), view())
    add("view", "missing", _missing("noproject"), view())
    add("view", "negative", lambda i, t: _mkdir(t / "proj2"), view("--port", "-5"), "--port")

    return out


def _pickled_pth(path: Path) -> Path:
    """A ``torch.save`` file holding a Python object besides tensors (loading it would unpickle)."""
    import collections

    import torch

    torch.save({"teacher": {"backbone.cls_token": torch.zeros(1, 1, 16)},
                "extra": collections.Counter(a=1)}, path)
    return path


CELLS = cells()

#: (command, kind) → why the cell does not exist.
_NO_FILE_INPUT = "takes no input file (only options)"
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    **{("demo", k): "runs on built-in simulated data: it reads no file and has no size option"
       for k in KINDS if k != "output-under-file"},
    ("validate", "wrong-format"): "a file readable as MRC that breaks rules is a verdict (exit 1, "
                                  "the rules on stdout), not an error (tests/cli/test_validate.py)",
    ("validate", "nan"): "NaN data are a verdict of the statistics rule (exit 1), not an error",
    ("validate", "negative"): "has no size option",
    ("validate", "output-under-file"): "writes nothing",
    ("info", "output-under-file"): "writes nothing",
    ("evaluate-picks", "output-under-file"): "writes nothing (prints)",
    ("compare-models", "output-under-file"): "writes nothing (prints)",
    ("query", "nan"): "the input is SQL text and a store; store contents are checked on add",
    ("embed", "nan"): "a store's contents are checked when they are added (store add cells)",
    ("embed", "output-under-file"): "writes into STORE, its subject (no output path)",
    ("map build", "nan"): "a NaN map in the list is a per-map failure row (exit 1, `failed:` lines) by "
                          "design; the NaN map itself is the map prepare cell",
    ("map stitch", "negative"): "has no size option",
    ("store info", "nan"): "a store's contents are checked when they are added (store add cells)",
    ("store info", "negative"): "has no size option",
    ("store info", "output-under-file"): "writes nothing",
    ("store export", "nan"): "the selection holds integer keys only; NaN keys are a wrong-format table",
    ("catalog curate", "nan"): "NaN record fields mean unknown (resolution, counts) by design",
    ("fetch empiar", "empty"): "the input is an accession, not a file",
    ("fetch pdb", "negative"): "has no size option",
    ("fetch record", "negative"): "has no size option",
    ("fetch record", "nan"): "the --out list is JSON, which has no NaN",
    ("datasets list", "missing"): "takes no argument",
    ("datasets crosscheck", "negative"): "has no size option",
    ("datasets summary", "nan"): "reads tables and headers only; a NaN image is the import cell's business",
    ("datasets export", "nan"): "the selection holds integer keys only; store contents are checked on add",
    ("datasets export", "negative"): "has no size option (the published size, 224 px, is fixed)",
    ("datasets import", "nan"): "cryoPANDA images are uint8 (no NaN); CryoPPP stacks are read by the "
                                "strict MRC reader (the store add cells)",
    ("fetch record", "missing"): "a missing --out list is created (that is not an error)",
    ("view", "nan"): "reads the project's tables through the pick/classify readers (their nan cells)",
    ("view", "output-under-file"): "writes only inside PROJECT_DIR, its subject (no output path)",
}
for _cmd in ("simulate protein", "store create", "fetch empiar", "fetch emdb", "fetch pdb",
             "datasets download"):
    for _kind in ("empty", "truncated", "wrong-format", "nan", "missing"):
        NOT_APPLICABLE.setdefault((_cmd, _kind), _NO_FILE_INPUT)
for _kind in ("empty", "truncated", "wrong-format", "nan"):
    NOT_APPLICABLE.setdefault(("probe-corpus", _kind), "its one input is the shared data folder, read only "
                              "for its dssp chains (the missing cell); everything else is options")
for _kind in KINDS:
    NOT_APPLICABLE.setdefault(("datasets list", _kind), "takes no argument and writes nothing")
    if _kind != "missing":
        NOT_APPLICABLE.setdefault(("datasets info", _kind), "takes a dataset name and writes "
                                  "nothing; an unknown name is the missing cell")


def test_every_command_is_in_the_matrix() -> None:
    """The matrix covers every command ``cryoset --help`` lists (and its sub-commands)."""
    import typer.main

    app = typer.main.get_command(build_app())
    names: set[str] = set()
    for name, cmd in app.commands.items():  # type: ignore[attr-defined]
        sub = getattr(cmd, "commands", None)
        names |= {f"{name} {s}" for s in sub} if sub else {name}
    assert len(COMMAND_MODULES) >= 15
    cells = {(c.command, c.kind) for c in CELLS}
    assert {c for c, _ in cells} <= names
    missing = [(n, k) for n in sorted(names) for k in KINDS
               if (n, k) not in cells and (n, k) not in NOT_APPLICABLE]
    assert missing == []
    assert not cells & set(NOT_APPLICABLE)


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    cell: Cell, inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cryoset.cli.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRYOSET_CACHE", str(tmp_path / "cache"))
    argv = [str(a) for a in cell.argv(inputs, tmp_path)]
    before = _snapshot(tmp_path)
    good_before = _snapshot(inputs.root)
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in out + err, err
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "no such option" not in lines[0].lower(), "a misspelt cell, not a bad input"
    assert cell.needle(inputs, tmp_path) in lines[0], lines[0]
    after = _snapshot(tmp_path)
    assert after == before, ("output left behind", sorted(set(after) ^ set(before)),
                             [k for k in after if k in before and after[k] != before[k]])
    assert _snapshot(inputs.root) == good_before, "an input was modified"
