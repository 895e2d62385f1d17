"""What pinning the numeric environment costs (stdformer/numerics.py): one CPU training step of
the default profile under each setting alone and all together, each in a fresh process (the ISA
variables are read once per process).

    python benchmarks/numerics.py [--body data/body] [--rounds 3] [--threads 2]

Prints, per setting, the fastest step over `rounds` processes x `steps` steps (the fastest is
the least disturbed by other load on the machine), in wall seconds with `--threads` threads and
in CPU seconds with one thread, and the ratio to the unpinned step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "native (torch defaults)": {},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ONEDNN_MAX_CPU_ISA=AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "deterministic algorithms": {"DETERMINISTIC": "1"},
    "all (the training stage)": "pinned",
}


def child(body: Path, threads: int, steps: int) -> None:
    """In a fresh process: time `steps` training steps; print the fastest (wall, CPU) as JSON."""
    import torch

    from stdformer.model.stdformer import ModelConfig
    from stdformer.model.assets import load_body_assets
    from stdformer.train.config import AugmentConfig
    from stdformer.data.shard_index import index_shards
    from stdformer.train.data import TrainStream, make_loader
    from stdformer.train.loop import build_model
    from train import make_random_shards, train_step_fn

    torch.set_num_threads(threads)
    if os.environ.get("DETERMINISTIC"):
        torch.use_deterministic_algorithms(True)
    with tempfile.TemporaryDirectory(prefix="bench-numerics-") as tmp:
        shards = make_random_shards(Path(tmp), body, 64, 8, clips=8)
        assets = load_body_assets(body)
        torch.manual_seed(0)
        model = build_model(ModelConfig.cpu(), assets)
        stream = TrainStream(index_shards(shards, "train"), seed=0, batch_size=4, rank=0,
                             world_size=1, shuffle_window=4, augment=AugmentConfig(enabled=False),
                             perms=assets.perms)
        batch = next(iter(make_loader(stream, 0, seed=0)))
        step = train_step_fn(model, assets, torch.device("cpu"), None, False)
        step(batch)
        wall, cpu = [], []
        for _ in range(steps):
            w, c = time.perf_counter(), time.process_time()
            step(batch)
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
    print(json.dumps({"wall": min(wall), "cpu": min(cpu),
                      "aten": torch.backends.cpu.get_cpu_capability()}))


def run_variant(env_update: dict | str, body: Path, threads: int, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")}
    if env_update == "pinned":
        from stdformer.numerics import PINNED_ENV

        env_update = {**PINNED_ENV, "DETERMINISTIC": "1"}
    env.update(env_update)
    done = subprocess.run([sys.executable, __file__, "--child", "--body", str(body),
                           "--threads", str(threads), "--steps", str(steps)],
                          env={**env, "OMP_NUM_THREADS": str(threads)},
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--body", default="data/body")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    body = Path(args.body)
    if args.child:
        child(body, args.threads, args.steps)
        return
    with tempfile.TemporaryDirectory(prefix="bench-numerics-body-") as tmp:
        if not (body / "meta.json").is_file():
            from stdformer.body.files import write_body_dir

            body = Path(tmp) / "body"
            write_body_dir(body)
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):          # interleaved, so slow periods hit every variant
            for name, env_update in VARIANTS.items():
                for threads, key in ((args.threads, "wall"), (1, "cpu")):
                    got = run_variant(env_update, body, threads, args.steps)[key]
                    mine = best.setdefault(name, {})
                    mine[key] = min(mine.get(key, float("inf")), got)
    base = best["native (torch defaults)"]
    print(f"{'setting':<28} {f'wall s ({args.threads} thr)':>16} {'ratio':>6} "
          f"{'CPU s (1 thr)':>14} {'ratio':>6}")
    for name, b in best.items():
        print(f"{name:<28} {b['wall']:>16.3f} {b['wall'] / base['wall']:>6.2f} "
              f"{b['cpu']:>14.3f} {b['cpu'] / base['cpu']:>6.2f}")
    print(json.dumps(best))


if __name__ == "__main__":
    main()
