"""One dataset (an entry of params' `datasets:`, any layout) -> clip shards (see shards.py for
the contract). The layout's reader gives the tracks (threedpw.py: one per actor of a sequence;
h36m.py: one per run of sampled frames of one camera; mpi_inf_3dhp.py: one per camera of a
recording, joints only); the rest is shared.

Per sequence (in parallel over an executor; results come back in order), for each actor track:
  1. person boxes from the COCO-18 detections (crops.track_boxes), one square crop per frame,
     stored with `context` x its side of real surroundings (the model's crop is the centre);
     each image is read and decoded once for all the people in it, at the reduced JPEG scale
     (1/2, 1/4, 1/8) that still gives every crop full resolution;
  2. targets from the body model (targets.body_targets): SMPL and H36M-17 joints from (pose,
     betas, trans) in the camera frame of cam_poses, root-relative on the SMPL pelvis;
     camera-frame pose (global orientation rotated into the camera), from which the mesh is
     posed where it is used (not stored); H36M-17 joints (Human3.6M: the annotated ones)
     projected with the intrinsics and then the crop affine; a joints-only track
     (MPI-INF-3DHP) has its annotated joints alone, and a mesh flag saying so;
  3. clips of `clip_len` frames at the split's stride, plus the last `clip_len` frames.
The main process writes the shards in (split, sequence, actor, start) order, so two runs give
identical bytes. A frame is valid when its camera pose is valid, more than `min_keypoints`
keypoints are confident, its image is readable (the JPEG decoder reports no corruption) and
the layout has no reason of its own to skip it (Human3.6M: no SMPL fit; MPI-INF-3DHP test:
valid_frame 0). A split without clips
is an error unless the dataset's `optional_splits` lists it.

Modules: `preprocess_config` (the settings, clip windows), `stored_crops` (step 1's crops),
`targets` (step 2), `sequence_clips` (one sequence, steps 1-3, in a worker), and this one (the
whole dataset: tasks, shards, manifest, report).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

from stdformer.data import h36m, manifest, mpi_inf_3dhp, shards
from stdformer.data.datasets import Dataset, ThreeDPWDataset, stride_for
from stdformer.data.executors import make_executor
from stdformer.data.preprocess_config import PreprocessConfig, check_config
from stdformer.data.sequence_clips import SKIP_REASONS, SequenceTask, process_sequence_task
from stdformer.data.threedpw import SEQUENCE_DIR, iter_tracks
from stdformer.io import DataError, atomic_output
from stdformer.progress import progress as progress_bar


def _threedpw_split_tracks(root: Path, dataset: ThreeDPWDataset, split: str,
                           check_images: bool) -> list:
    folder = root / SEQUENCE_DIR / split
    if split in dataset.optional_splits and not folder.is_dir():
        return []
    tracks = list(iter_tracks(root, split, check_images=check_images))
    if not tracks and split not in dataset.optional_splits:
        raise DataError(folder, f"split {split!r} has no sequences (*.pkl); list it in the "
                        "dataset's optional_splits if it may be empty", field="splits")
    return tracks


def _split_tracks(root: Path, dataset: Dataset, split: str, check_images: bool) -> list:
    """The layout's tracks of one split (threedpw.Track's)."""
    if dataset.layout == "h36m":
        return h36m.split_tracks(root, dataset, split, check_images)
    if dataset.layout == "mpi_inf_3dhp":
        return mpi_inf_3dhp.split_tracks(root, dataset, split, check_images)
    return _threedpw_split_tracks(root, dataset, split, check_images)


def _collect_tasks(root: Path, dataset: Dataset, name: str, body_dir: Path,
                   cfg: PreprocessConfig) -> list[SequenceTask]:
    tasks = []
    reasons = _skip_reasons(dataset)
    for split in dataset.splits:
        # With on_error='fail' the reader stops at the first missing image before any work;
        # with 'skip' missing images become invalid frames.
        tracks = sorted(_split_tracks(root, dataset, split, check_images=cfg.on_error == "fail"),
                        key=lambda t: (t.sequence, t.actor))
        stride = stride_for(dataset, split, cfg.clip_len)
        for _, group in itertools.groupby(tracks, key=lambda t: t.sequence):
            group = list(group)
            tasks.append(SequenceTask(group, str(group[0].pkl_path), str(body_dir), cfg, name,
                                      stride, reasons))
    return tasks


LAYOUT_SKIP_REASONS = {"h36m": h36m.SKIP_REASONS, "mpi_inf_3dhp": mpi_inf_3dhp.SKIP_REASONS}


def _skip_reasons(dataset: Dataset) -> tuple[str, ...]:
    return SKIP_REASONS + LAYOUT_SKIP_REASONS.get(dataset.layout, ())


def _check_clips(splits: dict[str, dict[str, Any]], root: Path, dataset: Dataset,
                 cfg: PreprocessConfig) -> None:
    """Every split that is not optional has clips (else training or evaluation would fail
    much later, after the other splits were trained on)."""
    for split, report in splits.items():
        if report["clips"] == 0 and split not in dataset.optional_splits:
            where = {"3dpw": root / SEQUENCE_DIR / split, "h36m": root / h36m.ANNOTATION_DIR
                     }.get(dataset.layout, root)
            raise DataError(where,
                            f"split {split!r} has no clips: its {report['tracks']} "
                            f"track(s) are shorter than clip_len {cfg.clip_len} frames; list it "
                            "in the dataset's optional_splits if it may be empty",
                            field="splits")


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


def _empty_split_report(reasons: tuple[str, ...]) -> dict[str, Any]:
    return {"tracks": 0, "clips": 0, "frames": 0, "valid_frames": 0, "shards": 0,
            "skipped_frames": {r: 0 for r in reasons}}


def preprocess(dataset: Dataset, body_dir, out_dir, cfg: PreprocessConfig,
               progress: bool = True, name: str = "3dpw") -> dict[str, Any]:
    """Write `out_dir/<split>/shard-%06d.tar`, `manifest.parquet` and `report.json` of
    `dataset` (datasets.ThreeDPWDataset, H36MDataset or MPIINF3DHPDataset), the source called
    `name`.

    `out_dir` appears complete or not at all. Returns the report plus timing
    (`seconds`, `frames_per_s`, which report.json leaves out to stay deterministic).
    """
    check_config(cfg)
    check_config(dataset, f"datasets.{name}")
    # Absolute paths: workers (e.g. Dask's) may run in another directory; outputs do not
    # depend on these paths.
    root, body_dir = Path(dataset.root).resolve(), Path(body_dir).resolve()
    out_dir = Path(out_dir)
    if not root.is_dir():
        raise DataError(root, "dataset root not found", field=f"datasets.{name}.root")
    if not body_dir.is_dir():
        raise DataError(body_dir, "body directory not found")
    started = time.perf_counter()
    tasks = _collect_tasks(root, dataset, name, body_dir, cfg)
    total_frames = sum(len(track.image_paths) for t in tasks for track in t.tracks)
    executor = make_executor(cfg.executor, cfg.workers, cfg.executor_address or None)

    splits = {split: _empty_split_report(_skip_reasons(dataset)) for split in dataset.splits}
    rows: list[dict[str, Any]] = []
    bar = _progress_bar(total_frames, progress)
    with atomic_output(out_dir, directory=True) as tmp:
        writers = {split: shards.ShardSeriesWriter(tmp / split, cfg.samples_per_shard)
                   for split in dataset.splits}
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
            _check_clips(splits, root, dataset, cfg)
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
                    if k not in ("workers", "executor", "executor_address")}
        settings |= {k: v for k, v in dataclasses.asdict(dataset).items()
                     if k not in ("layout", "root")}
        report = {
            "source": name, "layout": dataset.layout, "settings": settings, "splits": splits,
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
    return progress_bar(total=total, unit="frame", desc="preprocess")
