"""3DPW-layout dataset -> clip shards (see shards.py for the contract).

Per actor track (in parallel over an executor; results come back in track order):
  1. person boxes from the COCO-18 detections (crops.track_boxes), one square crop per frame,
     stored with `context` x its side of real surroundings (the model's crop is the centre);
  2. targets from the body model (targets.py): world mesh from (pose, betas, trans) -> camera
     frame with cam_poses -> root-relative on the SMPL pelvis; camera-frame pose (global
     orientation rotated into the camera); H36M-17 joints projected with the intrinsics and then
     the crop affine;
  3. clips of `clip_len` frames at the split's stride, plus the last `clip_len` frames.
The main process writes the shards in (split, sequence, actor, start) order, so two runs give
identical bytes. A frame is valid when its camera pose is valid, more than `min_keypoints`
keypoints are confident and its image is readable (the JPEG decoder reports no corruption).
A split without clips is an error unless `optional_splits` lists it.
"""

from __future__ import annotations

import dataclasses
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
from stdformer.data.targets import body_targets, checked_array, project
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
# One track (runs in a worker)


@dataclass(frozen=True)
class TrackTask:
    track: Any  # stdformer.data.threedpw.Track
    pkl_path: str  # for error messages
    body_dir: str
    cfg: PreprocessConfig


_BODIES: dict[tuple[str, str], Any] = {}


def _body(body_dir: str):
    """One BodyModel per process and body (workers handle many tracks); keyed by the
    directory's body_model_id, so a rebuilt directory is loaded afresh."""
    try:
        body_id = json.loads((Path(body_dir) / "meta.json").read_text()).get("body_model_id")
    except (OSError, ValueError):
        body_id = None  # BodyModel.from_dir reports the problem
    key = (str(body_dir), str(body_id))
    if key not in _BODIES:
        from stdformer.body import BodyModel

        _BODIES.clear()
        _BODIES[key] = BodyModel.from_dir(body_dir).eval()
    return _BODIES[key]


