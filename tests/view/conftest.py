"""A tiny project folder made by the real command line (simulate → ctf → pick → extract →
classify2d, the demo's steps at a small size), built once per session and copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DIAMETER_A = 63.5


def build_project(out: Path) -> Path:
    """The demo's folder layout (sim/, ctf/, picks/, particles/, classes/) on 2 small micrographs."""
    from cryoset.cli.main import main

    def run(*args: object) -> None:
        code = main([str(a) for a in args])
        assert code == 0, f"cryoset {' '.join(map(str, args))} exited {code}"

    sim = out / "sim"
    run("simulate", "micrographs", "--micrographs", 2, "--size-px", 512, "--pixel-size-a", 1.5,
        "--particles-per-micrograph", 12, "--protein-length", 250, "--defocus-min-a", 12000,
        "--defocus-max-a", 28000, "--dose-e-per-a2", 40, "--seed", 7, "--out", sim)
    mics = sorted((sim / "micrographs").glob("*.mrc"))
    run("ctf", *mics, "--out", out / "ctf", "--tile-px", 256)
    run("pick", *mics, "--diameter-a", DIAMETER_A, "--mask-dir", sim / "masks", "--out", out / "picks")
    run("extract", *mics, "--picks", out / "picks", "--out", out / "particles", "--diameter-a", DIAMETER_A,
        "--invert", "--phase-flip", "--ctf", out / "ctf" / "micrographs_ctf.star")
    run("classify2d", out / "particles" / "particles.star", "--n-classes", 3, "--n-iter", 2, "--box-px", 32,
        "--diameter-a", DIAMETER_A, "--seed", 7, "--out", out / "classes")
    return out


@pytest.fixture(scope="session")
def project_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_project(tmp_path_factory.mktemp("view-template") / "project")


@pytest.fixture
def project(project_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny project (tests write into it). The picks' provenance names
    the micrographs by absolute path, which stay in the template."""
    dest = tmp_path / "project"
    shutil.copytree(project_template, dest, ignore=shutil.ignore_patterns("sim"))
    (dest / "sim").symlink_to(project_template / "sim")
    return dest


#: The store classification's query: a subset, in reverse order (the view must map rows back exactly).
STORE_QUERY = "SELECT * FROM particles WHERE particle_index % 5 <> 3 ORDER BY particle_index DESC"


@pytest.fixture
def store_project(project: Path) -> Path:
    """The tiny project with its particles in a store (``store/``) and the classes made from it
    (``classify2d --store --query``; the default junk rule recovers one particle of class 3)."""
    from cryoset.cli.main import main

    shutil.rmtree(project / "classes")
    st = project / "store"
    assert main(["store", "create", str(st), "--encoding", "float16"]) == 0
    assert main(["store", "add", str(st), "--experiment", "demo",
                 "--star", str(project / "particles" / "particles.star")]) == 0
    assert main(["classify2d", "--store", str(st), "--query", STORE_QUERY, "--n-classes", "3", "--n-iter", "2",
                 "--box-px", "32", "--diameter-a", str(DIAMETER_A), "--seed", "7",
                 "--out", str(project / "classes")]) == 0
    return project
