"""The clip shard contract: writer, manifest and a webdataset reader.

One sample = one clip of S frames of one actor track, stored as tar members sharing a key
(`{sequence}__a{actor}__{start:05d}`, sortable and unique):

    <key>.json          meta: key, sequence, actor, split, source, clip_start, num_frames,
                        frame_ids (img_frame_ids of the S frames), crop_size, context_size,
                        body_model_id
    <key>.f00.jpg ...   the S crops with context, JPEG (context_size x context_size, colour):
                        the model's crop_size x crop_size crop is the centre, (context_size -
                        crop_size) / 2 pixels in from each side; the rest is real surroundings
                        for scale and rotation augmentation
    <key>.targets.npz   arrays (camera frame, metres, 3D root-relative on the SMPL pelvis):
        joints3d    (S,24,3) float32  SMPL joints
        joints_h36m (S,17,3) float32  H36M-17 regressed from the mesh
        joints2d    (S,17,3) float32  H36M-17 projected into crop pixels + visibility
        keypoints2d (S,18,3) float32  COCO-18 detections in crop pixels + confidence
        pose        (S,72)   float32  axis-angle, global orientation in the camera frame
        betas       (S,10)   float32
        valid       (S,)     bool     frame usable (camera pose valid, person found, image ok)
      optional extras written by preprocess: affine (S,2,3) image->centre crop, root_cam (S,3)
      pelvis position in the camera (add it back for absolute camera-frame coordinates),
      intrinsics (3,3), has_mesh (S,) bool False where the frame has no mesh target (written
      by joints-only sources such as MPI-INF-3DHP, whose pose and betas are zeros; readers
      see it on every clip, all True where it is absent).
    The ground-truth mesh is not stored: `BodyModel.shard_mesh(pose, betas)` poses it (the
    (S, V, 3) mesh relative to the SMPL pelvis, in the camera frame) where it is used, on the
    training device and in evaluation, as FastMETRO poses its ground truth. Stored, it was 40 KB
    a frame, 15 times a 64 px crop's JPEG: most of preprocessing's and the loader's work.

Shards hold `samples_per_shard` clips each (`shard-%06d.tar`, written by tarfiles.py); their
bytes depend only on the samples (fixed mtime/owner/mode, members sorted by name).
`manifest.parquet` (manifest.py) has one row per clip and the sha256 of every shard;
`list_shards(out_dir, split)` reads only the shards it lists, verified. Plain
`webdataset.WebDataset(url, shardshuffle=False)` reads the shards (so does the faster
`read_shard`); `decode_clip` turns such a raw sample into tensors (the centre crop, as the model
takes it) and `model_input` turns clips into the served model's input. The pieces of
decode_clip (`clip_meta`, `stored_frames`, `clip_targets`) also build training batches in place
(stdformer.train.data.assemble_batch).
"""

from __future__ import annotations

import json
import os
import re
import tarfile
import threading
import zipfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
import torch
import webdataset as wds

from stdformer.data.manifest import split_shards
from stdformer.data.tarfiles import (SHARD_PATTERN, ShardSeriesWriter, read_shard, sample_key,
                                     write_shards)
from stdformer.io import DataError, npz_arrays, npz_bytes

# name -> (shape with "S" for the clip length and None for "any", dtype)
TARGET_SPECS: dict[str, tuple[tuple, np.dtype]] = {
    "joints3d": (("S", 24, 3), np.dtype(np.float32)),
    "joints_h36m": (("S", 17, 3), np.dtype(np.float32)),
    "joints2d": (("S", 17, 3), np.dtype(np.float32)),
    "keypoints2d": (("S", 18, 3), np.dtype(np.float32)),
    "pose": (("S", 72), np.dtype(np.float32)),
    "betas": (("S", 10), np.dtype(np.float32)),
    "valid": (("S",), np.dtype(bool)),
}
# Per-frame flag, stored only by joints-only sources; `clip_targets` fills it in (all True)
# for the others, so every batch has it (the loss masks its mesh terms with it).
MESH_FLAG = "has_mesh"
BATCH_TARGETS = (*TARGET_SPECS, MESH_FLAG)
META_FIELDS = ("key", "sequence", "actor", "split", "source", "clip_start", "num_frames",
               "frame_ids", "crop_size", "context_size", "body_model_id")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_FRAME = re.compile(r"f\d+\.jpg")


