"""Which torch device a run uses: one rule for training, evaluation, predict and serving."""

from __future__ import annotations

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" -> cuda (cuda:<local_rank>) when a GPU is present, else cpu; "cuda" without an
    index -> cuda:<local_rank>. ValueError when a CUDA device is asked for and none is there."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name!r} needs a CUDA device and none is available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device
