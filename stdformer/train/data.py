"""Deterministic, resumable clip streams over the webdataset shards.

Every epoch's order is a pure function of (seed, epoch, world size, batch size):

1. The shard list is permuted with `default_rng([seed, epoch])`; clips keep their tar order
   inside a shard. This is the epoch's *stream order* (the order the tar files are read in).
2. Each rank takes one contiguous chunk of that stream, all chunks the same length (a multiple of
   the batch size; the remainder is dropped), so DDP ranks see disjoint clips and run the same
   number of steps.
3. Inside a chunk, windows of `shuffle_window` consecutive clips are permuted (a bounded-memory
   shuffle for streamed tar files), then cut into batches.

Loader workers split a rank's batches round-robin (worker w builds batches w, w+W, ...), which is
the order torch's DataLoader hands them out in, so the batches reach the training loop in plan
order whatever the number of workers. Resuming after `b` batches of epoch `e` replays the plan
and starts at batch `b`: skipped clips are never read from disk, let alone decoded.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from stdformer.body.mirror import FlipPerms
from stdformer.data import shards
from stdformer.data.shard_index import Clip, ShardIndex, read_clips, stream_order
from stdformer.data.shards import BATCH_TARGETS, worker_context
from stdformer.io import DataError
from stdformer.train.augment import (
    AugmentParams,
    ClipAugmenter,
    augment_frames,
    augment_targets,
)
from stdformer.train.buffers import (
    SLOT_KEY,
    Arenas,
    ReleaseBoard,
    pack,
    released_as_dropped,
)
from stdformer.train.config import AugmentConfig

# --------------------------------------------------------------------------------------------
# Plans: which clips, in which batches, for one rank


def train_batches(index: ShardIndex, *, seed: int, epoch: int, rank: int, world_size: int,
                  batch_size: int, shuffle_window: int) -> list[list[Clip]]:
    """This rank's batches of `epoch` (see the module docstring). Same length on every rank."""
    shard_order = np.random.default_rng([seed, epoch]).permutation(len(index.shards))
    clips = stream_order(index, shard_order)
    per_rank = len(clips) // world_size // batch_size * batch_size
    if per_rank == 0:
        raise DataError(index.source, f"{len(clips)} clips cannot fill one batch of {batch_size} "
                        f"on each of {world_size} ranks (lower train.batch_size)")
    mine = clips[rank * per_rank:(rank + 1) * per_rank]
    if shuffle_window > 1:
        rng = np.random.default_rng([seed, epoch, world_size, rank])
        shuffled: list[Clip] = []
        for start in range(0, per_rank, shuffle_window):
            window = mine[start:start + shuffle_window]
            shuffled.extend(window[i] for i in rng.permutation(len(window)))
        mine = shuffled
    return [mine[i:i + batch_size] for i in range(0, per_rank, batch_size)]


# --------------------------------------------------------------------------------------------
# Reading planned clips


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def assemble_batch(samples: Sequence[Mapping[str, Any]],
                   augmenter: ClipAugmenter | None = None,
                   arenas: Arenas | None = None) -> dict[str, Any]:
    """Raw webdataset samples -> one batch, laid out as `collate_clips` lays it out: key,
    frames uint8 (B, S, 3, H, W), targets {name: (B, ...)} (the contract's and the mesh
    flag, shards.BATCH_TARGETS; floats as float32), meta; and, when its memory is a reused
    slot of `arenas`, which one (SLOT_KEY).

    Built in place: each clip's stored frames are decoded into one scratch buffer and cut
    (augmented with `augmenter`'s draw for the clip; without one, the centre crop) straight
    into their place in a (B, S, H, W, 3) array, whose channels-last view is `frames`: no
    transposing copy on the CPU (the model normalises on the device). All of the batch's
    tensors are views into one arena of `arenas` (default: fresh memory).
    """
    clips = [shards.clip_meta(sample) for sample in samples]
    where0, meta0, names0 = clips[0]
    size, num_frames = int(meta0["crop_size"]), len(names0)
    for where, meta, names in clips:
        if (int(meta["crop_size"]), len(names)) != (size, num_frames):
            raise DataError(where, f"{len(names)} frames of {meta['crop_size']} px in a batch "
                            f"of {num_frames} frames of {size} px ({where0})", field="crop_size")
    stored = [{name: array for name, array in shards.clip_targets(sample, where, num_frames)
               .items() if name in BATCH_TARGETS}
              for sample, (where, _, _) in zip(samples, clips)]
    layout = {"frames": ((len(samples), num_frames, size, size, 3), torch.uint8)}
    for name, array in stored[0].items():
        dtype = torch.float32 if array.dtype.kind == "f" else torch.from_numpy(array).dtype
        layout[name] = ((len(samples), *array.shape), dtype)
    tensors, slot = (arenas or Arenas(None)).allocate(layout)
    frames = tensors.pop("frames")
    frames_np, scratch = frames.numpy(), None
    for b, (sample, (where, meta, names), arrays) in enumerate(zip(samples, clips, stored)):
        scratch = shards.stored_frames(sample, where, meta, names, scratch)
        params = augmenter.params_for(sample["__key__"]) if augmenter else AugmentParams()
        augment_frames(scratch, params, shards.context_margin(meta), frames_np[b])
        if params != AugmentParams():  # moved, turned or reversed targets: float32 math
            arrays = augment_targets({k: shards.as_float32(v).numpy() for k, v in arrays.items()},
                                     params, augmenter.perms, size, size)
        for name, array in arrays.items():
            tensors[name][b] = torch.from_numpy(np.ascontiguousarray(array))
    batch = {"key": [sample["__key__"] for sample in samples],
             "frames": frames.permute(0, 1, 4, 2, 3), "targets": tensors,
             "meta": [meta for _, meta, _ in clips]}
    return batch if slot is None else {**batch, SLOT_KEY: slot}