# --------------------------------------------------------------------------------------------
# Encoding one clip


def clip_key(sequence: str, actor: int, start: int) -> str:
    """`{sequence}__a{actor}__{start:05d}`; characters webdataset would split on ('.', '/')
    and anything else unusual become '-'."""
    return f"{_UNSAFE.sub('-', sequence)}__a{int(actor)}__{int(start):05d}"


def frame_member(index: int, num_frames: int) -> str:
    """Member suffix of frame `index`: f00.jpg .. (zero-padded to sort in frame order)."""
    width = max(2, len(str(num_frames - 1)))
    return f"f{index:0{width}d}.jpg"


def check_targets(targets: Mapping[str, np.ndarray], num_frames: int, where: str = "<clip>"
                  ) -> dict[str, np.ndarray]:
    """Cast the contract arrays to their dtypes, checking shapes; extras pass through."""
    if "vertices" in targets:
        raise DataError(where, "stored per-frame vertices: shards from an older preprocess "
                        "(the mesh is now posed from pose and betas); rerun preprocess",
                        field="vertices")
    out = {}
    for name, (shape, dtype) in TARGET_SPECS.items():
        if name not in targets:
            raise DataError(where, "missing target array", field=name)
        arr = np.asarray(targets[name])
        want = tuple(num_frames if s == "S" else s for s in shape)
        if arr.ndim != len(want) or any(
                w is not None and w != a for w, a in zip(want, arr.shape, strict=True)):
            raise DataError(where, f"expected shape {want}, got {arr.shape}", field=name)
        out[name] = arr.astype(dtype, copy=False)
    for name in sorted(set(targets) - set(TARGET_SPECS)):
        out[name] = np.asarray(targets[name])
    return out


def encode_clip(key: str, frames_jpeg: Sequence[bytes], targets: Mapping[str, np.ndarray],
                meta: Mapping[str, Any]) -> dict[str, bytes | str]:
    """Build the webdataset sample dict (member suffix -> bytes) of one clip."""
    num_frames = len(frames_jpeg)
    arrays = check_targets(targets, num_frames, where=key)
    missing = [f for f in META_FIELDS if f not in meta and f not in ("key", "num_frames")]
    if missing:
        raise DataError(key, "missing meta field", field=missing[0])
    meta = {**meta, "key": key, "num_frames": num_frames}
    sample: dict[str, bytes | str] = {"__key__": key}
    sample["json"] = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
    for i, jpg in enumerate(frames_jpeg):
        sample[frame_member(i, num_frames)] = bytes(jpg)
    sample["targets.npz"] = npz_bytes(arrays, compress=False)
    return sample


# --------------------------------------------------------------------------------------------
# Writing shards


# --------------------------------------------------------------------------------------------
# Reading


def list_shards(source: str | os.PathLike | Sequence[str], split: str | None = None
                ) -> list[str]:
    """Shard URLs from a preprocess output dir with `split` (the shards its manifest lists,
    verified against their sha256: see manifest.split_shards), a dir of shards, a brace
    pattern (`a/shard-{000000..000009}.tar`) or an explicit list. Sorted for dirs."""
    if isinstance(source, (list, tuple)):
        urls = [str(u) for u in source]
    else:
        text = str(source)
        path = Path(text)
        if path.is_dir() and split is not None:
            urls = [s.path for s in split_shards(path, split)]
        elif path.is_dir():
            urls = sorted(str(p) for p in path.glob("shard-*.tar"))
        else:
            urls = list(wds.shardlists.expand_urls(text))
    if not urls:
        raise DataError(str(source), "no shards found")
    return urls


