"""DVC stage `demo`: the registered champion on one synthetic test sequence, as a user would run
`stdformer predict` on a video (section `demo`; crops as section `preprocess` cuts them; the
sequence from dataset `datasets.3dpw`).

    python -m stages.demo [--params params.yaml] [--out plots/demo]

Writes plots/demo/: <sequence>.mp4 (the input video), <sequence>_overlay.mp4, <sequence>_sheet.png
and <sequence>.npz. MLflow: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db.
"""

import argparse
import sys
from pathlib import Path

from stdformer.config import read_params, section_config
from stdformer.data.datasets import dataset_config, preprocess_section
from stdformer.inference import DemoConfig
from stdformer.inference.demo import run_demo
from stdformer.io import run_guarded
from stdformer.tracking import default_tracking_uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", required=True)  # named on dvc.yaml's command line
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    params = read_params(args.params)
    cfg = section_config(params, "demo", DemoConfig, args.params, required=False)
    crop = preprocess_section(params, args.params)
    root = dataset_config(params, "3dpw", args.params).root
    result = run_demo(cfg, crop, Path(root), Path(args.out),
                      tracking_uri=default_tracking_uri(Path.cwd()),
                      show_progress=not args.no_progress)
    if result.message:
        print(f"demo: {result.message}", file=sys.stderr)
    print(f"demo: {cfg.model} on {Path(result.video).name}: {len(result.track_ids)} track(s), "
          f"{result.num_frames} frames in {result.seconds:.1f} s ({result.frames_per_s:.1f} "
          f"frames/s) -> {args.out}")


if __name__ == "__main__":
    run_guarded(main)
