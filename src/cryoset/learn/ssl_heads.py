"""Projection heads of DINO / iBOT self-supervised training (the published DINOv3 layout).

A :class:`DINOHead` maps backbone tokens (``in_dim``) to ``n_prototypes`` logits:

* ``mlp``: ``nlayers`` linear layers, GELU between them — ``in_dim → hidden → … → hidden →
  bottleneck`` (``nn.Sequential`` indices ``0, 2, 4`` for three layers, as in the published
  ``teacher_checkpoint.pth``: ``dino_head.mlp.{0,2,4}.*``);
* the bottleneck output is L2-normalised;
* ``last_layer``: ``Linear(bottleneck, n_prototypes, bias=False)`` — a plain linear layer (no
  weight normalisation, no last-layer norm: ``head_norm_last_layer`` false in the cryoPANDA config).

Initialisation as upstream: truncated normal (std 0.02) weights, zero biases. The DINO head takes
CLS tokens; iBOT uses a separate head of the same form on masked patch tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOHead"]


class DINOHead(nn.Module):
    """MLP → L2-normalised bottleneck → linear prototypes.

    Parameters
    ----------
    in_dim
        Backbone token width.
    n_prototypes
        Output logits (the paper: 65,536).
    hidden_dim, bottleneck_dim, nlayers
        MLP shape (the paper: 2048, 256, 3).
    mlp_bias
        Biases in the MLP layers.
    """

    def __init__(self, in_dim: int, n_prototypes: int, *, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 nlayers: int = 3, mlp_bias: bool = True) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("n_prototypes", n_prototypes), ("hidden_dim", hidden_dim),
                            ("bottleneck_dim", bottleneck_dim), ("nlayers", nlayers)):
            if value < 1:
                raise ValueError(f"DINOHead.{name} must be at least 1, got {value}")
        layers: list[nn.Module] = []
        if nlayers == 1:
            layers.append(nn.Linear(in_dim, bottleneck_dim, bias=mlp_bias))
        else:
            layers += [nn.Linear(in_dim, hidden_dim, bias=mlp_bias), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim, bias=mlp_bias), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim, bias=mlp_bias))
        self.mlp = nn.Sequential(*layers)
        self.last_layer = nn.Linear(bottleneck_dim, n_prototypes, bias=False)
        self.n_prototypes = n_prototypes
        self.init_weights()

    def init_weights(self) -> None:
        """Truncated-normal (std 0.02) weights, zero biases (torch's global generator)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """The L2-normalised bottleneck ``(…, bottleneck_dim)``."""
        y = self.mlp(x)
        eps = 1e-6 if y.dtype in (torch.float16, torch.bfloat16) else 1e-12
        return F.normalize(y, dim=-1, p=2, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(…, in_dim)`` → prototype logits ``(…, n_prototypes)``."""
        out: torch.Tensor = self.last_layer(self.bottleneck(x))
        return out
