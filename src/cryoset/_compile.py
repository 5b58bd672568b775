"""Compile every numba kernel ahead of first use: ``python -m cryoset._compile``.

Every ``@numba.njit`` in cryoset has ``cache=True``: the machine code is written to numba's
cache (``__pycache__`` beside the source, or ``NUMBA_CACHE_DIR``; see :mod:`cryoset`) and later
processes load it instead of compiling. ``make venv`` runs this module after ``pip install`` so
that a user's first command does not stop for JIT compilation. Each kernel is called once on
tiny inputs of every type signature the package calls it with (numba compiles one machine-code
version per signature; a signature missed here would still compile on first use).

``python -m cryoset._compile [NAME ...]`` compiles only the named groups (:data:`WARMUPS`);
``--list`` prints the kernels each group covers.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np


def _align() -> None:
    from cryoset.catalog.align import align_pair, identity_matrix

    align_pair("MKTAYIAK", "MKTAYLAKQ")
    identity_matrix(["MKTAYIAK", "MKTAYLAKQ"])


def _trace() -> None:
    from cryoset.trace.hmm import build_transitions, emission_log_probabilities, viterbi_unique

    rng = np.random.default_rng(0)
    n = 12
    positions = np.cumsum(np.full((n, 3), 3.8 / np.sqrt(3.0)), axis=0) + rng.normal(0, 0.1, (n, 3))
    aa = rng.dirichlet(np.ones(20), size=n)
    log_emit = emission_log_probabilities(aa)
    graph = build_transitions(positions)
    viterbi_unique(log_emit, [0, 1, 2], graph)  # int16 back-pointers (n × n_best < 32768)
    viterbi_unique(log_emit, [0], graph, n_best=32768 // n + 1, n_jump_candidates=1)  # int32


def _projection() -> None:
    from cryoset.simulate.projection import ORDERS, project_fourier

    volume = np.zeros((8, 8, 8))
    volume[3:5, 3:5, 3:5] = 1.0
    rotations = np.eye(3)[None].repeat(2, axis=0)
    for order in ORDERS:  # 1: trilinear kernel, 3 and 5: exponential-of-semicircle kernel
        project_fourier(volume, rotations, order=order, workers=1)


def _reconstruction() -> None:
    from cryoset.fourier.slices import insert_slices_trilinear

    n = 8
    spec = np.zeros((1, n, n // 2 + 1), np.complex64)
    ctf2 = np.ones(spec.shape, np.float32)
    rots = np.ascontiguousarray(np.eye(3)[None])
    insert_slices_trilinear(spec, ctf2, rots, np.zeros((n, n, n // 2 + 1), np.complex128),
                            np.zeros((n, n, n // 2 + 1), np.float64))


def _potential() -> None:
    from cryoset.simulate.potential import potential_volume, project_atoms, project_atoms_batch

    xyz = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]])
    elements, b = ["C", "N"], [20.0, 20.0]
    for integration in ("gaussian", "box"):
        potential_volume(xyz, elements, b, (6, 6, 6), 1.0, (-3.0, -3.0, -3.0), pixel_integration=integration)
        project_atoms(xyz, elements, b, np.eye(3), (6, 6), 1.0, pixel_integration=integration)
        project_atoms_batch(xyz, elements, b, np.eye(3)[None].repeat(2, axis=0), (6, 6), 1.0,
                            pixel_integration=integration)


def _store() -> None:
    from cryoset.store.dataset import _gather_decode_u8

    stored = np.zeros((2, 4, 4), np.uint8)
    args = (np.arange(2, dtype=np.int64), np.zeros(2, np.float32), np.ones(2, np.float32))
    _gather_decode_u8(stored, *args, np.empty((2, 4, 4), np.float32))
    stored.flags.writeable = False  # stacks opened read-only (memory maps) type as read-only arrays
    _gather_decode_u8(stored, *args, np.empty((2, 4, 4), np.float32))


#: Group name → (warm-up, the ``module:kernel`` names it compiles).
WARMUPS: dict[str, tuple[Callable[[], None], tuple[str, ...]]] = {
    "align": (_align, ("cryoset.catalog.align:_gotoh",)),
    "trace": (_trace, ("cryoset.trace.hmm:_viterbi_unique_kernel",)),
    "projection": (_projection, ("cryoset.fourier.slices:extract_slices_trilinear",
                                 "cryoset.fourier.slices:extract_slices_es")),
    "reconstruction": (_reconstruction, ("cryoset.fourier.slices:insert_slices_trilinear",)),
    "potential": (_potential, ("cryoset.simulate.potential:_splat_3d", "cryoset.simulate.potential:_splat_2d")),
    "store": (_store, ("cryoset.store.dataset:_gather_decode_u8",)),
}

#: Kernels only ever called from other kernels (some ``inline="always"``): their machine code is
#: part of their callers' cache entries.
CALLEES: tuple[str, ...] = (
    "cryoset.trace.hmm:_insert_top",
    "cryoset.fourier.slices:full_value",
    "cryoset.simulate.potential:_factor",
    "cryoset.fourier.slices:signed_frequency",
    "cryoset.fourier.slices:slice_axes",
    "cryoset.fourier.slices:slice_frequency",
)


def compile_all(names: list[str] | None = None, *, verbose: bool = True) -> None:
    """Run the warm-ups of ``names`` (default: all), filling numba's cache."""
    for name in names or list(WARMUPS):
        if name not in WARMUPS:
            raise SystemExit(f"error: unknown kernel group {name!r}; one of {', '.join(WARMUPS)}")
        start = time.perf_counter()
        WARMUPS[name][0]()
        if verbose:
            print(f"cryoset: compiled {name} kernels ({time.perf_counter() - start:.1f} s)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--list" in args:
        for name, (_fn, kernels) in WARMUPS.items():
            print(f"{name}: {', '.join(kernels)}")
        return 0
    compile_all(args or None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