def stored_crop(image: np.ndarray | bytes | None, center, side: float, cfg: PreprocessConfig
                ) -> bytes:
    """The JPEG a shard stores for one frame: the person crop with context (context_size pixels,
    the same image pixels per crop pixel as the model's crop) of `image` ((H, W, 3) BGR or JPEG
    bytes; None: black). Decoded, its centre crop_size square is the model's input
    (shards.decode_clip); `stdformer predict` cuts its crops with this function too."""
    size = cfg.context_size
    if image is None:
        crop = np.zeros((size, size, 3), dtype=np.uint8)
    else:
        crop, _ = crops.crop_person(image, center, side, size,
                                    scale=cfg.crop_scale * size / cfg.crop_size)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(cfg.jpeg_quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise RuntimeError("JPEG encoding of a crop failed")
    return buf.tobytes()


def crop_track_frames(image_paths, centers: np.ndarray, sides: np.ndarray,
                      cfg: PreprocessConfig
                      ) -> tuple[list[bytes], np.ndarray, dict[str, np.ndarray]]:
    """Crop (with context) and JPEG-encode every frame. Returns (jpeg bytes per frame, image_ok
    (N,) bool, {reason: (N,) bool}). A missing/corrupt image raises DataError with
    on_error='fail'; with 'skip' its crop is black and the frame is flagged."""
    n = len(image_paths)
    missing = np.zeros(n, dtype=bool)
    corrupt = np.zeros(n, dtype=bool)
    jpegs = []
    for i, path in enumerate(image_paths):
        data = None
        try:
            data = Path(path).read_bytes()
        except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
            if cfg.on_error == "fail":
                raise DataError(path, f"image file cannot be read ({type(e).__name__})") from e
            missing[i] = True
        try:
            jpegs.append(stored_crop(data, centers[i], sides[i], cfg))
        except crops.UnreadableImageError as e:
            if cfg.on_error == "fail":
                raise DataError(path, f"not a readable JPEG (corrupt or truncated): "
                                f"{e}") from e
            corrupt[i] = True
            jpegs.append(stored_crop(None, centers[i], sides[i], cfg))
    return jpegs, ~(missing | corrupt), {"missing_image": missing, "corrupt_image": corrupt}


def process_track(task: TrackTask) -> dict[str, Any]:
    """All clips of one track, encoded as shard samples, with manifest rows and counts."""
    track, cfg, pkl = task.track, task.cfg, task.pkl_path
    body = _body(task.body_dir)
    n = len(track.image_paths)
    S = cfg.clip_len
    result = {"split": track.split, "sequence": track.sequence, "actor": int(track.actor),
              "frames": n, "samples": [], "rows": [],
              "skipped": {r: 0 for r in SKIP_REASONS}}
    starts = clip_starts(n, S, cfg.stride_for(track.split))
    if not starts:
        result["skipped"]["short_track"] = n
        return result

    keypoints = checked_array(track, "poses2d", (n, 18, 3), pkl, f"poses2d[{track.actor}]")
    intrinsics = checked_array(track, "intrinsics", (3, 3), pkl, "cam_intrinsics")
    campose_valid = np.asarray(track.campose_valid, dtype=bool).reshape(-1)
    if campose_valid.shape != (n,):
        raise DataError(pkl, f"expected {n} flags, got {campose_valid.shape}",
                        field=f"campose_valid[{track.actor}]")

    # Boxes and crop affines (N,2,3).
    boxes = crops.track_boxes(keypoints, cfg.keypoint_conf, cfg.min_keypoints,
                              cfg.bbox_extent_scale, cfg.bbox_median_kernel, cfg.bbox_sigma)
    centers, sides = boxes.centers, boxes.sides
    if not boxes.detected.any():  # nobody found: crop around the principal point, all invalid
        centers = np.tile(intrinsics[:2, 2], (n, 1))
        sides = np.full(n, 2 * min(intrinsics[0, 2], intrinsics[1, 2]) / cfg.crop_scale)
    affines = np.stack([crops.crop_affine(c, s, cfg.crop_scale, cfg.crop_size)
                        for c, s in zip(centers, sides, strict=True)])

    targets = body_targets(track, body, pkl)
    jpegs, image_ok, image_flags = crop_track_frames(track.image_paths, centers, sides, cfg)
    valid = campose_valid & boxes.detected & image_ok
    reasons = {"campose_invalid": ~campose_valid, "few_keypoints": ~boxes.detected,
               **image_flags}
    for reason, mask in reasons.items():
        result["skipped"][reason] = int(mask.sum())

    # 2D: H36M joints through the camera then the crop; detections through the crop.
    uv, in_front = project(targets["joints_h36m_cam"], intrinsics)
    joints2d = np.concatenate([crops.apply_affine(uv, affines),
                               (in_front & valid[:, None])[..., None]], axis=-1)
    kp = np.nan_to_num(keypoints)
    keypoints2d = np.concatenate([crops.apply_affine(kp[..., :2], affines), kp[..., 2:]], axis=-1)

    per_frame = {
        "vertices": targets["vertices"], "joints3d": targets["joints3d"],
        "joints_h36m": targets["joints_h36m"], "joints2d": joints2d,
        "keypoints2d": keypoints2d, "pose": targets["pose"], "betas": targets["betas"],
        "valid": valid, "affine": affines.astype(np.float32),
        "root_cam": targets["root_cam"].astype(np.float32),
    }
    frame_ids = np.asarray(track.img_frame_ids).reshape(-1)
    body_id = body.body_model_id
    for start in starts:
        sl = slice(start, start + S)
        key = shards.clip_key(track.sequence, track.actor, start)
        clip_targets = {name: arr[sl] for name, arr in per_frame.items()}
        clip_targets["intrinsics"] = intrinsics.astype(np.float32)
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
    return result


def process_track_task(task: TrackTask) -> dict[str, Any]:
    """Executor entry point: process_track, with a DataError sent back as plain data (the
    exception does not survive pickling between processes) and re-raised by the caller."""
    try:
        return process_track(task)
    except DataError as e:
        return {"error": {"path": e.path, "problem": e.problem, "field": e.field}}


# --------------------------------------------------------------------------------------------
# Whole dataset


def _collect_tasks(dataset_root: Path, body_dir: Path, cfg: PreprocessConfig) -> list[TrackTask]:
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
        tasks += [TrackTask(track, str(track.pkl_path), str(body_dir), cfg) for track in tracks]
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
    total_frames = sum(len(t.track.image_paths) for t in tasks)
    executor = make_executor(cfg.executor, cfg.workers, cfg.executor_address or None)

    splits = {split: _empty_split_report() for split in cfg.splits}
    rows: list[dict[str, Any]] = []
    bar = _progress_bar(total_frames, progress)
    with atomic_output(out_dir, directory=True) as tmp:
        writers = {split: shards.ShardSeriesWriter(tmp / split, cfg.samples_per_shard)
                   for split in cfg.splits}
        try:
            for result in executor.map_ordered(process_track_task, tasks):
                if "error" in result:
                    raise DataError(**result["error"])
                split = result["split"]
                report = splits[split]
                report["tracks"] += 1
                report["frames"] += result["frames"]
                for reason, count in result["skipped"].items():
                    report["skipped_frames"][reason] += count
                for sample, row in zip(result["samples"], result["rows"], strict=True):
                    row["shard"] = f"{split}/{writers[split].write(sample)}"
                    rows.append(row)
                report["clips"] += len(result["rows"])
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
        manifest.write_manifest(tmp, rows)
        counts = manifest.split_counts(manifest.read_manifest(tmp))  # as `shards info` counts
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
