"""Training throughput: the data loader alone, the training step alone, and both together.

    python benchmarks/train.py [--shards data/shards/3dpw --body data/body] [--steps 10]
    python benchmarks/train.py --native      # the machine's own threads and instruction set

By default the numeric environment is pinned as the training stage pins it (train.threads = 2
threads, AVX2 kernels, MKL's compatible branch: stdformer/numerics.py); `--native` leaves torch
its defaults (all cores, the CPU's widest kernels), which shows what the pinning costs.

CPU: the default (`cpu`) model profile, fp32. GPU (when available): the `full` profile
(HRNet-W64 + SD/TD + FastMETRO-L) with bf16 autocast, without and with torch.compile, plus the
parameter count and the achieved TFLOP/s (FLOPs of one training step counted with
torch.utils.flop_counter.FlopCounterMode).

Without --shards/--body (or when they do not exist) a procedural body and a few random-texture
shards of the right crop size are written to a temporary directory, so the benchmark runs on
a fresh checkout.
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

from stdformer import numerics
from stdformer.losses import LossConfig
from stdformer.model.stdformer import ModelConfig, count_parameters
from stdformer.model.assets import load_body_assets
from stdformer.train.config import AugmentConfig
from stdformer.data.shard_index import index_shards
from stdformer.train.data import ARENAS_PER_WORKER, TrainStream, make_loader
from stdformer.train.loop import build_model
from stdformer.train.steps import batch_loss, optimizer_step


def make_random_shards(root: Path, body_dir: Path, crop: int, clip_len: int, clips: int) -> Path:
    """`clips` train clips (and 2 validation) of smooth random images and random targets, in
    the shard contract with its manifest (real JPEG decoding cost, no rendering)."""
    from stdformer.data.manifest import write_manifest
    from stdformer.data.shards import encode_clip, write_shards

    assets = load_body_assets(body_dir)
    rng = np.random.default_rng(0)
    rows = []

    def clip(split: str, i: int) -> dict:
        frames = []
        for _ in range(clip_len):
            small = rng.integers(0, 256, (crop // 8, crop // 8, 3), dtype=np.uint8)
            image = cv2.resize(small, (crop, crop), interpolation=cv2.INTER_CUBIC)
            frames.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1])
        points = lambda n: rng.normal(scale=0.3, size=(clip_len, n, 3))  # noqa: E731
        pixels = lambda n: np.concatenate([rng.uniform(0, crop - 1, (clip_len, n, 2)),  # noqa
                                           np.ones((clip_len, n, 1))], -1)
        targets = {"joints3d": points(24),
                   "joints_h36m": points(17), "joints2d": pixels(17), "keypoints2d": pixels(18),
                   "pose": rng.normal(scale=0.2, size=(clip_len, 72)),
                   "betas": np.zeros((clip_len, 10)), "valid": np.ones(clip_len, bool)}
        key, sequence = f"bench{i:05d}__a0__00000", f"bench{i:05d}"
        common = {"sequence": sequence, "actor": 0, "split": split, "source": "random",
                  "camera": 0, "crop_size": crop, "context_size": crop}
        rows.append({**common, "key": key, "frame_start": 0, "frame_end": clip_len,
                     "num_frames": clip_len, "num_valid": clip_len,
                     "valid": [True] * clip_len})
        return encode_clip(key, frames, targets, {
            **common, "clip_start": 0, "frame_ids": list(range(clip_len)),
            "body_model_id": assets.body_model_id})

    shards = root / "shards"
    for split, count in (("train", clips), ("validation", 2)):
        placed = dict(write_shards(shards / split, (clip(split, i) for i in range(count)), 16))
        for row in rows:
            if row["split"] == split:
                row["shard"] = f"{split}/{placed[row['key']]}"
    write_manifest(shards, rows)
    return shards


def loader_throughput(stream: TrainStream, num_workers: int, batches: int) -> float:
    """Clips/s of the loader alone (decode + augment + collate) once running: after each
    worker has built its first ARENAS_PER_WORKER batches (the arenas it then reuses)."""
    it = iter(make_loader(stream, num_workers, seed=0))
    for _ in range(ARENAS_PER_WORKER * max(num_workers, 1)):
        next(it)
    start = time.perf_counter()
    clips = sum(len(next(it)["key"]) for _ in range(batches))
    return clips / (time.perf_counter() - start)


def train_step_fn(model, assets, device, autocast_dtype, compile_model: bool,
                  compile_backend: str = "inductor"):
    """One optimizer step on a batch, as the training loop does it; returns the loss."""
    loss_cfg, mesh_info = LossConfig(), assets.mesh_info
    parameters = list(model.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1e-5, weight_decay=1e-4)
    forward = torch.compile(model, backend=compile_backend) if compile_model else model

    def step(batch):
        loss, _ = batch_loss(forward, batch, assets, mesh_info, loss_cfg, device, autocast_dtype)
        optimizer_step(loss, parameters, optimizer, None, grad_clip=0.3)
        return loss

    return step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_steps(step, batch, device, steps: int, warmup: int) -> dict:
    """The training step alone on one cached batch: clips/s over `steps` timed steps after
    `warmup` (the first one includes torch.compile's compilation: `first_step_s`), and the
    peak GPU memory of the whole run (None on the CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    step(batch)
    _sync(device)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        step(batch)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"clips_per_s": steps * len(batch["key"]) / seconds, "step_s": seconds / steps,
            "first_step_s": first,
            "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30
            if device.type == "cuda" else None}


def end_to_end_throughput(step, stream, num_workers, device, steps: int) -> float:
    it = iter(make_loader(stream, num_workers, seed=0, pin_memory=device.type == "cuda"))
    step(next(it))
    _sync(device)
    start = time.perf_counter()
    clips = 0
    for _ in range(steps):
        batch = next(it)
        step(batch)
        clips += len(batch["key"])
    _sync(device)
    return clips / (time.perf_counter() - start)


def step_flops(step, batch) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(batch)
    return counter.get_total_flops()


def run_profile(name: str, model_cfg: ModelConfig, args, device, autocast_dtype, body: Path,
                shards: Path, compile_options: list[bool]) -> dict:
    torch.manual_seed(0)
    assets = load_body_assets(body)
    model = build_model(model_cfg, assets).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    index = index_shards(shards, "train")
    stream = TrainStream(index, seed=0, batch_size=args.batch_size, rank=0, world_size=1,
                         shuffle_window=16, augment=AugmentConfig(), perms=assets.perms)
    result = {"profile": name, "dropout": model_cfg.dropout, "device": str(device),
              "batch_clips": args.batch_size,
              "clip_len": model_cfg.clip_len, "parameters": count_parameters(model),
              "precision": "bf16 autocast" if autocast_dtype else "fp32",
              "loader_workers": args.workers,
              "loader_clips_per_s": loader_throughput(stream, args.workers, args.loader_batches)}
    device_assets = assets.to(device)
    batch = next(iter(make_loader(stream, 0, seed=0)))
    flops = None
    for compiled in compile_options:
        tag = "compiled" if compiled else "eager"
        step = train_step_fn(model, device_assets, device, autocast_dtype, compiled)
        rate = measure_steps(step, batch, device, args.steps,
                             warmup=3 if compiled else 1)["clips_per_s"]
        result[f"{tag}_step_clips_per_s"] = rate
        result[f"{tag}_end_to_end_clips_per_s"] = end_to_end_throughput(
            step, stream, args.workers, device, args.steps)
        if device.type == "cuda":
            if flops is None:  # counted once, eagerly: the compiled step does the same math
                flops = step_flops(train_step_fn(model, device_assets, device, autocast_dtype,
                                                 False), batch)
                result["tflop_per_step"] = flops / 1e12
            result[f"{tag}_tflops_per_s"] = flops * rate / len(batch["key"]) / 1e12
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="data/shards/3dpw")
    parser.add_argument("--body", default="data/body")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--loader-batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="clips per step (default 4 on CPU, 16 on GPU)")
    parser.add_argument("--workers", type=int, default=None,
                        help="loader workers (default 1 on CPU, 8 on GPU)")
    parser.add_argument("--threads", type=int, default=2, help="pinned CPU threads (train.threads)")
    parser.add_argument("--native", action="store_true",
                        help="do not pin threads and instruction sets (see the docstring)")
    parser.add_argument("--dropout", type=float, default=None,
                        help="override the profile's transformer dropout (CPU: attention "
                        "dropout costs more than half of a step)")
    args = parser.parse_args()

    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    numeric_env = numerics.in_effect() if args.native else numerics.apply(args.threads,
                                                                          device.type)
    args.batch_size = args.batch_size or (16 if gpu else 4)
    args.workers = args.workers if args.workers is not None else (8 if gpu else 1)
    model_cfg = ModelConfig.full() if gpu else ModelConfig.cpu()
    if args.dropout is not None:
        model_cfg.dropout = args.dropout
    crop = 224 if gpu else 64
    body, shards = Path(args.body), Path(args.shards)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        if not (body / "meta.json").is_file():
            from stdformer.body.files import write_body_dir

            body = Path(tmp) / "body"
            write_body_dir(body)
        if not (shards / "train").is_dir() or gpu:  # the GPU profile needs 224 px crops
            shards = make_random_shards(Path(tmp), body, crop, model_cfg.clip_len,
                                        clips=max(64, 4 * args.batch_size))
        print(f"benchmark: {'GPU ' + torch.cuda.get_device_name() if gpu else 'CPU'}, "
              f"{torch.get_num_threads()} threads, shards {shards}", file=sys.stderr)
        result = run_profile("full" if gpu else "cpu", model_cfg, args, device,
                             torch.bfloat16 if gpu else None, body, shards,
                             [False, True] if gpu else [False])
    result["numerics"] = numeric_env
    for key, value in result.items():
        print(f"{key:>28}: {value:,.2f}" if isinstance(value, float) else f"{key:>28}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
