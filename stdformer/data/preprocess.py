"""3DPW-layout dataset -> clip shards (see shards.py for the contract).

Per sequence (in parallel over an executor; results come back in order), for each actor track:
  1. person boxes from the COCO-18 detections (crops.track_boxes), one square crop per frame,
     stored with `context` x its side of real surroundings (the model's crop is the centre);
     each image is read and decoded once for all the people in it, at the reduced JPEG scale
     (1/2, 1/4, 1/8) that still gives every crop full resolution;
  2. targets from the body model (targets.pose_track): SMPL and H36M-17 joints from (pose,
     betas, trans) in the camera frame of cam_poses, root-relative on the SMPL pelvis;
     camera-frame pose (global orientation rotated into the camera), from which the mesh is
     posed where it is used (not stored); H36M-17 joints projected with the intrinsics and then
     the crop affine;
  3. clips of `clip_len` frames at the split's stride, plus the last `clip_len` frames.
The main process writes the shards in (split, sequence, actor, start) order, so two runs give
identical bytes. A frame is valid when its camera pose is valid, more than `min_keypoints`
keypoints are confident and its image is readable (the JPEG decoder reports no corruption).
A split without clips is an error unless `optional_splits` lists it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from stdformer.data import crops, manifest, shards
from stdformer.data.executors import make_executor
from stdformer.data.targets import PosingArrays, body_targets, checked_array, project
from stdformer.data.threedpw import SEQUENCE_DIR, iter_tracks
from stdformer.io import DataError, atomic_output

SKIP_REASONS = ("campose_invalid", "few_keypoints", "missing_image", "corrupt_image",
                "short_track")


@dataclass
class PreprocessConfig:
    """params.yaml section `preprocess`."""

    dataset_root: str = "data/raw/synthetic"
    source: str = "synthetic"  # written into every clip's meta and the manifest
    splits: list[str] = field(default_factory=lambda: ["train", "validation", "test"])
    optional_splits: list[str] = field(default_factory=list)  # may have no clips (else an error)
    crop_size: int = 64  # the model's input size; 224 for the full profile
    crop_scale: float = 1.2  # crop side = crop_scale x box side
    context: float = 1.25  # stored crops show context x the crop side (for scale/rotation aug.)
    clip_len: int = 8
    # Per split; a split not listed uses clip_len (non-overlapping). The last clip_len frames
    # of a track always form a clip too.
    stride: dict[str, int] = field(default_factory=dict)
    min_keypoints: int = 6  # a frame needs more than this many confident keypoints
    keypoint_conf: float = 0.3
    bbox_extent_scale: float = 1.1
    bbox_median_kernel: int = 11
    bbox_sigma: float = 8.0
    samples_per_shard: int = 64
    workers: int = 2
    executor: Literal["local", "serial", "dask"] = "local"
    executor_address: str = ""  # Dask scheduler address (executor: dask)
    on_error: Literal["fail", "skip"] = "fail"
    jpeg_quality: int = 90

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.on_error not in ("fail", "skip"):
            out.append(("on_error", f"must be 'fail' or 'skip', got {self.on_error!r}"))
        if self.executor not in ("local", "serial", "dask"):
            out.append(("executor", f"must be 'local', 'serial' or 'dask', got "
                                    f"{self.executor!r}"))
        if not self.splits:
            out.append(("splits", "must name at least one split"))
        for name, value, low in (("crop_size", self.crop_size, 8), ("clip_len", self.clip_len, 1),
                                 ("samples_per_shard", self.samples_per_shard, 1),
                                 ("workers", self.workers, 0),
                                 ("min_keypoints", self.min_keypoints, 0),
                                 ("bbox_median_kernel", self.bbox_median_kernel, 1)):
            if value < low:
                out.append((name, f"must be >= {low}, got {value}"))
        if self.crop_scale <= 0 or self.bbox_extent_scale <= 0:
            out.append(("crop_scale", "scales must be > 0"))
        if not 1.0 <= self.context <= 2.0:
            out.append(("context", f"must be in [1, 2], got {self.context}"))
        for split in self.optional_splits:
            if split not in self.splits:
                out.append(("optional_splits", f"{split!r} is not one of splits {self.splits}"))
        if self.bbox_sigma < 0:
            out.append(("bbox_sigma", f"must be >= 0, got {self.bbox_sigma}"))
        if not 1 <= self.jpeg_quality <= 100:
            out.append(("jpeg_quality", f"must be in 1..100, got {self.jpeg_quality}"))
        for split, value in self.stride.items():
            if split not in self.splits:
                out.append((f"stride.{split}", f"not one of splits {self.splits}"))
            elif value < 1:
                out.append((f"stride.{split}", f"must be >= 1, got {value}"))
        return out

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            name, problem = problems[0]
            raise ValueError(f"{name}: {problem}")

    def stride_for(self, split: str) -> int:
        return self.stride.get(split, self.clip_len)

    @property
    def context_size(self) -> int:
        """Side of the stored crops: crop_size plus the same whole number of context pixels on
        each side (so the centre crop is a plain slice)."""
        return self.crop_size + 2 * int(round(self.crop_size * (self.context - 1.0) / 2.0))


def check_config(cfg: PreprocessConfig, source: str = "PreprocessConfig") -> None:
    """DataError naming the first bad field (for configs built in code, not from_dict)."""
    problems = cfg.problems()
    if problems:
        name, problem = problems[0]
        raise DataError(source, problem, field=name)


def clip_starts(num_frames: int, clip_len: int, stride: int) -> list[int]:
    """Windows [start, start + clip_len) every `stride` frames, plus the last clip_len frames
    (so every frame is in some clip). [] for a track shorter than one clip."""
    if num_frames < clip_len:
        return []
    starts = list(range(0, num_frames - clip_len + 1, stride))
    if starts[-1] + clip_len < num_frames:
        starts.append(num_frames - clip_len)
    return starts


# --------------------------------------------------------------------------------------------
# One sequence (runs in a worker)


@dataclass(frozen=True)
class SequenceTask:
    """The annotated tracks of one sequence (they share its images), in actor order."""

    tracks: list[Any]  # stdformer.data.threedpw.Track
    pkl_path: str  # for error messages
    body_dir: str
    cfg: PreprocessConfig


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


def _encode_stored(crop: np.ndarray, cfg: PreprocessConfig) -> bytes:
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(cfg.jpeg_quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise RuntimeError("JPEG encoding of a crop failed")
    return buf.tobytes()


def _context_scale(cfg: PreprocessConfig) -> float:
    """crop_affine scale of the stored crop: the same image pixels per crop pixel as the
    model's crop, context_size pixels wide."""
    return cfg.crop_scale * cfg.context_size / cfg.crop_size


