"""Backbone construction and ImageNet weight loading.

Every backbone exposes `stem_conv(x) -> (N, stem_conv_channels, H/4, W/4)` (before the first
residual stage), `layer1` (the first residual stage), `stem(x) = layer1(stem_conv(x)) ->
(N, stem_channels, H/4, W/4)`, `rest(x) -> (N, out_channels, H/32, W/32)`, and the channel
counts as attributes. SD/TD sit after `stem` (model.sd_td_at: layer1) or after `stem_conv`
(sd_td_at: stem).
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

import torch
from torch import nn

from stdformer.io import DataError
from stdformer.safe_loading import load_torch_file
from stdformer.model.hrnet import HRNet
from stdformer.model.resnet import ResNet

log = logging.getLogger(__name__)

BACKBONES = ("resnet", "hrnet")


def build_backbone(name: str, depth: int = 50, width: int = 64,
                   blocks: list[int] | None = None, classifier: bool = False) -> nn.Module:
    """name "resnet": ResNet-`depth` with base width `width` (and optional blocks per stage);
    name "hrnet": HRNet-W`width` (depth and blocks unused)."""
    if name == "resnet":
        return ResNet(depth=depth, width=width, blocks=blocks, classifier=classifier)
    if name == "hrnet":
        return HRNet(width=width, classifier=classifier)
    raise ValueError(f"unknown backbone {name!r}; expected one of {BACKBONES}")


class LoadReport(NamedTuple):
    missing: list[str]      # model keys the file did not provide (left at their init values)
    unexpected: list[str]   # file keys the model has no place for (ignored)


def _unwrap_state_dict(obj: object, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Accept a plain state dict, or one wrapped as {'state_dict': ...} / {'model': ...}, with or
    without DataParallel's 'module.' prefix."""
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise DataError(path, "not a state dict (expected a mapping of names to tensors)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load a local weight file (torch.load, weights_only=True) into `backbone`.

    Keys present on both sides must have equal shapes, else DataError naming the key. Missing and
    unexpected keys are logged as warnings and returned; BatchNorm's num_batches_tracked counters
    are not reported missing (old checkpoints lack them and they do not affect the output).
    """
    if not os.path.isfile(path):
        raise DataError(path, "backbone weight file not found")
    loaded = load_torch_file(path, "backbone weight file")
    state = _unwrap_state_dict(loaded, path)
    own = backbone.state_dict()
    for key in sorted(state.keys() & own.keys()):
        if state[key].shape != own[key].shape:
            raise DataError(path, f"shape {tuple(state[key].shape)} does not fit the model's "
                                  f"{tuple(own[key].shape)}", field=key)
    result = backbone.load_state_dict(state, strict=False)
    missing = sorted(k for k in result.missing_keys if not k.endswith("num_batches_tracked"))
    unexpected = sorted(result.unexpected_keys)
    if missing:
        log.warning("%s: %d backbone keys missing from the file (kept at init), e.g. %s",
                    path, len(missing), missing[:5])
    if unexpected:
        log.warning("%s: %d keys in the file unused by the backbone, e.g. %s",
                    path, len(unexpected), unexpected[:5])
    return LoadReport(missing, unexpected)
