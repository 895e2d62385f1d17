"""Preprocessing throughput vs. the floor set by JPEG work alone.

    python benchmarks/preprocess.py            # builds a small synthetic set in a temp dir
    python benchmarks/preprocess.py --root data/raw/synthetic --body data/body --workers 2

Prints frames/s of `preprocess` (boxes, crops, body-model targets, shard writing) and of a pure
JPEG loop over the same frames (cv2.imdecode of the full frame + resize + cv2.imencode at crop
size), and their ratio: how much the rest of the pipeline costs on top of JPEG decode/encode.
Both run with one OpenCV/torch thread per process.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from stdformer.data.preprocess import PreprocessConfig, preprocess
from stdformer.data.threedpw import iter_tracks


def build_dataset(work: Path, sequences: int, frames: int, resolution: int) -> tuple[Path, Path]:
    """A procedural body and a synthetic 3DPW under `work` (reused when already there)."""
    from stdformer.body import BodyModel, write_body_dir
    from stdformer.data.synthetic import SynthesizeConfig, synthesize

    body_dir, root = work / "body", work / "raw"
    if not (body_dir / "meta.json").is_file():
        write_body_dir(body_dir, source="procedural", seed=0, resolution=resolution)
    if not (root / "sequenceFiles").is_dir():
        cfg = SynthesizeConfig(seed=0, train_sequences=sequences, validation_sequences=1,
                               test_sequences=1, min_frames=frames, max_frames=frames)
        synthesize(root, BodyModel.from_dir(body_dir), cfg, progress=False)
    return root, body_dir


def jpeg_floor(paths: list[Path], crop_size: int, quality: int) -> float:
    """frames/s of decode (full frame) + resize + encode at crop size, one process."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    start = time.perf_counter()
    for path in paths:
        image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        small = cv2.resize(image, (crop_size, crop_size), interpolation=cv2.INTER_AREA)
        ok, _ = cv2.imencode(".jpg", small, params)
        assert ok
    return len(paths) / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="3DPW-layout root (default: build a synthetic one)")
    parser.add_argument("--body", help="body directory (needed with --root)")
    parser.add_argument("--work", help="directory for generated data and shards "
                        "(default: a temp dir, removed afterwards)")
    parser.add_argument("--crop-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sequences", type=int, default=4, help="synthetic train sequences")
    parser.add_argument("--frames", type=int, default=48, help="frames per synthetic sequence")
    parser.add_argument("--resolution", type=int, default=6890, help="procedural body vertices")
    args = parser.parse_args(argv)
    if bool(args.root) != bool(args.body):
        parser.error("--root and --body go together")

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work) if args.work else Path(scratch)
        if args.root:
            root, body_dir = Path(args.root), Path(args.body)
        else:
            root, body_dir = build_dataset(work, args.sequences, args.frames, args.resolution)
        cfg = PreprocessConfig(crop_size=args.crop_size, workers=args.workers)
        report = preprocess(root, body_dir, work / "shards", cfg, progress=False)
        paths = [p for split in cfg.splits for track in iter_tracks(root, split)
                 for p in track.image_paths]
        floor = jpeg_floor(paths, args.crop_size, cfg.jpeg_quality)

    result = {
        "frames": report["totals"]["frames"], "clips": report["totals"]["clips"],
        "crop_size": args.crop_size, "workers": args.workers,
        "preprocess_frames_per_s": round(report["frames_per_s"], 1),
        "jpeg_decode_encode_frames_per_s": round(floor, 1),
        "preprocess_over_jpeg_ratio": round(report["frames_per_s"] / floor, 3),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
