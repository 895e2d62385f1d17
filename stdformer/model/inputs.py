"""The model's input: how a uint8 crop becomes what the network reads. Training, evaluation,
predict and serving all normalise through here."""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, S, 3, H, W) -> ImageNet-normalised float32 (the model's input)."""
    mean = torch.tensor(IMAGENET_MEAN, device=frames.device).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=frames.device).view(1, 1, 3, 1, 1)
    return (frames.float() / 255.0 - mean) / std
