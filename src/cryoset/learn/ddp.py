"""Where a training process runs: its rank, the number of processes and its device.

One process per device under ``torchrun`` (DistributedDataParallel; the process group is set
up by the caller), or one process alone; shared by the training loops
(:mod:`~cryoset.learn.voxel_train`, :mod:`~cryoset.learn.ssl_train`).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["training_process"]


def training_process(device: str = "auto") -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)`` of this process.

    ``device`` ``"auto"`` is CUDA when available, else the CPU; any other value is used as
    given. With several processes on CUDA each takes the GPU ``LOCAL_RANK`` (set by torchrun)
    and makes it current. Without an initialised process group the rank is 0 of 1.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    return rank, world, dev