def stored_crop(image: np.ndarray | bytes | None, center, side: float, cfg: PreprocessConfig
                ) -> bytes:
    """The JPEG a shard stores for one frame: the person crop with context (context_size pixels,
    the same image pixels per crop pixel as the model's crop) of `image` ((H, W, 3) BGR or JPEG
    bytes; None: black). Decoded, its centre crop_size square is the model's input
    (shards.decode_clip); `stdformer predict` cuts its crops with this function too (preprocess
    cuts the same crops in `crop_frames`, several people from one decode)."""
    size = cfg.context_size
    if image is None:
        crop = np.zeros((size, size, 3), dtype=np.uint8)
    else:
        crop, _ = crops.crop_person(image, center, side, size, scale=_context_scale(cfg))
    return _encode_stored(crop, cfg)


def crop_frames(image_paths: list[list], centers: list[np.ndarray], sides: list[np.ndarray],
                cfg: PreprocessConfig) -> tuple[list[list[bytes]], list[np.ndarray],
                                                list[dict[str, np.ndarray]]]:
    """Crop (with context) and JPEG-encode every frame of several tracks. Track k has frames
    image_paths[k] and boxes centers[k] (N_k, 2), sides[k] (N_k,); an image that several tracks
    show is read and decoded once, at the cheapest reduction all their crops allow.

    Returns per track: jpeg bytes per frame, image_ok (N_k,) bool, {reason: (N_k,) bool}. A
    missing/corrupt image raises DataError with on_error='fail'; with 'skip' its crops are black
    and the frames are flagged.
    """
    size, scale = cfg.context_size, _context_scale(cfg)
    blank = np.zeros((size, size, 3), dtype=np.uint8)
    affines = [crops.crop_affine(c, s, scale, size) for c, s in zip(centers, sides, strict=True)]
    jpegs: list[list[bytes]] = [[] for _ in image_paths]
    flags = [{"missing_image": np.zeros(len(p), bool), "corrupt_image": np.zeros(len(p), bool)}
             for p in image_paths]
    for i in range(max(map(len, image_paths), default=0)):
        showing: dict[str, list[int]] = {}  # image -> the tracks it is frame i of
        for k, paths in enumerate(image_paths):
            if i < len(paths):
                showing.setdefault(str(paths[i]), []).append(k)
        for path, ks in showing.items():
            images = [blank] * len(ks)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
                if cfg.on_error == "fail":
                    raise DataError(path, f"image file cannot be read ({type(e).__name__})") \
                        from e
                for k in ks:
                    flags[k]["missing_image"][i] = True
            else:
                try:
                    images = crops.crop_people(data, [affines[k][i] for k in ks], size)
                except crops.UnreadableImageError as e:
                    if cfg.on_error == "fail":
                        raise DataError(path, f"not a readable JPEG (corrupt or truncated): "
                                        f"{e}") from e
                    for k in ks:
                        flags[k]["corrupt_image"][i] = True
            for k, image in zip(ks, images, strict=True):
                jpegs[k].append(_encode_stored(image, cfg))
    image_ok = [~(f["missing_image"] | f["corrupt_image"]) for f in flags]
    return jpegs, image_ok, flags


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


