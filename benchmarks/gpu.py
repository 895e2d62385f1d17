"""The GPU check: one command that measures the full profile on a GPU in at most 8 minutes
(H100/H200) and writes one JSON of figures.

    python benchmarks/gpu.py                 # on a GPU machine (bash benchmarks/gpu.sh)
    python benchmarks/gpu.py --smoke         # tiny sizes on the CPU: proves the script works

1. Training steps of the `full` profile (HRNet-W64 + SD/TD + FastMETRO-L) and of the `resnet50`
   profile, batch 16 clips x 8 frames x 224 px, bf16 autocast, channels-last, eager and with
   torch.compile: clips/s, achieved TFLOP/s (the FLOPs of one step counted with
   torch.utils.flop_counter.FlopCounterMode), MFU against the device's dense bf16 peak
   (`PEAK_BF16_TFLOPS`), peak memory, compile time; the loader's clips/s beside them.
2. A 30-step `dvc repro train` (full profile, 224 px synthetic shards, on the GPU) and
   `evaluate` on it, in a temporary copy of the project with overridden params.

The JSON goes to $OUT/gpu.json when OUT is set, else benchmarks/results/gpu-<device>.json, and
is rewritten after every part, so a run cut short keeps what it measured. Every part has a time
budget (`--budget-s`, default 7 min): a part that would not fit is recorded as skipped.
GPU kernels are not pinned for bit-identity (docs/reproducibility.md); this check measures speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from stdformer import numerics
from stdformer.model.stdformer import ModelConfig, count_parameters
from stdformer.model.assets import load_body_assets
from stdformer.train.config import AugmentConfig
from stdformer.data.shard_index import index_shards
from stdformer.train.data import TrainStream, make_loader
from stdformer.train.loop import build_model

# benchmarks/ siblings (the script's directory is on sys.path)
from project_copy import copy_project, project_env  # noqa: E402
from train import (loader_throughput, make_random_shards, measure_steps,  # noqa: E402
                   step_flops, train_step_fn)

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s, by the words
# of torch.cuda.get_device_name() ("NVIDIA H100 80GB HBM3" is the SXM part); longest match wins.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
                    "H200": 989.0, "H200 NVL": 835.0, "A100": 312.0}

# Seconds a part needs at least (full profile, H100-class): skipped when less is left.
NEEDS_S = {"eager": 40, "compiled": 150, "pipeline": 150}


def peak_bf16_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a device by its name (None when not in the table)."""
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if all(part.lower() in device_name.lower() for part in key.split()):
            return PEAK_BF16_TFLOPS[key]
    return None


