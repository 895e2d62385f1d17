"""Training loader throughput against pure JPEG decoding of the same members, in one run.

    python benchmarks/loader.py                        # 224 px crops, 8-frame clips, 1 and 2 workers
    python benchmarks/loader.py --shards data/shards/3dpw --body data/body --workers 1 2 4
    python benchmarks/loader.py --workers 0           # the loader in this process

Shards: the `default` set of benchmarks/preprocess.py (params.yaml's synthesize section)
preprocessed at 224 px crops (280 px stored with context; ~520 train clips), cached under
benchmarks/.cache/; or `--shards` (a preprocess output).

For W workers, a round measures
* the loader: clips/s of `make_loader(TrainStream(...), W)` as `train` runs it (tar members
  read, frames decoded and cut to the crop, targets parsed, batches collated and handed to the
  main process), once running: after each worker's first ARENAS_PER_WORKER batches (the
  arenas it then reuses; stdformer.train.buffers);
* the bound: W processes that do nothing but decode the same clips' JPEG members (already in
  memory; libjpeg-turbo through simplejpeg, to RGB), their rates summed.
Ratio = loader / bound, so it is per worker. Both run one OpenCV/torch thread per process.
With 0 workers the loader builds its batches in this process (no shared-memory hand-over) and
the bound is one process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tarfile
import time
from pathlib import Path

import cv2
import simplejpeg
import torch

from stdformer.model.assets import load_body_assets
from stdformer.train.config import AugmentConfig
from stdformer.data.shard_index import index_shards
from stdformer.train.data import TrainStream, make_loader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preprocess import CACHE, cached_dataset, cases, code_digest  # noqa: E402
from train import loader_throughput  # noqa: E402

CROP = 224


def cached_shards() -> tuple[Path, Path]:
    """The `default` benchmark set preprocessed at 224 px crops (once), and its body."""
    from stdformer.data.datasets import ThreeDPWDataset
    from stdformer.data.preprocess import preprocess
    from stdformer.data.preprocess_config import PreprocessConfig

    root, body_dir = cached_dataset(cases()["default"][0])
    out = CACHE / f"shards-{CROP}-{root.name}-{body_dir.name}-{code_digest('data')}"
    if not (out / "manifest.parquet").is_file():
        print(f"preprocessing {root} at {CROP} px into {out} (once)...", file=sys.stderr)
        preprocess(ThreeDPWDataset(root=str(root)), body_dir, out,
                   PreprocessConfig(crop_size=CROP, workers=1, samples_per_shard=16),
                   progress=False)
    return out, body_dir


def jpeg_members(shards: list[str]) -> list[list[bytes]]:
    """The frame JPEGs of every clip of `shards`, as bytes, in tar order."""
    clips: dict[str, list[bytes]] = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".jpg"):
                    key = member.name.split(".", 1)[0]
                    clips.setdefault(key, []).append(tar.extractfile(member).read())
    return list(clips.values())


def _decode_rate(args: tuple[list[list[bytes]], float]) -> float:
    """clips/s of decoding `clips` over and over for `seconds` in this process."""
    clips, seconds = args
    cv2.setNumThreads(1)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for frames in clips:
            for data in frames:
                simplejpeg.decode_jpeg(data, colorspace="RGB")
            done += 1
    return done / (time.perf_counter() - start)


def bound_rate(clips: list[list[bytes]], workers: int, seconds: float) -> float:
    """Summed clips/s of `workers` processes decoding disjoint shares of the clips at once."""
    shares = [(clips[w::workers], seconds) for w in range(workers)]
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        return sum(pool.map(_decode_rate, shares))


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", help="a preprocess output (default: the cached set)")
    parser.add_argument("--body", default="data/body", help="its body directory (with --shards)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per round")
    parser.add_argument("--rounds", type=int, default=3, help="loader + bound, alternated")
    parser.add_argument("--augment", action="store_true",
                        help="the published augmentation (default: off, as params.yaml)")
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    shards, body_dir = (Path(args.shards), Path(args.body)) if args.shards else cached_shards()
    index = index_shards(shards, "train")
    clips = jpeg_members(list(index.shards))
    perms = load_body_assets(body_dir).perms
    results = []
    for workers in args.workers:
        stream = TrainStream(index, seed=0, batch_size=args.batch_size, rank=0, world_size=1,
                             shuffle_window=1024, augment=AugmentConfig(enabled=args.augment),
                             perms=perms)
        rates, bounds = [], []
        for _ in range(args.rounds):
            rates.append(loader_throughput(stream, workers, args.batches))
            processes = max(workers, 1)
            seconds = args.batches * args.batch_size / rates[-1] / processes
            bounds.append(bound_rate(clips, processes, seconds))
        ratios = [r / b for r, b in zip(rates, bounds)]
        results.append({"workers": workers, "crop_size": CROP, "clip_len": len(clips[0]),
                        "batch_size": args.batch_size, "augment": args.augment,
                        "loader_clips_per_s": [round(r, 1) for r in rates],
                        "bound_clips_per_s": [round(b, 1) for b in bounds],
                        "ratio": [round(x, 3) for x in ratios],
                        "ratio_median": round(statistics.median(ratios), 3)})
    print(f"{'workers':>7} {'loader clips/s':>15} {'decode clips/s':>15} {'ratio':>6}  "
          "ratio per round")
    for r in results:
        print(f"{r['workers']:>7} {statistics.median(r['loader_clips_per_s']):>15.1f} "
              f"{statistics.median(r['bound_clips_per_s']):>15.1f} {r['ratio_median']:>6.2f}  "
              f"{', '.join(f'{x:.2f}' for x in r['ratio'])}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