def track_boxes(track, cfg: PreprocessConfig, pkl: str) -> _TrackBoxes:
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
                  "skipped": {r: 0 for r in SKIP_REASONS}}
        results.append(result)
        starts = clip_starts(n, cfg.clip_len, cfg.stride_for(track.split))
        if not starts:
            result["skipped"]["short_track"] = n
            continue
        todo.append((track, result, starts, track_boxes(track, cfg, pkl),
                     body_targets(track, body, pkl)))
    jpegs, image_ok, image_flags = crop_frames(
        [t[0].image_paths for t in todo], [t[3].centers for t in todo],
        [t[3].sides for t in todo], cfg)
    for (track, result, starts, boxes, targets), *images in zip(todo, jpegs, image_ok,
                                                                 image_flags, strict=True):
        _track_clips(track, result, starts, boxes, targets, *images, body.body_model_id, cfg)
    return results


def _track_clips(track, result: dict[str, Any], starts: list[int], boxes: _TrackBoxes,
                 targets: dict[str, np.ndarray], jpegs: list[bytes], image_ok: np.ndarray,
                 image_flags: dict[str, np.ndarray], body_id: str,
                 cfg: PreprocessConfig) -> None:
    """Fill `result` with the track's clips (samples and manifest rows) and skip counts."""
    S = cfg.clip_len
    valid = boxes.campose_valid & boxes.detected & image_ok
    reasons = {"campose_invalid": ~boxes.campose_valid, "few_keypoints": ~boxes.detected,
               **image_flags}
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
    frame_ids = np.asarray(track.img_frame_ids).reshape(-1)
    for start in starts:
        sl = slice(start, start + S)
        key = shards.clip_key(track.sequence, track.actor, start)
        clip_targets = {name: arr[sl] for name, arr in per_frame.items()}
        clip_targets["intrinsics"] = boxes.intrinsics.astype(np.float32)
        meta = {"sequence": track.sequence, "actor": int(track.actor), "split": track.split,
                "source": cfg.source, "clip_start": start,
                "frame_ids": [int(f) for f in frame_ids[sl]], "crop_size": cfg.crop_size,
                "context_size": cfg.context_size, "body_model_id": body_id}
        result["samples"].append(shards.encode_clip(key, jpegs[sl], clip_targets, meta))
        result["rows"].append({"key": key, "split": track.split, "sequence": track.sequence,
                               "actor": int(track.actor), "frame_start": start,
                               "frame_end": start + S, "num_frames": S,
                               "num_valid": int(valid[sl].sum()),
                               "valid": [bool(v) for v in valid[sl]], "source": cfg.source,
                               "crop_size": cfg.crop_size, "context_size": cfg.context_size})


def process_sequence_task(task: SequenceTask) -> list[dict[str, Any]] | dict[str, Any]:
    """Executor entry point: process_sequence, with a DataError sent back as plain data (the
    exception does not survive pickling between processes) and re-raised by the caller."""
    try:
        return process_sequence(task)
    except DataError as e:
        return {"error": {"path": e.path, "problem": e.problem, "field": e.field}}


# --------------------------------------------------------------------------------------------
# Whole dataset


def _collect_tasks(dataset_root: Path, body_dir: Path, cfg: PreprocessConfig
                   ) -> list[SequenceTask]:
    tasks = []
    for split in cfg.splits:
        folder = dataset_root / SEQUENCE_DIR / split
        if split in cfg.optional_splits and not folder.is_dir():
            continue
        # With on_error='fail' the reader stops at the first missing image before any work;
        # with 'skip' missing images become invalid frames.
        tracks = sorted(iter_tracks(dataset_root, split, check_images=cfg.on_error == "fail"),
                        key=lambda t: (t.sequence, t.actor))
        if not tracks and split not in cfg.optional_splits:
            raise DataError(folder, f"split {split!r} has no sequences (*.pkl); list it in "
                            "preprocess.optional_splits if it may be empty", field="splits")
        for _, group in itertools.groupby(tracks, key=lambda t: t.sequence):
            group = list(group)
            tasks.append(SequenceTask(group, str(group[0].pkl_path), str(body_dir), cfg))
    return tasks