def shard_read_error(exn: Exception) -> bool:
    """webdataset exception handler: a shard that cannot be read (truncated, not a tar) becomes
    a DataError naming it; other errors pass unchanged. webdataset calls the handler twice for an
    error inside a tar member, first without the shard's URL: that call re-raises for the outer
    one."""
    if isinstance(exn, DataError):  # webdataset appended its context to the args: rebuild
        raise DataError(exn.path, exn.problem, exn.field) from None
    if not isinstance(exn, (tarfile.TarError, OSError, EOFError)):
        raise exn
    url = exn.args[-1] if len(exn.args) > 1 and isinstance(exn.args[-1], str) else None
    if url is None:
        raise exn
    problem = str(exn.args[0]).split(" @ ", 1)[0]
    raise DataError(url, f"not a readable tar shard (truncated or corrupt?): {problem}") from exn


def decode_jpeg_rgb(data: bytes, where: str, out: np.ndarray | None = None) -> np.ndarray:
    """JPEG bytes -> (H, W, 3) uint8 RGB (libjpeg-turbo), decoded into `out` when given (a
    writable C-contiguous array of that shape); a DataError naming `where` if unreadable."""
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True, buffer=out)
    except (ValueError, TypeError) as e:
        raise DataError(where, f"frame is not a readable JPEG: {e}") from e


def context_margin(meta: Mapping[str, Any]) -> int:
    """Pixels of context on each side of the centre crop in a clip's stored frames."""
    crop, stored = int(meta["crop_size"]), int(meta.get("context_size", meta["crop_size"]))
    return (stored - crop) // 2


