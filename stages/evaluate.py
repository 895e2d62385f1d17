"""DVC stage `evaluate`: score the trained model(s), the mean-pose baseline and smoothed variants
on the test split of every dataset (section `evaluate`: `datasets` names them, e.g. 3DPW and
Human3.6M protocols 1 and 2; reference section 4 protocol).

    python -m stages.evaluate [--params params.yaml] --shards DIR --body DIR --metrics FILE
                              --model-metrics DIR --diagnostics FILE --per-frame FILE
                              --per-sequence-csv FILE --over-time-csv FILE --plots DIR

Writes the overall results per dataset and model (--metrics), one headline-numbers json per
dataset and model for `dvc metrics show` (--model-metrics/<dataset>/<model>.json), diagnostics
(yaw error, body proportions, error by body part), per-frame parquet, per-sequence and
over-time csv (a `dataset` column), and per dataset the charts, the yaw-error histogram and mesh
overlays (--plots/<dataset>/); prints the overall table (markdown). dvc.yaml names the paths.
"""

import argparse
from pathlib import Path

from stdformer.config import load_section
from stdformer.evaluation import EvaluateConfig, EvaluatePaths, evaluate
from stdformer.io import run_guarded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    # Every path is named on dvc.yaml's command line, nowhere else.
    for name in ("--shards", "--body", "--metrics", "--diagnostics", "--per-frame",
                 "--per-sequence-csv", "--over-time-csv", "--plots"):
        parser.add_argument(name, required=True)
    parser.add_argument("--model-metrics", required=True,
                        help="directory for one headline-metrics json per model")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    cfg = load_section("evaluate", EvaluateConfig, args.params)
    paths = EvaluatePaths(shards=Path(args.shards), body=Path(args.body),
                          metrics=Path(args.metrics), model_metrics=Path(args.model_metrics),
                          diagnostics=Path(args.diagnostics),
                          per_frame=Path(args.per_frame),
                          per_sequence_csv=Path(args.per_sequence_csv),
                          over_time_csv=Path(args.over_time_csv), plots=Path(args.plots))
    print(evaluate(cfg, paths, progress=not args.no_progress).markdown(), end="")


if __name__ == "__main__":
    run_guarded(main)