def _build_batches(index: ShardIndex, batches: Sequence[Sequence[Clip]],
                   augmenter: ClipAugmenter | None, arenas: Arenas
                   ) -> Iterator[dict[str, Any]]:
    samples = read_clips(index, [c for b in batches for c in b])
    for batch in batches:
        yield assemble_batch([next(samples) for _ in batch], augmenter, arenas)


class TrainStream(torch.utils.data.IterableDataset):
    """Endless augmented training batches of one rank, from (start_epoch, start_batch) on.

    Each item: an `assemble_batch` batch (key, frames (B,S,3,H,W) uint8 in a channels-last
    layout, targets, meta) plus `epoch` and `batch` (index inside the epoch), so the consumer
    knows its data position.
    """

    def __init__(self, index: ShardIndex, *, seed: int, batch_size: int, rank: int,
                 world_size: int, shuffle_window: int, augment: AugmentConfig,
                 perms: FlipPerms, start_epoch: int = 0, start_batch: int = 0):
        super().__init__()
        self.index, self.seed, self.batch_size = index, seed, batch_size
        self.rank, self.world_size, self.shuffle_window = rank, world_size, shuffle_window
        perms.check(augment.may_flip)
        self.augment, self.perms = augment, perms
        self.start_epoch, self.start_batch = start_epoch, start_batch
        self.board: ReleaseBoard | None = None  # make_loader's, for its workers' arenas

    def plan(self, epoch: int) -> list[list[Clip]]:
        return train_batches(self.index, seed=self.seed, epoch=epoch, rank=self.rank,
                             world_size=self.world_size, batch_size=self.batch_size,
                             shuffle_window=self.shuffle_window)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = _worker()
        served = 0  # batches handed out so far across epochs (this rank), for round-robin
        # make_loader's workers build batches in reused shared arenas and pack them for it
        packing = self.board is not None and torch.utils.data.get_worker_info() is not None
        arenas = Arenas(self.board if packing else None)
        for epoch in itertools.count(self.start_epoch):
            first = self.start_batch if epoch == self.start_epoch else 0
            plan = self.plan(epoch)
            numbers = [b for b in range(first, len(plan)) if (served + b - first) % num_workers
                       == worker]
            served += len(plan) - first
            augmenter = ClipAugmenter(self.augment, self.perms, self.seed, epoch)
            built = _build_batches(self.index, [plan[b] for b in numbers], augmenter, arenas)
            for b, batch in zip(numbers, built):
                batch = {**batch, "epoch": epoch, "batch": b}
                yield pack(batch) if packing else batch


PREFETCH = 2                     # batches each worker builds ahead
ARENAS_PER_WORKER = PREFETCH + 2  # see make_loader


def _as_built(batch: dict[str, Any]) -> dict[str, Any]:
    """The loader's collate function: batches come ready (torch's default walks every value)."""
    return batch


def make_loader(dataset: torch.utils.data.IterableDataset, num_workers: int, seed: int, pin_memory: bool = False
                ) -> Iterator[dict[str, Any]]:
    """The batches of `dataset` (a TrainStream or mix.MixStream), built by `num_workers` DataLoader workers (0: in this
    process). The explicit generator keeps the loader from drawing its worker seeds from (and
    so advancing) the global torch RNG. Each worker reuses ARENAS_PER_WORKER batch arenas, as
    many as a consumer that holds one batch at a time keeps busy: its batch, the one being
    handed over, and PREFETCH being built or on their way (stdformer.train.buffers)."""
    stream = copy.copy(dataset)
    stream.board = ReleaseBoard(num_workers, ARENAS_PER_WORKER) if num_workers > 0 else None
    loader = torch.utils.data.DataLoader(
        stream, batch_size=None, collate_fn=_as_built, num_workers=num_workers,
        pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed),
        multiprocessing_context=worker_context(num_workers),
        prefetch_factor=PREFETCH if num_workers > 0 else None)
    return released_as_dropped(loader, stream.board)
