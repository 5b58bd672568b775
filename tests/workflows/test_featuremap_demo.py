"""The demo's feature-map step: runs through the CLI with a given checkpoint (environment),
and is skipped with a logged reason when no ViT checkpoint is installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cryoset.io.mrc import write_map
from cryoset.learn.vit import VisionTransformer, ViTConfig
from cryoset.learn.vit_weights import save_vit
from cryoset.pipeline.demo import VIT_CHECKPOINT_ENV, DemoRun, featuremap_step


def test_demo_featuremap_step_with_a_tiny_random_checkpoint(tmp_path: Path, rng: np.random.Generator,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    ckpt = save_vit(tmp_path / "tiny.safetensors",
                    VisionTransformer(ViTConfig(embed_dim=32, depth=1, num_heads=2, patch_size=8, img_size=32)),
                    metadata={"normalization": {"kind": "store"}, "input_size": 32})
    mic = write_map(tmp_path / "mic.mrc", rng.normal(size=(1, 128, 160)).astype(np.float32), voxel_size_a=1.5)
    monkeypatch.setenv(VIT_CHECKPOINT_ENV, str(ckpt))
    lines: list[str] = []
    run = DemoRun(tmp_path, log=lines.append)
    summary, reason = featuremap_step(run, mic, tmp_path / "fm", diameter_px=20.0)
    assert reason == "" and summary is not None
    assert summary["window_px"] == 40 and summary["stride_px"] == 10
    assert summary["grid_shape"] == [(128 - 40) // 10 + 1, (160 - 40) // 10 + 1]
    assert (tmp_path / "fm" / "pca_overlay.png").stat().st_size > 100
    assert run.steps[-1].name == "featuremap" and "--checkpoint" in run.steps[-1].argv


def test_demo_featuremap_step_is_skipped_without_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cryoset.learn.vit_weights as vw

    monkeypatch.delenv(VIT_CHECKPOINT_ENV, raising=False)
    monkeypatch.setattr(vw, "DEFAULT_VIT_CHECKPOINT", tmp_path / "absent.safetensors")
    lines: list[str] = []
    run = DemoRun(tmp_path, log=lines.append)
    summary, reason = featuremap_step(run, tmp_path / "mic.mrc", tmp_path / "fm", diameter_px=20.0)
    assert summary is None and "feature map skipped" in reason and "absent.safetensors" in reason
    assert lines == [f"[demo] {reason}"] and run.steps == []
    assert not (tmp_path / "fm").exists()