def clip_meta(sample: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    """A raw sample's (where, meta, frame member names in frame order): `where` names the
    shard and key for errors."""
    where = f"{sample.get('__url__', '<sample>')}[{sample['__key__']}]"
    meta = sample.get("json")
    if meta is None:
        raise DataError(where, "missing member", field="json")
    if isinstance(meta, (bytes, bytearray)):
        meta = json.loads(meta)
    frame_names = sorted(k for k in sample if _FRAME.fullmatch(k))
    if not frame_names:
        raise DataError(where, "no frames", field="f00.jpg")
    return where, meta, frame_names


def stored_frames(sample: Mapping[str, Any], where: str, meta: Mapping[str, Any],
                  frame_names: Sequence[str], out: np.ndarray | None = None) -> np.ndarray:
    """The clip's stored frames, (S, C, C, 3) uint8 RGB with C = context_size (the crop with
    its context), decoded into `out` when it has that shape (a scratch buffer reused across
    clips)."""
    headers = []
    for name in frame_names:
        try:
            headers.append(simplejpeg.decode_jpeg_header(sample[name])[:2])
        except (ValueError, TypeError) as e:
            raise DataError(f"{where}.{name}", f"frame is not a readable JPEG: {e}") from e
    side = int(meta.get("context_size", meta.get("crop_size", headers[0][0])))
    if any(size != (side, side) for size in headers):
        height, width = next(size for size in headers if size != (side, side))
        raise DataError(where, f"frames are {width}x{height}, the meta says {side}x{side}",
                        field="context_size")
    shape = (len(frame_names), side, side, 3)
    if out is None or out.shape != shape:
        out = np.empty(shape, np.uint8)
    for i, name in enumerate(frame_names):
        decode_jpeg_rgb(sample[name], f"{where}.{name}", out[i])
    return out


def clip_targets(sample: Mapping[str, Any], where: str, num_frames: int
                 ) -> dict[str, np.ndarray]:
    """The clip's targets.npz as numpy arrays in the contract's dtypes, with the mesh flag
    (MESH_FLAG (S,) bool; all True when the clip does not store it)."""
    raw = sample.get("targets.npz")
    if raw is None:
        raise DataError(where, "missing member", field="targets.npz")
    try:
        arrays = npz_arrays(bytes(raw))
    except (ValueError, zipfile.BadZipFile) as e:
        raise DataError(where, f"not a readable .npz: {e}", field="targets.npz") from e
    arrays = check_targets(arrays, num_frames, where=where)
    flag = np.asarray(arrays.get(MESH_FLAG, np.ones(num_frames, bool)))
    if flag.shape != (num_frames,):
        raise DataError(where, f"expected shape ({num_frames},), got {flag.shape}",
                        field=MESH_FLAG)
    arrays[MESH_FLAG] = flag.astype(bool)
    return arrays


def as_float32(array: np.ndarray) -> torch.Tensor:
    """The array as a tensor, floats as float32 (extras may be float64), other dtypes kept."""
    tensor = torch.from_numpy(array)
    return tensor.float() if tensor.is_floating_point() else tensor


def decode_clip(sample: Mapping[str, Any], frames_dtype: str = "float32",
                context: bool = False) -> dict[str, Any]:
    """A raw webdataset sample (member suffix -> bytes) -> decoded clip.

    Returns {"key": str, "frames": (S,3,H,W) RGB tensor (float32 in [0,1] or uint8),
    "targets": {name: tensor} (floats as float32, valid as bool), "meta": dict}. The frames are
    the centre crop_size x crop_size crop, the model's input, which 2D targets and `affine`
    refer to; with `context=True` the whole stored context_size crop (for augmentation).
    """
    if frames_dtype not in ("float32", "uint8"):
        raise ValueError(f"frames_dtype must be 'float32' or 'uint8', got {frames_dtype!r}")
    where, meta, frame_names = clip_meta(sample)
    frames = stored_frames(sample, where, meta, frame_names)
    if not context and "crop_size" in meta:
        m, crop = context_margin(meta), int(meta["crop_size"])
        frames = frames[:, m:m + crop, m:m + crop]
    frames = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # (S,3,H,W) uint8
    if frames_dtype == "float32":
        frames = frames.float().div_(255.0)
    targets = {name: as_float32(arr)
               for name, arr in clip_targets(sample, where, len(frame_names)).items()}
    return {"key": sample["__key__"], "frames": frames, "targets": targets, "meta": meta}


def model_input(clips: Mapping[str, Any] | torch.Tensor) -> np.ndarray:
    """Decoded clip(s) -> the served model's input (stdformer.serving): uint8 (B,S,H,W,3) RGB.

    `clips`: a decode_clip result (frames (S,3,H,W)), a collate_clips / make_clip_loader batch
    (frames (B,S,3,H,W)) or such a frames tensor; float frames in [0,1] are rounded to uint8.
    """
    frames = clips["frames"] if isinstance(clips, Mapping) else clips
    frames = torch.as_tensor(frames)
    if frames.ndim == 4:
        frames = frames[None]
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be (S,3,H,W) or (B,S,3,H,W), got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        frames = frames.float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return np.ascontiguousarray(frames.permute(0, 1, 3, 4, 2).numpy())


def collate_clips(clips: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack decoded clips: frames (B,S,3,H,W), targets[name] (B,...), meta/key as lists."""
    return {
        "key": [c["key"] for c in clips],
        "frames": torch.stack([c["frames"] for c in clips]),
        "targets": {name: torch.stack([c["targets"][name] for c in clips])
                    for name in clips[0]["targets"]},
        "meta": [c["meta"] for c in clips],
    }


def rank_shards(urls: Sequence[str], rank: int, world_size: int, shuffle: bool, seed: int,
                epoch: int) -> list[str]:
    """The shards one rank reads: one permutation shared by all ranks (seeded by seed and
    epoch, so ranks agree without talking), then every world_size-th shard from `rank`."""
    urls = list(urls)
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(len(urls))
        urls = [urls[i] for i in order]
    if len(urls) < world_size:
        raise ValueError(f"{len(urls)} shards cannot feed {world_size} ranks; write smaller "
                         "shards (preprocess.samples_per_shard)")
    return urls[rank::world_size]


class ClipDataset(torch.utils.data.IterableDataset):
    """Decoded clips from shards, split disjointly by rank (shards) and DataLoader worker.

    With shuffle, shard order is permuted per epoch and samples pass a shuffle buffer seeded by
    (seed, epoch, rank, worker): the same seed gives the same order. Call `set_epoch` before
    each epoch (takes effect when the loader starts its workers, i.e. without
    persistent_workers). With `keys`, only those clips are decoded (the others are skipped
    before their JPEGs are decoded).
    """

    def __init__(self, urls: Sequence[str], *, shuffle: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle_buffer: int = 64,
                 frames_dtype: str = "float32", transform: Callable | None = None,
                 epoch: int = 0, keys: Collection[str] | None = None):
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.urls = list(urls)
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch
        self.rank, self.world_size = rank, world_size
        self.shuffle_buffer = shuffle_buffer
        self.frames_dtype = frames_dtype
        self.transform = transform
        self.keys = None if keys is None else frozenset(keys)
        rank_shards(self.urls, rank, world_size, shuffle, seed, epoch)  # fail early

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _decode(self, sample):
        clip = decode_clip(sample, self.frames_dtype)
        return self.transform(clip) if self.transform is not None else clip

    def pipeline(self) -> wds.DataPipeline:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        urls = rank_shards(self.urls, self.rank, self.world_size, self.shuffle, self.seed,
                           self.epoch)
        stages: list[Any] = [wds.SimpleShardList(urls), _split_by_torch_worker,
                             wds.tarfile_to_samples(handler=shard_read_error)]
        if self.shuffle and self.shuffle_buffer > 1:
            sample_seed = int(np.random.default_rng(
                [self.seed, self.epoch, self.rank, worker]).integers(2**31))
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer,
                                      seed=sample_seed))
        if self.keys is not None:
            keys = self.keys
            stages.insert(3, wds.select(lambda sample: sample["__key__"] in keys))
        stages.append(wds.map(self._decode))
        return wds.DataPipeline(*stages)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.pipeline())


def _split_by_torch_worker(src):
    """Every num_workers-th shard for this DataLoader worker (ignores RANK env: ranks are
    split explicitly by ClipDataset)."""
    info = torch.utils.data.get_worker_info()
    if info is None or info.num_workers <= 1:
        yield from src
    else:
        for i, item in enumerate(src):
            if i % info.num_workers == info.id:
                yield item


def make_clip_loader(source: str | os.PathLike | Sequence[str], split: str | None = None, *,
                     shuffle: bool = False, seed: int = 0, batch_size: int = 16,
                     num_workers: int = 0, rank: int = 0, world_size: int = 1,
                     shuffle_buffer: int = 64, drop_last: bool = False,
                     frames_dtype: str = "float32", transform: Callable | None = None,
                     epoch: int = 0, keys: Collection[str] | None = None
                     ) -> torch.utils.data.DataLoader:
    """DataLoader of collated clip batches (see `collate_clips`) from shards.

    `source`: preprocess output dir (+ `split`), a shard dir, a brace pattern or URL list.
    Each rank reads a disjoint subset of shards; each worker a disjoint subset of those.
    Ranks can receive different numbers of clips when shards are uneven. `keys`: only these
    clips (ClipDataset).
    """
    urls = list_shards(source, split)
    dataset = ClipDataset(urls, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size,
                          shuffle_buffer=shuffle_buffer, frames_dtype=frames_dtype,
                          transform=transform, epoch=epoch, keys=keys)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_clips,
        drop_last=drop_last, multiprocessing_context=worker_context(num_workers))


def worker_context(num_workers: int) -> str | None:
    """How DataLoader workers start: a fork of this process while it runs no other thread
    (torch's default; works in a plain script, no `if __name__ == "__main__":` needed), else a
    forkserver, because forking a process whose threads (an MLflow or Prefect client) may hold
    locks can kill a worker at random. A forkserver imports the main module again, so a script
    that starts loader workers while it runs threads needs the `__main__` guard."""
    if num_workers <= 0:
        return None
    return "fork" if threading.active_count() == 1 else "forkserver"


__all__ = [
    "SHARD_PATTERN", "TARGET_SPECS", "MESH_FLAG", "BATCH_TARGETS", "clip_key", "frame_member",
    "check_targets",
    "encode_clip", "ShardSeriesWriter", "write_shards", "list_shards", "sample_key",
    "read_shard", "shard_read_error",
    "decode_jpeg_rgb", "context_margin", "clip_meta", "stored_frames", "clip_targets", "as_float32",
    "decode_clip", "model_input", "collate_clips", "rank_shards",
    "ClipDataset", "make_clip_loader", "worker_context",
]
