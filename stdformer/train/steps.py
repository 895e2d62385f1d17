"""One training step's pieces, shared by the loop and the benchmark: the LR schedule, shard
targets -> loss targets, and forward + loss + backward + update."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from stdformer.data.shards import MESH_FLAG
from stdformer.losses import LossConfig, MeshInfo, compute_losses
from stdformer.metrics import J14_FROM_H36M, j14_from_h36m
from stdformer.model.assets import BodyAssets, vertex_pyramid
from stdformer.model.inputs import normalize_frames
from stdformer.train.config import TrainConfig


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of cfg.lr after `step` optimizer steps: linear warm-up from lr / warmup_steps,
    then cosine decay to lr * min_lr_ratio at cfg.steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def loss_config_at(step: int, cfg: TrainConfig, loss_cfg: LossConfig) -> LossConfig:
    """The loss of optimizer step `step`. For the first cfg.joint_warmup_steps, the 3D joint-token
    term alone: trained from scratch on the full loss, the transformer settles on an almost
    constant output for hundreds of steps; the joint term alone first makes it use the image."""
    if step >= cfg.joint_warmup_steps:
        return loss_cfg
    switches = {f.name: False for f in dataclasses.fields(loss_cfg)
                if isinstance(getattr(loss_cfg, f.name), bool)}
    return dataclasses.replace(loss_cfg, **{**switches, "joints3d_tokens": True})


def loss_targets(targets: Mapping[str, torch.Tensor], assets: BodyAssets,
                 crop_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Shard targets (on the device) -> what `compute_losses` reads: J14 3D joints, J14 2D
    joints in [-1, 1] crop coordinates (pixel centres; the crop spans [-0.5, W - 0.5]) with
    their visibility, the ground-truth mesh (posed here from pose and betas) at all three
    levels, the frame validity, and which frames have a mesh at all (`mesh_valid`, from the
    mesh flag of joints-only sources: their zero pose and betas are no person's mesh)."""
    height, width = crop_size
    joints2d = targets["joints2d"][..., list(J14_FROM_H36M), :]             # (B, S, 14, 3)
    centre = joints2d.new_tensor([(width - 1) / 2.0, (height - 1) / 2.0])
    half = joints2d.new_tensor([width / 2.0, height / 2.0])
    return {
        "joints3d": j14_from_h36m(targets["joints_h36m"]),
        "joints2d": (joints2d[..., :2] - centre) / half,
        "joints2d_vis": joints2d[..., 2].clamp(0.0, 1.0),
        "valid": targets["valid"].bool(),
        "mesh_valid": targets[MESH_FLAG].bool() if MESH_FLAG in targets
        else targets["valid"].bool(),
        **vertex_pyramid(assets.body.shard_mesh(targets["pose"], targets["betas"]), assets),
    }


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def batch_loss(model: nn.Module, batch: Mapping[str, Any], assets: BodyAssets,
               mesh_info: MeshInfo, loss_cfg: LossConfig, device: torch.device,
               autocast_dtype: torch.dtype | None) -> tuple[torch.Tensor, dict[str, float]]:
    """Forward a loader batch (frames uint8 (B, S, 3, H, W) + shard targets) and compute the
    loss in fp32 (autocast covers the model only). `assets` must live on `device`."""
    frames = batch["frames"].to(device, non_blocking=True)
    targets = loss_targets({k: v.to(device, non_blocking=True)
                            for k, v in batch["targets"].items()}, assets,
                           tuple(frames.shape[-2:]))
    with autocast(device, autocast_dtype):
        pred = model(normalize_frames(frames))
    pred = {k: v.float() for k, v in pred.items()}
    pred["vertices_fine"] = pred["vertices"]
    return compute_losses(pred, targets, loss_cfg, mesh_info)


def optimizer_step(loss: torch.Tensor, parameters, optimizer: torch.optim.Optimizer,
                   scheduler, grad_clip: float) -> float:
    """Backward, clip the global grad norm, step; returns the norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = nn.utils.clip_grad_norm_(parameters, grad_clip if grad_clip > 0 else float("inf"))
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return float(norm)
