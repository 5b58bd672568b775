"""Build configuration: defaults, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cryoset.errors import InputError
from cryoset.pipeline.config import load_config

GOOD = """
experiments:
  - id: sim-a
    simulated: {seed: 1, protein_length: 60, micrographs: 1}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_are_filled_in(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD))
    exp = cfg["experiments"][0]
    assert exp["kind"] == "simulated" and exp["params"]["size_px"] == 512
    assert cfg["classify"]["n_classes"] == 8 and cfg["store"]["encoding"] == "uint8"
    assert cfg["classify"]["rounds"] == 1 and cfg["duplicates"]["min_distance_a"] is None


def test_step_defaults_are_the_commands_defaults(tmp_path: Path) -> None:
    """Issue #17: one default per option, shared by the command and the build configuration."""
    import dataclasses

    from cryoset.workflows.classify2d import Classify2DParams
    from cryoset.workflows.ctf import CtfParams
    from cryoset.workflows.pick import ExtractParams, PickParams

    cfg = load_config(_write(tmp_path, GOOD))
    for section, params in (("ctf", CtfParams), ("pick", PickParams), ("extract", ExtractParams),
                            ("classify", Classify2DParams)):
        defaults = {f.name: f.default for f in dataclasses.fields(params)}
        for key, value in cfg[section].items():
            assert value == defaults[key], f"{section}.{key}"
    assert cfg["base_dir"] == str(tmp_path.resolve())


@pytest.mark.parametrize(("extra", "message"), [
    ("pick: {diameter_a: -3}", "config.yaml: pick.diameter_a: must be a positive number, got -3"),
    ("pick: {diameter: 3}", "config.yaml: pick.diameter: unknown key"),
    ("colour: blue", "config.yaml: colour: unknown key"),
    ("classify: {n_classes: 2.5}", "config.yaml: classify.n_classes: must be a positive integer"),
    ("store: {encoding: int4}", "config.yaml: store.encoding: must be 'uint8' or 'float16'"),
    ("ctf: {min_resolution_a: 4, max_resolution_a: 6}", "config.yaml: ctf.max_resolution_a: must be smaller"),
])
def test_bad_values_name_the_key(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        load_config(_write(tmp_path, GOOD + extra + "\n"))
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(("experiments", "message"), [
    ("  - id: a\n    simulated: {seed: 1, micrographs: 1}\n",
     "experiments[0].simulated.protein_length: is required"),
    ("  - id: a\n", "experiments[0]: needs exactly one of 'simulated' or 'local'"),
    ("  - id: 'a b'\n    simulated: {seed: 1, protein_length: 60, micrographs: 1}\n",
     "experiments[0].id: must be letters"),
    ("  - id: a\n    local: {micrographs: '*.mrc', pixel_size_a: 1, voltage_kv: 300, cs_mm: 2.7}\n",
     "pick.diameter_a: is required for local experiment 'a'"),
])
def test_bad_experiments(tmp_path: Path, experiments: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(_write(tmp_path, "experiments:\n" + experiments))


def test_not_yaml_mapping(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="must be a YAML mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))


_SIM = "experiments:\n  - id: sim\n    simulated: {{seed: 1, protein_length: 20, micrographs: 1{extra}}}\n"


@pytest.mark.parametrize(("extra", "message"), [
    (", size_px: 10000000", r"experiments\[0\].simulated.size_px: must be at most 8192, got 10000000"),
    (", particles_per_micrograph: 100000000", r"particles_per_micrograph: must be at most 10000"),
    (", pixel_size_a: .inf", r"pixel_size_a: must be a positive number, got inf"),
    (", pixel_size_a: .nan", r"pixel_size_a: must be a positive number, got nan"),
])
def test_absurd_or_non_finite_sizes_are_refused_up_front(tmp_path: Path, extra: str, message: str) -> None:
    """Issue #16: ``size_px: 10000000`` failed with a MemoryError in a worker, retried three times."""
    p = tmp_path / "c.yaml"
    p.write_text(_SIM.format(extra=extra))
    with pytest.raises(InputError, match=message):
        load_config(p)


def test_a_binary_file_is_not_a_configuration(tmp_path: Path) -> None:
    p = tmp_path / "image.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(InputError, match=r"image.png: is not a text file \(a build configuration is YAML\)"):
        load_config(p)
