"""One sequence of a dataset (any layout: its reader gives threedpw.Track's) -> its tracks'
clips, encoded as shard samples with manifest rows (`process_sequence`; runs in an executor's
worker, see preprocess.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stdformer.body.track_posing import PosingArrays
from stdformer.data import crops, shards
from stdformer.data.preprocess_config import PreprocessConfig, clip_starts
from stdformer.data.stored_crops import crop_frames
from stdformer.data.targets import body_targets, checked_array, project
from stdformer.io import DataError

SKIP_REASONS = ("campose_invalid", "few_keypoints", "missing_image", "corrupt_image",
                "short_track")  # a layout's reader may add its own (Track.skip_masks)


@dataclass(frozen=True)
class SequenceTask:
    """The annotated tracks of one sequence (they share its images), in actor order, of one
    split (clips every `stride` frames) of dataset `source`."""

    tracks: list[Any]  # stdformer.data.threedpw.Track
    pkl_path: str  # for error messages
    body_dir: str
    cfg: PreprocessConfig
    source: str
    stride: int
    skip_reasons: tuple[str, ...] = SKIP_REASONS  # the report's reasons, in its order


_BODIES: dict[tuple[str, str], PosingArrays] = {}


def _body(body_dir: str) -> PosingArrays:
    """The body's posing arrays, loaded once per process and body (workers handle many
    sequences); keyed by the directory's body_model_id, so a rebuilt directory is loaded
    afresh."""
    try:
        body_id = json.loads((Path(body_dir) / "meta.json").read_text()).get("body_model_id")
    except (OSError, ValueError):
        body_id = None  # PosingArrays.load reports the problem
    key = (str(body_dir), str(body_id))
    if key not in _BODIES:
        _BODIES.clear()
        _BODIES[key] = PosingArrays.load(body_dir)
    return _BODIES[key]


@dataclass
class _TrackBoxes:
    """A track's checked 2D inputs and crop boxes (N frames): what cropping and targets use."""

    keypoints: np.ndarray  # (N, 18, 3)
    intrinsics: np.ndarray  # (3, 3)
    campose_valid: np.ndarray  # (N,) bool
    detected: np.ndarray  # (N,) bool
    centers: np.ndarray  # (N, 2)
    sides: np.ndarray  # (N,)
    affines: np.ndarray  # (N, 2, 3) image -> crop


def _checked_track_boxes(track, cfg: PreprocessConfig, pkl: str) -> _TrackBoxes:
    n = len(track.image_paths)
    keypoints = checked_array(track, "poses2d", (n, 18, 3), pkl, f"poses2d[{track.actor}]")
    intrinsics = checked_array(track, "intrinsics", (3, 3), pkl, "cam_intrinsics")
    campose_valid = np.asarray(track.campose_valid, dtype=bool).reshape(-1)
    if campose_valid.shape != (n,):
        raise DataError(pkl, f"expected {n} flags, got {campose_valid.shape}",
                        field=f"campose_valid[{track.actor}]")
    boxes = crops.track_boxes(keypoints, cfg.keypoint_conf, cfg.min_keypoints,
                              cfg.bbox_extent_scale, cfg.bbox_median_kernel, cfg.bbox_sigma)
    centers, sides = boxes.centers, boxes.sides
    if not boxes.detected.any():  # nobody found: crop around the principal point, all invalid
        centers = np.tile(intrinsics[:2, 2], (n, 1))
        sides = np.full(n, 2 * min(intrinsics[0, 2], intrinsics[1, 2]) / cfg.crop_scale)
    affines = crops.crop_affine(centers, sides, cfg.crop_scale, cfg.crop_size)
    return _TrackBoxes(keypoints, intrinsics, campose_valid, boxes.detected, centers, sides,
                       affines)


