"""The clips of one split of the shards, as the manifest lists them (every shard checked for
size and sha256), and reading them back in a given order: what training's streams and the
scoring of a split both start from."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from stdformer.data import shards
from stdformer.data.manifest import read_manifest, split_shards
from stdformer.data.shards import check_targets
from stdformer.io import DataError


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


def index_shards(source: str | Path, split: str) -> ShardIndex:
    """Index the shards of `split` under `source` (the preprocess output directory) from its
    manifest: only listed shards, every one checked for size and sha256 (manifest.split_shards),
    so a stray, truncated or rewritten shard is a DataError naming it, before training."""
    files = split_shards(source, split)
    return ShardIndex(source=str(Path(source) / split), shards=tuple(f.path for f in files),
                      keys=tuple(f.keys for f in files), digests=tuple(f.sha256 for f in files))


def stream_order(index: ShardIndex, shard_order: Sequence[int]) -> list[Clip]:
    clips, pos = [], 0
    for s in shard_order:
        for key in index.keys[s]:
            clips.append(Clip(pos, int(s), key))
            pos += 1
    return clips


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
        return shards.sample_key(fname) in wanted and (members is None or members(fname))

    samples = (sample for url in urls for sample in shards.read_shard(url, select))
    pending: dict[str, dict] = {}
    order = iter(clips)
    upcoming = next(order)
    for sample in samples:
        pending[sample["__key__"]] = sample
        while upcoming is not None and upcoming.key in pending:
            yield pending.pop(upcoming.key)
            upcoming = next(order, None)
    if upcoming is not None:
        raise DataError(index.shards[upcoming.shard], "clip listed when the shards were indexed "
                        "is missing (shards changed during training?)", field=upcoming.key)


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


def crop_protocol(source: str | Path) -> dict[str, Any]:
    """How the clips under `source` (the preprocess output) were cropped: crop_size and context
    from the manifest (one value for every clip, else DataError), crop_scale from preprocess's
    report.json (None where there is none, e.g. shards written by other tools)."""
    source = Path(source)
    manifest = read_manifest(source)
    sizes = {(int(c), int(x)) for c, x in zip(manifest["crop_size"], manifest["context_size"])}
    if len(sizes) != 1:
        raise DataError(source / "manifest.parquet", f"clips of several crop sizes {sorted(sizes)}"
                        " (crop_size, context_size): one model has one input size",
                        field="crop_size")
    crop_size, context_size = sizes.pop()
    settings: dict[str, Any] = {}
    report = source / "report.json"
    if report.is_file():
        settings = json.loads(report.read_text()).get("settings", {})
    return {"crop_size": crop_size, "crop_scale": settings.get("crop_scale"),
            "context": float(settings.get("context", context_size / crop_size))}
