"""Training on a weighted mix of sources: which source each batch comes from, and the stream.

Every batch holds clips of one source. The source of step `g` is a pure function of
(weights, seed, g): a smooth weighted round-robin (each step every source earns its weight in
credit, the source with the most credit is drawn and pays 1; exact ties go to a seeded order).
Its credits stay bounded, so over any run of n steps each source's count is within about the
number of sources of n x its weight: a low-discrepancy draw, no sampling noise.

Each source keeps its own epoch plans (`train_batches` on its ShardIndex). The k-th batch drawn
from a source of n batches per epoch is batch k % n of its epoch k // n, so every position is
derived from the step alone: resuming after step s replays the schedule and starts at s. Every
rank computes the same schedule (ranks stay in step) and reads its own chunk of each epoch.
Loader workers split the steps round-robin, as TrainStream does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from stdformer.body.mirror import FlipPerms
from stdformer.data.shard_index import ShardIndex
from stdformer.io import DataError
from stdformer.train.augment import ClipAugmenter
from stdformer.train.buffers import Arenas, ReleaseBoard, pack
from stdformer.train.config import AugmentConfig
from stdformer.train.data import _build_batches, _worker, train_batches


def mix_weights(mix: Mapping[str, float], available: Sequence[str]) -> dict[str, float]:
    """`train.mix` -> {source: weight} of the sources that are read (weight > 0), normalised
    to sum 1, in the mix's order. An empty mix trains on the only source there is."""
    if not mix:
        if len(available) != 1:
            raise DataError("train.mix", f"several sources ({', '.join(available)}): give "
                            "each a weight in train.mix, e.g. {" +
                            ", ".join(f"{n}: 1.0" for n in available) + "}")
        return {available[0]: 1.0}
    read = {name: float(w) for name, w in mix.items() if w > 0}
    total = sum(read.values())
    return {name: w / total for name, w in read.items()}


def mix_schedule(weights: Sequence[float], seed: int, steps: int) -> np.ndarray:
    """(steps,) int64: the index of the source each step draws from (module docstring)."""
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    if len(w) == 1:
        return np.zeros(steps, np.int64)
    tie_rank = np.random.default_rng([seed, len(w)]).permutation(len(w))   # lower wins a tie
    credit = np.zeros(len(w))
    out = np.empty(steps, np.int64)
    for step in range(steps):
        credit += w
        best = np.flatnonzero(credit == credit.max())
        pick = int(best[np.argmin(tie_rank[best])])
        credit[pick] -= 1.0
        out[step] = pick
    return out


def source_positions(schedule: np.ndarray, num_sources: int) -> np.ndarray:
    """(steps,) how many batches of its source came before each step (its k)."""
    counts = np.zeros(len(schedule), np.int64)
    for i in range(num_sources):
        mine = schedule == i
        counts[mine] = np.arange(int(mine.sum()))
    return counts


class MixStream(torch.utils.data.IterableDataset):
    """Augmented training batches of one rank for steps [start_step, end_step), each from the
    source the schedule names. Items: an `assemble_batch` batch plus `source` (its name),
    `epoch` and `batch` (the position in that source's epoch plan) and `step`."""

    def __init__(self, sources: Mapping[str, ShardIndex], weights: Sequence[float], *,
                 seed: int, batch_size: int, rank: int, world_size: int, shuffle_window: int,
                 augment: AugmentConfig, perms: FlipPerms, end_step: int, start_step: int = 0):
        super().__init__()
        self.names, self.indexes = list(sources), list(sources.values())
        self.weights = list(weights)
        self.seed, self.batch_size = seed, batch_size
        self.rank, self.world_size, self.shuffle_window = rank, world_size, shuffle_window
        perms.check(augment.may_flip)
        self.augment, self.perms = augment, perms
        self.start_step, self.end_step = start_step, end_step
        self.board: ReleaseBoard | None = None  # make_loader's, for its workers' arenas

    def plan(self, source: int, epoch: int) -> list:
        return train_batches(self.indexes[source], seed=self.seed, epoch=epoch, rank=self.rank,
                             world_size=self.world_size, batch_size=self.batch_size,
                             shuffle_window=self.shuffle_window)

    def positions(self) -> list[tuple[int, int, int]]:
        """(source, epoch, batch) of every step from 0 to end_step (the same on every rank).
        Fails on a source too small for one batch per rank (here, not in a loader worker)."""
        per_epoch = [len(self.plan(i, 0)) for i in range(len(self.indexes))]
        schedule = mix_schedule(self.weights, self.seed, self.end_step)
        ks = source_positions(schedule, len(self.indexes))
        return [(int(i), int(k) // per_epoch[i], int(k) % per_epoch[i])
                for i, k in zip(schedule, ks)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = _worker()
        packing = self.board is not None and torch.utils.data.get_worker_info() is not None
        arenas = Arenas(self.board if packing else None)
        positions = self.positions()
        mine = [g for g in range(self.start_step, self.end_step)
                if (g - self.start_step) % num_workers == worker]
        # per (source, epoch): the batches this worker builds, read in one pass of its shards
        wanted: dict[tuple[int, int], list[int]] = {}
        for g in mine:
            i, epoch, b = positions[g]
            wanted.setdefault((i, epoch), []).append(b)
        open_epochs: dict[int, tuple[int, Iterator]] = {}
        for g in mine:
            i, epoch, b = positions[g]
            if open_epochs.get(i, (None,))[0] != epoch:
                plan = self.plan(i, epoch)
                augmenter = ClipAugmenter(self.augment, self.perms, self.seed, epoch)
                built = _build_batches(self.indexes[i], [plan[n] for n in wanted[(i, epoch)]],
                                       augmenter, arenas)
                open_epochs[i] = (epoch, built)
            batch = {**next(open_epochs[i][1]), "source": self.names[i], "epoch": epoch,
                     "batch": b, "step": g}
            yield pack(batch) if packing else batch