class Report:
    """The JSON of figures, rewritten after every part; and the time budget."""

    def __init__(self, path: Path, budget_s: float):
        self.path, self.budget_s, self.start = path, budget_s, time.monotonic()
        self.data: dict = {}

    def left_s(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def fits(self, part: str, smoke: bool) -> bool:
        return smoke or self.left_s() >= NEEDS_S[part]

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - self.start, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")


def say(message: str) -> None:
    print(f"gpu check: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# 1. Training steps of one profile


def profile_config(name: str, smoke: bool) -> ModelConfig:
    if smoke:   # a few channels: seconds on a CPU, the same code paths
        return dataclasses.replace(ModelConfig.cpu(), backbone_width=8, widths=[32],
                                   ffn_dims=[32], heads=2)
    return ModelConfig.profile(name)


def bench_profile(name: str, args, report: Report, device: torch.device, body: Path,
                  shards: Path, peak: float | None) -> None:
    figures = report.data.setdefault("profiles", {}).setdefault(name, {})
    torch.manual_seed(0)
    model_cfg = profile_config(name, args.smoke)
    assets = load_body_assets(body)
    model = build_model(model_cfg, assets).to(device, memory_format=torch.channels_last)
    stream = TrainStream(index_shards(shards, "train"), seed=0, batch_size=args.batch_size,
                         rank=0, world_size=1, shuffle_window=16,
                         augment=AugmentConfig(enabled=False), perms=assets.perms)
    batch = next(iter(make_loader(stream, 0, seed=0)))
    device_assets = assets.to(device)
    dtype = torch.bfloat16 if device.type == "cuda" else None    # CPU bf16 is slow, not tested
    figures.update({
        "parameters": count_parameters(model), "batch_clips": args.batch_size,
        "clip_len": model_cfg.clip_len, "crop": int(batch["frames"].shape[-1]),
        "precision": "bf16 autocast" if dtype else "fp32", "channels_last": True,
        "loader_workers": args.workers,
        "loader_clips_per_s": loader_throughput(stream, args.workers, args.loader_batches)})
    flops = step_flops(train_step_fn(model, device_assets, device, dtype, False), batch)
    figures["tflop_per_step"] = flops / 1e12
    report.save()
    for mode in args.modes:
        if not report.fits(mode, args.smoke):
            figures[mode] = {"skipped": f"{report.left_s():.0f} s left of the budget"}
            continue
        say(f"{name} {mode}: {args.steps} steps of {args.batch_size} clips")
        step = train_step_fn(model, device_assets, device, dtype, mode == "compiled",
                             compile_backend="eager" if args.smoke else "inductor")
        try:
            measured = measure_steps(step, batch, device, args.steps,
                                     warmup=3 if mode == "compiled" else 1)
        except Exception as e:   # an OOM or a compile failure is a finding, not a crash
            figures[mode] = {"error": f"{type(e).__name__}: {e}"[:2000]}
            report.save()
            continue
        finally:
            del step
            if device.type == "cuda":
                torch.cuda.empty_cache()
        tflops = flops * measured["clips_per_s"] / args.batch_size / 1e12
        measured["tflops_per_s"] = tflops
        measured["mfu"] = tflops / peak if peak else None
        figures[mode] = measured
        report.save()


# --------------------------------------------------------------------------------------------
# 2. `dvc repro train` + `evaluate` in a copy of the project


def pipeline_params(smoke: bool, batch_size: int, workers: int) -> dict:
    """Params overrides: 224 px synthetic shards, a 30-step full-profile run on the GPU."""
    if smoke:
        return {
            "body": {"resolution": 800},
            "synthesize": {"train_sequences": 2, "validation_sequences": 1,
                           "test_sequences": 1, "min_frames": 12, "max_frames": 12,
                           "width": 128, "height": 96},
            "synthesize_h36m": {"subjects": [1, 8, 9], "actions": ["Directions"],
                                "subactions": 1, "frames": 40, "size": 64, "unfitted_runs": 0},
            "datasets": {"h36m": {"subjects": {"train": [1], "validation": [8], "test": [9]}}},
            "preprocess": {"crop_size": 32, "samples_per_shard": 4, "workers": 1},
            "model": {"profile": "cpu", "backbone_width": 8, "widths": [32, 16],
                      "ffn_dims": [32, 16], "heads": 2},
            "train": {"steps": 2, "batch_size": 2, "checkpoint_every": 2, "val_every": 0,
                      "num_workers": 0, "log_every": 1},
            "evaluate": {"overlays": 1, "overlay_size": 64, "batch_size": 4},
        }
    return {
        "synthesize": {"train_sequences": 24, "validation_sequences": 2, "test_sequences": 2},
        "preprocess": {"crop_size": 224, "samples_per_shard": 64, "workers": workers},
        "model": {"profile": "full"},
        "train": {"steps": 30, "batch_size": batch_size, "warmup_steps": 5,
                  "joint_warmup_steps": 0, "checkpoint_every": 30, "val_every": 0,
                  "log_every": 5, "num_workers": workers, "device": "cuda",
                  "precision": "bf16"},
        "evaluate": {"overlays": 2, "batch_size": batch_size, "num_workers": 4,
                     "device": "cuda"},
    }


def run_pipeline(args, report: Report, work: Path) -> None:
    figures = report.data.setdefault("pipeline", {})
    if not report.fits("pipeline", args.smoke):
        figures["skipped"] = f"{report.left_s():.0f} s left of the budget"
        return
    project = copy_project(work / "project", pipeline_params(args.smoke, args.batch_size,
                                                               args.workers))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["variants"] = {"stdformer": {}}           # one variant: the registered model
    params["evaluate"]["models"] = {"stdformer": "models/stdformer.pt"}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**project_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    for target in ("train", "evaluate"):
        say(f"dvc repro {target} in {project}")
        start = time.monotonic()
        done = subprocess.run(["dvc", "repro", target], cwd=project, env=env,
                              capture_output=True, text=True,
                              timeout=max(60.0, report.left_s()) if not args.smoke else None)
        log = done.stdout + done.stderr
        (work / f"dvc-repro-{target}.log").write_text(log)
        figures[f"repro_{target}_s"] = round(time.monotonic() - start, 1)
        figures[f"repro_{target}_returncode"] = done.returncode
        if done.returncode != 0:
            figures[f"repro_{target}_log_tail"] = log[-4000:]
            report.save()
            return
        report.save()
    train_log = (work / "dvc-repro-train.log").read_text()
    device_line = re.search(r"rank\(s\) on (\S+),", train_log)
    figures["train_device"] = device_line.group(1) if device_line else None
    rate = re.search(r"train: done, \d+ steps in ([\d.]+) s", train_log)
    figures["train_loop_s"] = float(rate.group(1)) if rate else None
    figures["train_metrics"] = json.loads(
        (project / "metrics" / "train" / "stdformer.json").read_text())
    figures["eval_by_dataset"] = json.loads(
        (project / "metrics" / "eval.json").read_text())["datasets"]
    report.save()


# --------------------------------------------------------------------------------------------


def output_path(device_name: str) -> Path:
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu.json"
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")
    return Path(__file__).resolve().parent / "results" / f"gpu-{slug}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes on whatever device there is (CPU): a check of the "
                        "script, not a measurement")
    parser.add_argument("--profiles", nargs="*", default=["full", "resnet50"],
                        help="model profiles to time (none: only the pipeline)")
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled"],
                        choices=["eager", "compiled"])
    parser.add_argument("--steps", type=int, default=None, help="timed steps (10; smoke 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="clips (16; smoke 2)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (8; smoke 0)")
    parser.add_argument("--loader-batches", type=int, default=None)
    parser.add_argument("--budget-s", type=float, default=420.0,
                        help="seconds for everything: a part that would not fit in what is left "
                        "is skipped (a part that has started is not interrupted)")
    parser.add_argument("--no-pipeline", action="store_true", help="skip the dvc repro part")
    args = parser.parse_args()
    smoke = args.smoke
    args.steps = args.steps or (1 if smoke else 10)
    args.batch_size = args.batch_size or (2 if smoke else 16)
    args.workers = args.workers if args.workers is not None else (0 if smoke else 8)
    args.loader_batches = args.loader_batches or (1 if smoke else 20)

    gpu = torch.cuda.is_available()
    if not gpu and not smoke:
        parser.error("no CUDA device: run on a GPU machine, or pass --smoke")
    device = torch.device("cuda" if gpu else "cpu")
    numerics.apply(2, device.type)     # the main process's CPU side as in training
    name = torch.cuda.get_device_name(device) if gpu else "cpu"
    peak = peak_bf16_tflops(name) if gpu else None
    report = Report(output_path(name), args.budget_s)
    report.data.update({
        "device": name, "smoke": smoke, "torch": str(torch.__version__),
        "cuda": torch.version.cuda, "peak_bf16_tflops": peak,
        "memory_gb": (torch.cuda.get_device_properties(device).total_memory / 2**30
                      if gpu else None)})
    say(f"{name}; figures -> {report.path}")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        from stdformer.body.files import write_body_dir

        body = work / "body"
        write_body_dir(body, resolution=500 if smoke else 6890)
        shards = make_random_shards(work, body, 32 if smoke else 224, 8,
                                    clips=max(8, 4 * args.batch_size))
        for profile in args.profiles:
            bench_profile(profile, args, report, device, body, shards, peak)
        if not args.no_pipeline:
            run_pipeline(args, report, work)
    report.save()
    say(f"done in {report.data['elapsed_s']} s -> {report.path}")
    print(json.dumps(report.data, indent=2, default=str))


if __name__ == "__main__":
    main()
