"""Sliding-window prediction over the clips of a split, merged into one prediction per frame.

Preprocess cuts every actor track into clips of S frames at a stride, plus the last S frames, so
windows overlap (at least the last one). Every clip is predicted; the per-frame outputs of the
windows that cover a frame are merged (`WindowMerger`: mean, first window, or the window whose
centre is nearest), so each covered frame of a track ends up with exactly one prediction.

Clips can arrive in any order (loader workers interleave shards): the manifest says how many
clips each track has, and a track is handed on (`predict_tracks`) as soon as its last clip has
been merged, so only the tracks in flight are held in memory.

A predictor is any callable batch -> {"vertices": (B, S, V, 3), "cam": (B, S, 3) optional}, where
batch is `stdformer.data.shards.collate_clips` output with uint8 frames (B, S, 3, H, W).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stdformer.data.shards import MESH_FLAG
from stdformer.io import DataError
from stdformer.model.inputs import IMAGENET_MEAN, IMAGENET_STD, InputProtocol, normalize_frames
from stdformer.scoring import MERGE_MODES

Predictor = Callable[[Mapping[str, Any]], Mapping[str, torch.Tensor]]
TrackId = tuple[str, int]                   # (sequence, actor)


# --------------------------------------------------------------------------------------------
# Predictors


def model_predictor(model: torch.nn.Module, device: torch.device,
                    inputs: InputProtocol | None = None) -> Predictor:
    """A predictor running `model` (STDFormer, eval mode) on `device` in fp32, its frames
    normalised as `inputs` (the model file's protocol) says; ImageNet's when None."""
    model = model.to(device).eval()
    mean, std = (inputs.mean, inputs.std) if inputs is not None else (IMAGENET_MEAN, IMAGENET_STD)

    @torch.inference_mode()
    def predict(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        out = model(normalize_frames(batch["frames"].to(device, non_blocking=True), mean, std))
        return {"vertices": out["vertices"].float().cpu(), "cam": out["cam"].float().cpu()}

    return predict


def constant_predictor(vertices: torch.Tensor) -> Predictor:
    """Predict the same mesh (V, 3) for every frame (the mean-pose baseline); no camera."""
    mesh = torch.as_tensor(vertices, dtype=torch.float32)

    def predict(batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        b, s = batch["frames"].shape[:2]
        return {"vertices": mesh[None, None].expand(b, s, *mesh.shape)}

    return predict


# --------------------------------------------------------------------------------------------
# Merging overlapping windows


class WindowMerger:
    """Per-frame values of overlapping windows of one track -> one value per covered frame.

    mode "mean": average of every window covering the frame; "first": the window that starts
    first; "center": the window in which the frame lies nearest the centre (ties: the earlier
    window). The result does not depend on the order windows are added in.
    """

    def __init__(self, length: int, mode: str = "mean"):
        if mode not in MERGE_MODES:
            raise ValueError(f"merge mode must be one of {MERGE_MODES}, got {mode!r}")
        self.length, self.mode = int(length), mode
        self._values: np.ndarray | None = None        # (T, ...) sums ("mean") or chosen values
        self._count = np.zeros(self.length, np.int64)  # windows seen per frame
        self._score = np.full(self.length, np.inf)     # lower wins ("first", "center")

    def add(self, start: int, values: np.ndarray) -> None:
        """values (S, ...) for frames start .. start + S - 1."""
        values = np.asarray(values)
        s = values.shape[0]
        if start < 0 or start + s > self.length:
            raise ValueError(f"window [{start}, {start + s}) outside the track of "
                             f"{self.length} frames")
        if self._values is None:
            dtype = np.result_type(values.dtype, np.float32)
            self._values = np.zeros((self.length, *values.shape[1:]), dtype)
        elif values.shape[1:] != self._values.shape[1:]:
            raise ValueError(f"window values {values.shape[1:]} vs {self._values.shape[1:]}")
        frames = np.arange(start, start + s)
        self._count[frames] += 1
        if self.mode == "mean":
            self._values[frames] += values
            return
        if self.mode == "first":
            score = np.full(s, float(start))
        else:  # distance to the window centre first, then the start (exact in float64)
            score = np.abs(np.arange(s) - (s - 1) / 2.0) * 2 * (self.length + 1) + start
        better = score < self._score[frames]
        self._score[frames[better]] = score[better]
        self._values[frames[better]] = values[better]

    @property
    def covered(self) -> np.ndarray:
        """(T,) bool: frames some window covers."""
        return self._count > 0

    def result(self) -> np.ndarray:
        """(T, ...) merged values; zeros where no window covers the frame."""
        if self._values is None:
            raise ValueError("no window was added")
        if self.mode != "mean":
            return self._values
        count = np.maximum(self._count, 1).reshape(-1, *([1] * (self._values.ndim - 1)))
        return self._values / count.astype(self._values.dtype)


def merge_windows(windows: Iterable[tuple[int, np.ndarray]], length: int, mode: str = "mean"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """[(start, values (S, ...))] -> (merged (T, ...), covered (T,) bool). See WindowMerger."""
    merger = WindowMerger(length, mode)
    for start, values in windows:
        merger.add(start, values)
    return merger.result(), merger.covered


# --------------------------------------------------------------------------------------------
# Tracks


@dataclass(frozen=True)
class TrackLayout:
    length: int          # frames of the track covered by its clips (max clip end)
    clips: int           # clips the manifest lists for the track


def track_layout(manifest: Mapping[str, list], split: str) -> dict[TrackId, TrackLayout]:
    """(sequence, actor) -> TrackLayout for the clips of `split` in a manifest (read_manifest)."""
    lengths: dict[TrackId, int] = {}
    counts: dict[TrackId, int] = {}
    for row_split, seq, actor, end in zip(manifest["split"], manifest["sequence"],
                                          manifest["actor"], manifest["frame_end"], strict=True):
        if row_split != split:
            continue
        track = (str(seq), int(actor))
        lengths[track] = max(lengths.get(track, 0), int(end))
        counts[track] = counts.get(track, 0) + 1
    return {t: TrackLayout(lengths[t], counts[t]) for t in sorted(lengths)}


@dataclass
class TrackPrediction:
    """One actor track, every array indexed by the frame index in the track (clip_start + i).

    valid (T,): frame counts for the metrics (valid in the shards and covered by a clip).
    frame_ids (T,): the images' frame ids (-1 where no clip covers the frame).
    gt_vertices (T, V, 3), gt_h36m (T, 17, 3): root-relative ground truth, metres.
    vertices[name] (T, V, 3), cam[name] (T, 3) (absent when the predictor has no camera).
    has_mesh (T,): the frame has a ground-truth mesh (False on a joints-only source, whose
    gt_vertices are the zero-pose body, no person's mesh); None: every frame has one.
    """

    sequence: str
    actor: int
    valid: np.ndarray
    frame_ids: np.ndarray
    gt_vertices: np.ndarray
    gt_h36m: np.ndarray
    vertices: dict[str, np.ndarray] = field(default_factory=dict)
    cam: dict[str, np.ndarray] = field(default_factory=dict)
    has_mesh: np.ndarray | None = None


class _TrackBuffer:
    """Windows of one track being merged (ground truth is written per frame: windows agree)."""

    def __init__(self, track: TrackId, layout: TrackLayout, merge: str):
        self.track, self.layout, self.merge = track, layout, merge
        self.starts: set[int] = set()
        self.valid = np.zeros(layout.length, bool)
        self.covered = np.zeros(layout.length, bool)
        self.frame_ids = np.full(layout.length, -1, np.int64)
        self.gt_vertices: np.ndarray | None = None
        self.gt_h36m = np.zeros((layout.length, 17, 3), np.float32)
        self.has_mesh = np.ones(layout.length, bool)
        self.mergers: dict[tuple[str, str], WindowMerger] = {}

    def add(self, start: int, targets: Mapping[str, np.ndarray], frame_ids,
            outputs: Mapping[str, Mapping[str, np.ndarray]], where: str) -> None:
        if start in self.starts:
            raise DataError(where, f"a second clip of {self.track} starts at frame {start}",
                            field="clip_start")
        s = len(targets["valid"])
        if start < 0 or start + s > self.layout.length:
            raise DataError(where, f"clip [{start}, {start + s}) lies outside the "
                            f"{self.layout.length} frames the manifest lists for {self.track}",
                            field="clip_start")
        self.starts.add(start)
        sl = slice(start, start + s)
        if self.gt_vertices is None:
            self.gt_vertices = np.zeros((self.layout.length, *targets["vertices"].shape[1:]),
                                        np.float32)
        self.gt_vertices[sl] = targets["vertices"]
        self.gt_h36m[sl] = targets["joints_h36m"]
        self.valid[sl] = targets["valid"]
        self.has_mesh[sl] = targets.get(MESH_FLAG, True)
        self.covered[sl] = True
        self.frame_ids[sl] = np.asarray(frame_ids, np.int64)
        for name, out in outputs.items():
            for kind, values in out.items():
                merger = self.mergers.get((name, kind))
                if merger is None:
                    merger = self.mergers[(name, kind)] = WindowMerger(self.layout.length,
                                                                       self.merge)
                merger.add(start, values)

    @property
    def complete(self) -> bool:
        return len(self.starts) == self.layout.clips

    def finish(self) -> TrackPrediction:
        pred = TrackPrediction(self.track[0], self.track[1], self.valid & self.covered,
                               self.frame_ids, self.gt_vertices, self.gt_h36m,
                               has_mesh=self.has_mesh)
        for (name, kind), merger in sorted(self.mergers.items()):
            target = pred.vertices if kind == "vertices" else pred.cam
            target[name] = merger.result().astype(np.float32, copy=False)
        return pred


def _to_numpy(outputs: Mapping[str, torch.Tensor], batch_size: int, clip_len: int, name: str
              ) -> dict[str, np.ndarray]:
    out = {}
    for kind in ("vertices", "cam"):
        if kind not in outputs:
            continue
        values = torch.as_tensor(outputs[kind]).detach().float().cpu().numpy()
        if values.shape[:2] != (batch_size, clip_len):
            raise ValueError(f"predictor {name!r}: {kind} has shape {values.shape}, expected "
                             f"({batch_size}, {clip_len}, ...)")
        out[kind] = values
    if "vertices" not in out:
        raise ValueError(f"predictor {name!r} returned no 'vertices'")
    return out


def with_mesh(batches: Iterable[Mapping[str, Any]], body: torch.nn.Module
              ) -> Iterator[dict[str, Any]]:
    """Clip batches with the ground-truth mesh added to their targets: `vertices` (B, S, V, 3),
    posed by `body` (BodyModel.shard_mesh) from the stored pose and betas."""
    for batch in batches:
        targets = batch["targets"]
        yield {**batch, "targets": {**targets, "vertices": body.shard_mesh(
            targets["pose"], targets["betas"]).cpu()}}


def predict_tracks(batches: Iterable[Mapping[str, Any]], predictors: Mapping[str, Predictor],
                   layout: Mapping[TrackId, TrackLayout], merge: str = "mean",
                   observers: Iterable[Callable[[Mapping[str, Any], Mapping[str, Any]], None]] = (),
                   where: str = "<shards>") -> Iterator[TrackPrediction]:
    """Run every predictor on every batch of clips (collate_clips output with the ground-truth
    mesh, `with_mesh`) and yield each track, merged, once all its clips (as the `layout` from
    the manifest says) have been seen.

    observers are called with (batch, {name: {"vertices": (B, S, V, 3), "cam": (B, S, 3)}})
    numpy outputs, e.g. to keep a few clips for figures. Tracks come out in completion order.
    Raises DataError when the shards and the manifest disagree.
    """
    observers = list(observers)
    open_tracks: dict[TrackId, _TrackBuffer] = {}
    done: set[TrackId] = set()
    for batch in batches:
        b, s = batch["frames"].shape[:2]
        outputs = {name: _to_numpy(p(batch), b, s, name) for name, p in predictors.items()}
        for observe in observers:
            observe(batch, outputs)
        targets = {k: batch["targets"][k].numpy() for k in ("vertices", "joints_h36m", "valid",
                                                            MESH_FLAG) if k in batch["targets"]}
        for i, meta in enumerate(batch["meta"]):
            track = (str(meta["sequence"]), int(meta["actor"]))
            clip_where = f"{where}[{batch['key'][i]}]"
            if track not in layout or track in done:
                raise DataError(clip_where, f"clip of {track} is not in the manifest "
                                "(or listed fewer times than the shards hold it)")
            buffer = open_tracks.get(track)
            if buffer is None:
                buffer = open_tracks[track] = _TrackBuffer(track, layout[track], merge)
            buffer.add(int(meta["clip_start"]), {k: v[i] for k, v in targets.items()},
                       meta["frame_ids"], {n: {k: v[i] for k, v in o.items()}
                                           for n, o in outputs.items()}, clip_where)
            if buffer.complete:
                done.add(track)
                del open_tracks[track]
                yield buffer.finish()
    missing = sorted(set(layout) - done)
    if missing:
        track = missing[0]
        seen = len(open_tracks[track].starts) if track in open_tracks else 0
        raise DataError(where, f"the manifest lists {layout[track].clips} clips of {track}, "
                        f"the shards hold {seen}", field="manifest")