def _check_clips(splits: dict[str, dict[str, Any]], dataset_root: Path,
                 cfg: PreprocessConfig) -> None:
    """Every split that is not optional has clips (else training or evaluation would fail
    much later, after the other splits were trained on)."""
    for split, report in splits.items():
        if report["clips"] == 0 and split not in cfg.optional_splits:
            raise DataError(dataset_root / SEQUENCE_DIR / split, f"split {split!r} has no "
                            f"clips: its {report['tracks']} track(s) are shorter than clip_len "
                            f"{cfg.clip_len} frames; list it in preprocess.optional_splits if it "
                            "may be empty", field="splits")


def _add_track(result: dict[str, Any], report: dict[str, Any],
               writer: shards.ShardSeriesWriter, rows: list[dict[str, Any]]) -> None:
    """Write one track's clips and count them in its split's report."""
    report["tracks"] += 1
    report["frames"] += result["frames"]
    for reason, count in result["skipped"].items():
        report["skipped_frames"][reason] += count
    for sample, row in zip(result["samples"], result["rows"], strict=True):
        row["shard"] = f"{result['split']}/{writer.write(sample)}"
        rows.append(row)
    report["clips"] += len(result["rows"])


def _empty_split_report() -> dict[str, Any]:
    return {"tracks": 0, "clips": 0, "frames": 0, "valid_frames": 0, "shards": 0,
            "skipped_frames": {r: 0 for r in SKIP_REASONS}}


def preprocess(dataset_root, body_dir, out_dir, cfg: PreprocessConfig,
               progress: bool = True) -> dict[str, Any]:
    """Write `out_dir/<split>/shard-%06d.tar`, `manifest.parquet` and `report.json`.

    `out_dir` appears complete or not at all. Returns the report plus timing
    (`seconds`, `frames_per_s`, which report.json leaves out to stay deterministic).
    """
    check_config(cfg)
    # Absolute paths: workers (e.g. Dask's) may run in another directory; outputs do not
    # depend on these paths.
    dataset_root, body_dir = Path(dataset_root).resolve(), Path(body_dir).resolve()
    out_dir = Path(out_dir)
    if not dataset_root.is_dir():
        raise DataError(dataset_root, "dataset root not found", field="dataset_root")
    if not body_dir.is_dir():
        raise DataError(body_dir, "body directory not found")
    started = time.perf_counter()
    tasks = _collect_tasks(dataset_root, body_dir, cfg)
    total_frames = sum(len(track.image_paths) for t in tasks for track in t.tracks)
    executor = make_executor(cfg.executor, cfg.workers, cfg.executor_address or None)

    splits = {split: _empty_split_report() for split in cfg.splits}
    rows: list[dict[str, Any]] = []
    bar = _progress_bar(total_frames, progress)
    with atomic_output(out_dir, directory=True) as tmp:
        writers = {split: shards.ShardSeriesWriter(tmp / split, cfg.samples_per_shard)
                   for split in cfg.splits}
        try:
            for results in executor.map_ordered(process_sequence_task, tasks):
                if "error" in results:
                    raise DataError(**results["error"])
                for result in results:
                    _add_track(result, splits[result["split"]], writers[result["split"]], rows)
                    if bar is not None:
                        bar.update(result["frames"])
            for writer in writers.values():
                writer.close()
            _check_clips(splits, dataset_root, cfg)
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
        for split, writer in writers.items():
            splits[split]["shards"] = len(writer.shards)
        manifest.write_manifest(tmp, rows, {f"{split}/{name}": digest
                                            for split, writer in writers.items()
                                            for name, digest in writer.digests.items()})
        columns = ("split", "shard", "sequence", "actor", "frame_start", "valid")
        counts = manifest.split_counts({c: [r[c] for r in rows] for c in columns})
        for split, report in splits.items():  # each frame once (windows overlap)
            report["valid_frames"] = counts.get(split, {}).get("valid_frames", 0)
        # Only settings that shape the output: paths and executor choice do not.
        settings = {k: v for k, v in dataclasses.asdict(cfg).items()
                    if k not in ("dataset_root", "workers", "executor", "executor_address")}
        report = {
            "source": cfg.source, "settings": settings, "splits": splits,
            "totals": {k: sum(s[k] for s in splits.values())
                       for k in ("tracks", "clips", "frames", "valid_frames", "shards")},
        }
        (tmp / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    seconds = time.perf_counter() - started
    fps = total_frames / seconds if seconds > 0 else float("nan")
    if progress:
        print(f"preprocess: {total_frames} frames, {report['totals']['clips']} clips in "
              f"{seconds:.1f} s ({fps:.1f} frames/s) -> {out_dir}", file=sys.stderr)
    return report | {"seconds": seconds, "frames_per_s": fps}


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from stdformer.progress import progress

    return progress(total=total, unit="frame", desc="preprocess")
