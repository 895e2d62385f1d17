"""DDP plumbing: torchrun's environment, the process group, and the few collectives training
needs (every rank must call them on the same steps)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from stdformer.devices import resolve_device
from stdformer.train.config import TrainConfig


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def distributed_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment (1 process without it)."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


def setup_distributed(cfg: TrainConfig) -> tuple[Dist, bool]:
    """Join the process group when launched by torchrun (NCCL on GPU, gloo on CPU).
    Returns (Dist, whether this call created the group and so must destroy it)."""
    rank, world_size, local_rank = distributed_env()
    device = resolve_device(cfg.device, local_rank)
    created = False
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                rank=rank, world_size=world_size)
        created = True
    return Dist(rank, world_size, local_rank, device), created


def barrier(d: Dist) -> None:
    if d.world_size > 1:
        dist.barrier()


def all_reduce_sum(x: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum of a CPU tensor over ranks, returned on the CPU (NCCL reduces device tensors)."""
    if d.world_size == 1:
        return x
    y = x.to(d.device)
    dist.all_reduce(y)
    return y.cpu()


def gather_objects(obj: Any, d: Dist) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if d.world_size == 1:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def sync_buffers(module: nn.Module, d: Dist) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP keeps parameters identical and broadcasts rank 0's buffers at the start of each
    forward, but the running statistics each rank updates during that forward are its own.
    Syncing before validation and at the end gives every replica rank 0's model exactly (the
    one DDP would use next and the one checkpoints hold). SyncBatchNorm would need a GPU.
    """
    if d.world_size == 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def wrap_ddp(model: nn.Module, d: Dist) -> nn.Module:
    if d.world_size == 1:
        return model
    # find_unused_parameters: loss terms can be switched off (e.g. no 2D terms leaves the camera
    # head unused) and the full profile keeps HRNet's unused ImageNet classifier.
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[d.device.index] if d.device.type == "cuda" else None,
        find_unused_parameters=True)
