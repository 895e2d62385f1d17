"""Preprocessing throughput against its bound, measured in the same run.

    python benchmarks/preprocess.py                   # both cases below, 3 rounds each
    python benchmarks/preprocess.py --case 3dpw --rounds 5
    python benchmarks/preprocess.py --root data/raw/synthetic --body data/body --crop-size 64

Cases (the synthetic sets are built once and cached under benchmarks/.cache/; the first run
spends about 10 minutes there, most of it rendering the 1080p frames):

* `3dpw`: 6 sequences of 120 frames at 3DPW's resolution (synthesize.width/height 1920x1080),
  224 px crops. (3DPW's own sequences run 300-1800 frames; at 45 frames the one-off body
  load was 8% of a run, at 120 it is 3%.)
  Bound: decoding the same frames at full resolution (libjpeg-turbo, as preprocess decodes).
* `default`: the default pipeline: params.yaml's synthesize section as it stands (320x240
  frames), 64 px crops. Bound: decode + area-resize + encode the same frames at the stored
  crop size (the JPEG work alone).

Each round runs `preprocess` in this process (`workers: 1`: loading the body model, boxes,
crops, body-model targets, tar and manifest writing) and then the bound loop over the same
frames. Frames are person-frames, as report.json counts them: an image with two annotated
people is two frames, and the bound decodes it twice (preprocess decodes it once). Rates are
wall-clock; the ratio is of CPU seconds (this process's user + system time), which other
load on a shared machine barely moves; on an idle machine both agree. OpenCV and torch run
one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from stdformer.data import sequence_clips
from stdformer.data.crops import decode_jpeg
from stdformer.data.datasets import ThreeDPWDataset
from stdformer.data.preprocess import preprocess
from stdformer.data.preprocess_config import PreprocessConfig
from stdformer.data.synthetic_config import SynthesizeConfig
from stdformer.data.threedpw import iter_tracks

CACHE = Path(__file__).resolve().parent / ".cache"

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def cases() -> dict[str, tuple[dict, int, str]]:
    """name -> (SynthesizeConfig overrides, crop size, bound)."""
    import yaml

    default = yaml.safe_load(PARAMS.read_text())["synthesize"]
    return {
        "3dpw": ({**default, "width": 1920, "height": 1080, "train_sequences": 4,
                  "validation_sequences": 1, "test_sequences": 1, "min_frames": 120,
                  "max_frames": 120}, 224, "decode"),
        "default": (default, 64, "decode+encode"),
    }


def code_digest(package: str) -> str:
    """12 hex digits of sha256 over stdformer/<package>/*.py: cached outputs of that code are
    rebuilt when it changes."""
    files = sorted((Path(__file__).resolve().parents[1] / "stdformer" / package).glob("*.py"))
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:12]


def cached_dataset(overrides: dict, resolution: int = 6890) -> tuple[Path, Path]:
    """A procedural body and a synthetic 3DPW for `overrides` of SynthesizeConfig, built once
    under benchmarks/.cache/: the body keyed by the body code, the data set by its config and
    the body's id (each written atomically)."""
    from stdformer.body import BodyModel, write_body_dir
    from stdformer.data.synthetic import synthesize

    body_dir = CACHE / f"body-{resolution}-{code_digest('body')}"
    if not (body_dir / "meta.json").is_file():
        write_body_dir(body_dir, source="procedural", seed=0, resolution=resolution)
    cfg = SynthesizeConfig(**overrides)
    body_id = json.loads((body_dir / "meta.json").read_text())["body_model_id"]
    tag = hashlib.sha256(json.dumps([dataclasses.asdict(cfg), body_id],
                                    sort_keys=True).encode()).hexdigest()[:12]
    root = CACHE / f"synth-{cfg.width}x{cfg.height}-{tag}"
    if not (root / "sequenceFiles").is_dir():
        print(f"building {root} (once)...", file=sys.stderr)
        synthesize(root, BodyModel.from_dir(body_dir), cfg, progress=False)
    return root, body_dir


def bound_seconds(paths: list[Path], kind: str, size: int, quality: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the JPEG work alone on `paths`: full-resolution decode, and for
    'decode+encode' an area resize to size x size and an encode at `quality`."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    wall, cpu = time.perf_counter(), time.process_time()
    for path in paths:
        image = decode_jpeg(path.read_bytes())
        if kind == "decode+encode":
            small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
            ok, _ = cv2.imencode(".jpg", small, params)
            assert ok
    return time.perf_counter() - wall, time.process_time() - cpu


def run_case(name: str, root: Path, body_dir: Path, crop_size: int, bound: str, rounds: int,
             workdir: Path) -> dict:
    cfg = PreprocessConfig(crop_size=crop_size, workers=1)
    dataset = ThreeDPWDataset(root=str(root))
    paths = [p for split in dataset.splits for track in iter_tracks(root, split)
             for p in track.image_paths]
    rates, bounds, ratios, steady = [], [], [], []
    for i in range(rounds):
        # The body model is loaded first, on its own clock, then preprocess finds it loaded:
        # the sum is a whole run, the remainder what a long run (real 3DPW) is made of.
        sequence_clips._BODIES.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        sequence_clips._body(str(body_dir.resolve()))
        load_wall, load_cpu = time.perf_counter() - wall, time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        report = preprocess(dataset, body_dir, workdir / f"{name}-{i}", cfg, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert report["totals"]["frames"] == len(paths)
        bound_wall, bound_cpu = bound_seconds(paths, bound, cfg.context_size, cfg.jpeg_quality)
        rates.append(len(paths) / (load_wall + wall))
        bounds.append(len(paths) / bound_wall)
        ratios.append(bound_cpu / (load_cpu + cpu))
        steady.append(bound_cpu / cpu)
    return {"case": name, "frame_size": list(decode_jpeg(paths[0].read_bytes()).shape[1::-1]),
            "crop_size": crop_size, "frames": len(paths), "images": len(set(paths)),
            "bound": bound, "preprocess_frames_per_s": [round(r, 1) for r in rates],
            "bound_frames_per_s": [round(b, 1) for b in bounds],
            "ratio_cpu": [round(r, 3) for r in ratios],
            "ratio_cpu_median": round(statistics.median(ratios), 3),
            "ratio_cpu_body_loaded_median": round(statistics.median(steady), 3),
            "ratio_wall_median": round(statistics.median(r / b for r, b in zip(rates, bounds)),
                                       3)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["3dpw", "default", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3, help="preprocess + bound, alternated")
    parser.add_argument("--root", help="your own 3DPW-layout root instead of a case's set")
    parser.add_argument("--body", help="body directory (with --root)")
    parser.add_argument("--crop-size", type=int, default=64, help="with --root")
    parser.add_argument("--bound", choices=["decode", "decode+encode"], default="decode+encode",
                        help="with --root")
    args = parser.parse_args(argv)
    if bool(args.root) != bool(args.body):
        parser.error("--root and --body go together")

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as scratch:
        if args.root:
            results.append(run_case("custom", Path(args.root), Path(args.body), args.crop_size,
                                    args.bound, args.rounds, Path(scratch)))
        known = cases()
        for name in (known if args.case == "all" else [args.case]) if not args.root else []:
            overrides, crop_size, bound = known[name]
            root, body_dir = cached_dataset(overrides)
            results.append(run_case(name, root, body_dir, crop_size, bound, args.rounds,
                                    Path(scratch)))
    print(f"{'case':8} {'frames':>5} {'size':>9} {'crop':>4} {'preprocess f/s':>14} "
          f"{'bound f/s':>9} {'ratio':>5}  bound; CPU ratio per round; wall ratio; ratio with "
          "the body model loaded")
    for r in results:
        size = "x".join(map(str, r["frame_size"]))
        print(f"{r['case']:8} {r['frames']:>5} {size:>9} {r['crop_size']:>4} "
              f"{statistics.median(r['preprocess_frames_per_s']):>14.1f} "
              f"{statistics.median(r['bound_frames_per_s']):>9.1f} {r['ratio_cpu_median']:>5.2f}"
              f"  {r['bound']}; {', '.join(f'{x:.2f}' for x in r['ratio_cpu'])}; "
              f"{r['ratio_wall_median']:.2f}; {r['ratio_cpu_body_loaded_median']:.2f}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
