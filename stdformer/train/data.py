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

import io
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import webdataset as wds

from stdformer.data.manifest import split_shards
from stdformer.data.shards import TARGET_SPECS, check_targets, collate_clips, decode_clip, \
    shard_read_error, worker_context
from stdformer.io import DataError
from stdformer.train.augment import ClipAugmenter, FlipPerms
from stdformer.train.config import AugmentConfig


class Clip(NamedTuple):
    pos: int      # position in the epoch's stream order (the order shards are read)
    shard: int    # index into ShardIndex.shards
    key: str


@dataclass(frozen=True)
class ShardIndex:
    """The clips of one split: shard paths (sorted), the clip keys of each in tar order and
    each shard's sha256, all as the manifest lists them and verified against the files."""

    source: str
    shards: tuple[str, ...]
    keys: tuple[tuple[str, ...], ...]
    digests: tuple[str, ...]

    @property
    def num_clips(self) -> int:
        return sum(len(k) for k in self.keys)

    def fingerprint(self) -> list[tuple[str, str]]:
        """(shard name, sha256) per shard: the data identity a checkpoint is resumed on. It
        changes with the content, whatever the names and sizes (a preprocess param that only
        flips `valid` flags gives shards of the same size)."""
        return [(Path(s).name, d) for s, d in zip(self.shards, self.digests)]


def _member_key(name: str) -> str | None:
    """Tar member name -> webdataset sample key (basename up to the first dot)."""
    base = name.rsplit("/", 1)[-1]
    if base.startswith("__") or "." not in base:
        return None
    return name[: len(name) - len(base)] + base.split(".", 1)[0]


def index_shards(source: str | Path, split: str) -> ShardIndex:
    """Index the shards of `split` under `source` (the preprocess output directory) from its
    manifest: only listed shards, every one checked for size and sha256 (manifest.split_shards),
    so a stray, truncated or rewritten shard is a DataError naming it, before training."""
    files = split_shards(source, split)
    return ShardIndex(source=str(Path(source) / split), shards=tuple(f.path for f in files),
                      keys=tuple(f.keys for f in files), digests=tuple(f.sha256 for f in files))


# --------------------------------------------------------------------------------------------
# Plans: which clips, in which batches, for one rank


def stream_order(index: ShardIndex, shard_order: Sequence[int]) -> list[Clip]:
    clips, pos = [], 0
    for s in shard_order:
        for key in index.keys[s]:
            clips.append(Clip(pos, int(s), key))
            pos += 1
    return clips


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


def read_clips(index: ShardIndex, clips: Sequence[Clip],
               members: Callable[[str], bool] | None = None) -> Iterator[dict[str, Any]]:
    """Raw webdataset samples of `clips`, yielded in the given order.

    Shards are streamed in stream order reading only the members of wanted clips; a sample is
    held until its turn comes (at most one shuffle window of them).
    """
    wanted = {c.key for c in clips}
    if not wanted:
        return
    reading = sorted(clips, key=lambda c: c.pos)
    urls = [index.shards[s] for s, _ in itertools.groupby(c.shard for c in reading)]

    def select(fname: str) -> bool:
        return _member_key(fname) in wanted and (members is None or members(fname))

    pipeline = wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(
        handler=shard_read_error, select_files=select))
    pending: dict[str, dict] = {}
    order = iter(clips)
    upcoming = next(order)
    for sample in pipeline:
        pending[sample["__key__"]] = sample
        while upcoming is not None and upcoming.key in pending:
            yield pending.pop(upcoming.key)
            upcoming = next(order, None)
    if upcoming is not None:
        raise DataError(index.shards[upcoming.shard], "clip listed when the shards were indexed "
                        "is missing (shards changed during training?)", field=upcoming.key)


def decode_for_training(sample: dict[str, Any], context: bool = False) -> dict[str, Any]:
    """decode_clip with uint8 frames (cheap to move; normalised on the device) and only the
    contract targets (extras such as crop affines are not augmented). `context`: keep the
    stored context around the crop, for the augmenter to cut the crop from."""
    clip = decode_clip(sample, frames_dtype="uint8", context=context)
    clip["targets"] = {k: v for k, v in clip["targets"].items() if k in TARGET_SPECS}
    return clip


def _build_batches(index: ShardIndex, batches: Sequence[Sequence[Clip]],
                   transform: Callable | None) -> Iterator[dict[str, Any]]:
    clips = [c for b in batches for c in b]
    samples = read_clips(index, clips)
    for batch in batches:
        decoded = []
        for _ in batch:
            # The transform (ClipAugmenter) cuts each crop out of its context.
            clip = decode_for_training(next(samples), context=transform is not None)
            decoded.append(transform(clip) if transform is not None else clip)
        yield collate_clips(decoded)


class TrainStream(torch.utils.data.IterableDataset):
    """Endless augmented training batches of one rank, from (start_epoch, start_batch) on.

    Each item: collate_clips output (key, frames (B,S,3,H,W) uint8, targets, meta) plus
    `epoch` and `batch` (index inside the epoch), so the consumer knows its data position.
    """

    def __init__(self, index: ShardIndex, *, seed: int, batch_size: int, rank: int,
                 world_size: int, shuffle_window: int, augment: AugmentConfig,
                 perms: FlipPerms, start_epoch: int = 0, start_batch: int = 0):
        super().__init__()
        self.index, self.seed, self.batch_size = index, seed, batch_size
        self.rank, self.world_size, self.shuffle_window = rank, world_size, shuffle_window
        perms.check(augment)
        self.augment, self.perms = augment, perms
        self.start_epoch, self.start_batch = start_epoch, start_batch

    def plan(self, epoch: int) -> list[list[Clip]]:
        return train_batches(self.index, seed=self.seed, epoch=epoch, rank=self.rank,
                             world_size=self.world_size, batch_size=self.batch_size,
                             shuffle_window=self.shuffle_window)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = _worker()
        served = 0  # batches handed out so far across epochs (this rank), for round-robin
        for epoch in itertools.count(self.start_epoch):
            first = self.start_batch if epoch == self.start_epoch else 0
            plan = self.plan(epoch)
            numbers = [b for b in range(first, len(plan)) if (served + b - first) % num_workers
                       == worker]
            served += len(plan) - first
            transform = ClipAugmenter(self.augment, self.perms, self.seed, epoch)
            built = _build_batches(self.index, [plan[b] for b in numbers], transform)
            for b, batch in zip(numbers, built):
                yield {**batch, "epoch": epoch, "batch": b}


def make_loader(dataset: torch.utils.data.IterableDataset, num_workers: int, seed: int,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """DataLoader over a stream of ready batches. The explicit generator keeps the loader from
    drawing its worker seeds from (and so advancing) the global torch RNG."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        multiprocessing_context=worker_context(num_workers),
        prefetch_factor=2 if num_workers > 0 else None)


def iter_targets(index: ShardIndex, names: Sequence[str]) -> Iterator[tuple[str, dict]]:
    """(key, {name: array}) of every clip, reading only the targets (no JPEG decoding)."""
    clips = stream_order(index, range(len(index.shards)))
    samples = read_clips(index, clips, members=lambda f: f.endswith(".targets.npz"))
    for clip, sample in zip(clips, samples):
        where = f"{index.shards[clip.shard]}[{clip.key}]"
        with np.load(io.BytesIO(sample["targets.npz"]), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        num_frames = len(arrays["valid"]) if "valid" in arrays else 0
        arrays = check_targets(arrays, num_frames, where=where)
        yield clip.key, {n: arrays[n] for n in names}
