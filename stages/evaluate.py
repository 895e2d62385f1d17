"""DVC stage `evaluate`: score the trained model(s), the mean-pose baseline and smoothed variants
on the test split (section `evaluate`; reference section 4 protocol).

    python -m stages.evaluate [--params params.yaml] [--shards data/shards] [--body data/body]
                              [--metrics metrics/eval.json] [--plots plots/eval] ...

Writes metrics/eval.json (overall results per model), metrics/eval/<model>.json (its headline
numbers, for `dvc metrics show`), metrics/eval_diagnostics.json
(yaw error, body proportions, error by body part), metrics/per_frame.parquet,
metrics/eval_per_sequence.csv, metrics/eval_error_over_time.csv and plots/eval/ (charts, the
yaw-error histogram and mesh overlays); prints the overall table (markdown).
"""

import argparse
from pathlib import Path

from stdformer.config import load_section
from stdformer.evaluation import EvaluateConfig, EvaluatePaths, evaluate
from stdformer.evaluation.report import markdown_table
from stdformer.io import run_guarded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = EvaluatePaths(shards=Path("data/shards"), body=Path("data/body"))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--shards", default=str(defaults.shards))
    parser.add_argument("--body", default=str(defaults.body))
    parser.add_argument("--metrics", default=str(defaults.metrics))
    parser.add_argument("--model-metrics", default=str(defaults.model_metrics),
                        help="directory for one headline-metrics json per model")
    parser.add_argument("--diagnostics", default=str(defaults.diagnostics))
    parser.add_argument("--per-frame", default=str(defaults.per_frame))
    parser.add_argument("--per-sequence-csv", default=str(defaults.per_sequence_csv))
    parser.add_argument("--over-time-csv", default=str(defaults.over_time_csv))
    parser.add_argument("--plots", default=str(defaults.plots))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    cfg = load_section("evaluate", EvaluateConfig, args.params)
    paths = EvaluatePaths(shards=Path(args.shards), body=Path(args.body),
                          metrics=Path(args.metrics), model_metrics=Path(args.model_metrics),
                          diagnostics=Path(args.diagnostics),
                          per_frame=Path(args.per_frame),
                          per_sequence_csv=Path(args.per_sequence_csv),
                          over_time_csv=Path(args.over_time_csv), plots=Path(args.plots))
    result = evaluate(cfg, paths, progress=not args.no_progress)
    print(markdown_table(result.overall), end="")


if __name__ == "__main__":
    run_guarded(main)
