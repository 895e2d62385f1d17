"""The model's input: how a clip of person crops is made and normalised. A model file records
its `InputProtocol`, so predict, serving and evaluate crop and normalise as training did
without a params.yaml (like a Hugging Face `config.json` beside the weights)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from stdformer.io import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputProtocol:
    """crop_size: the square crop the network sees (pixels); crop_scale: crop side / longer
    side of the person's box; context: the stored crop is context x the crop (augmentation's
    surroundings); None where unknown (shards of other tools, released weights); clip_len: frames a clip; mean, std:
    per-channel RGB normalisation of [0, 1] pixels."""

    crop_size: int
    crop_scale: float | None
    context: float | None
    clip_len: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "<model file>"
                  ) -> InputProtocol:
        try:
            return cls(crop_size=int(values["crop_size"]),
                       crop_scale=None if values.get("crop_scale") is None
                       else float(values["crop_scale"]),
                       context=None if values.get("context") is None
                       else float(values["context"]), clip_len=int(values["clip_len"]),
                       mean=tuple(float(v) for v in values.get("mean", IMAGENET_MEAN)),
                       std=tuple(float(v) for v in values.get("std", IMAGENET_STD)))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(source, f"unreadable input protocol ({e})", field="inputs") from e


def normalize_frames(frames: torch.Tensor, mean: tuple[float, ...] = IMAGENET_MEAN,
                     std: tuple[float, ...] = IMAGENET_STD) -> torch.Tensor:
    """uint8 (B, S, 3, H, W) -> normalised float32 (the model's input)."""
    m = torch.tensor(mean, device=frames.device).view(1, 1, 3, 1, 1)
    s = torch.tensor(std, device=frames.device).view(1, 1, 3, 1, 1)
    return (frames.float() / 255.0 - m) / s