def process_sequence(task: SequenceTask) -> list[dict[str, Any]]:
    """All clips of each track of one sequence, encoded as shard samples, with manifest rows
    and counts: one result per track, in task order."""
    cfg, pkl = task.cfg, task.pkl_path
    body = _body(task.body_dir)
    results, todo = [], []
    for track in task.tracks:
        n = len(track.image_paths)
        result = {"split": track.split, "sequence": track.sequence, "actor": int(track.actor),
                  "frames": n, "samples": [], "rows": [],
                  "skipped": {r: 0 for r in task.skip_reasons}}
        results.append(result)
        starts = clip_starts(n, cfg.clip_len, task.stride)
        if not starts:
            result["skipped"]["short_track"] = n
            continue
        todo.append((track, result, starts, _checked_track_boxes(track, cfg, pkl),
                     body_targets(track, body, pkl)))
    jpegs, image_ok, image_flags = crop_frames(
        [t[0].image_paths for t in todo], [t[3].centers for t in todo],
        [t[3].sides for t in todo], cfg)
    for (track, result, starts, boxes, targets), *images in zip(todo, jpegs, image_ok,
                                                                 image_flags, strict=True):
        _track_clips(track, result, starts, boxes, targets, *images, body.body_model_id, cfg,
                     task.source)
    return results


def _track_clips(track, result: dict[str, Any], starts: list[int], boxes: _TrackBoxes,
                 targets: dict[str, np.ndarray], jpegs: list[bytes], image_ok: np.ndarray,
                 image_flags: dict[str, np.ndarray], body_id: str,
                 cfg: PreprocessConfig, source: str) -> None:
    """Fill `result` with the track's clips (samples and manifest rows) and skip counts."""
    S = cfg.clip_len
    valid = boxes.campose_valid & boxes.detected & image_ok
    reasons = {"campose_invalid": ~boxes.campose_valid, "few_keypoints": ~boxes.detected,
               **image_flags}
    for reason, mask in track.skip_masks.items():  # the layout's own (e.g. no SMPL fit)
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        valid = valid & ~mask
        reasons[reason] = mask
    for reason, mask in reasons.items():
        result["skipped"][reason] = int(mask.sum())

    # 2D: H36M joints through the camera then the crop; detections through the crop.
    affines = boxes.affines
    uv, in_front = project(targets["joints_h36m_cam"], boxes.intrinsics)
    joints2d = np.concatenate([crops.apply_affine(uv, affines),
                               (in_front & valid[:, None])[..., None]], axis=-1)
    kp = np.nan_to_num(boxes.keypoints)
    keypoints2d = np.concatenate([crops.apply_affine(kp[..., :2], affines), kp[..., 2:]], axis=-1)

    per_frame = {
        "joints3d": targets["joints3d"],
        "joints_h36m": targets["joints_h36m"], "joints2d": joints2d,
        "keypoints2d": keypoints2d, "pose": targets["pose"], "betas": targets["betas"],
        "valid": valid, "affine": affines.astype(np.float32),
        "root_cam": targets["root_cam"].astype(np.float32),
    }
    if "has_mesh" in targets:  # only joints-only tracks store it (absent: every frame has one)
        per_frame["has_mesh"] = targets["has_mesh"]
    frame_ids = np.asarray(track.img_frame_ids).reshape(-1)
    for start in starts:
        sl = slice(start, start + S)
        key = shards.clip_key(track.sequence, track.actor, start)
        clip_targets = {name: arr[sl] for name, arr in per_frame.items()}
        clip_targets["intrinsics"] = boxes.intrinsics.astype(np.float32)
        meta = {"sequence": track.sequence, "actor": int(track.actor), "split": track.split,
                "source": source, "camera": int(track.camera), "clip_start": start,
                "frame_ids": [int(f) for f in frame_ids[sl]], "crop_size": cfg.crop_size,
                "context_size": cfg.context_size, "body_model_id": body_id}
        result["samples"].append(shards.encode_clip(key, jpegs[sl], clip_targets, meta))
        result["rows"].append({"key": key, "split": track.split, "sequence": track.sequence,
                               "actor": int(track.actor), "frame_start": start,
                               "frame_end": start + S, "num_frames": S,
                               "num_valid": int(valid[sl].sum()),
                               "valid": [bool(v) for v in valid[sl]], "source": source,
                               "camera": int(track.camera),
                               "crop_size": cfg.crop_size, "context_size": cfg.context_size})


def process_sequence_task(task: SequenceTask) -> list[dict[str, Any]] | dict[str, Any]:
    """Executor entry point: process_sequence, with a DataError sent back as plain data (the
    exception does not survive pickling between processes) and re-raised by the caller."""
    try:
        return process_sequence(task)
    except DataError as e:
        return {"error": {"path": e.path, "problem": e.problem, "field": e.field}}
