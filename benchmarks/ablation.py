"""SD/TD ablation with its spread: train each variant over several seeds, score every run on the
test split, print mean +- std of each metric and of the paired effect (variant - reference).

    python benchmarks/ablation.py [--params params.yaml] [--shards data/shards] [--body data/body]
        [--variants stdformer per_frame] [--seeds 0 1 2] [--set train.steps=1400 ...]
        [--out benchmarks/results/ablation.json] [--threads N]
    python benchmarks/ablation.py --combine run0.json run1.json ...   # seeds run in parallel
    python benchmarks/ablation.py --seeds 0 --trained models   # score the pipeline's models

Each run is the `train` stage's training (params.yaml sections `train`, `model`, `loss`, the
variant's model overrides, `train.seed` = the seed) without MLflow, then the
`evaluate` stage's scoring of the test split (`evaluate.split`, merge mode) with the
diagnostics (median yaw error, spread ratios). `--set` applies dotted overrides on top of
params.yaml (e.g. to try a schedule before committing to it); the data (shards) stay as they
are. The variants are params.yaml's `variants` plus `per_frame` (no SD/TD, FastMETRO-style;
the CPU default's pipeline trains only stdformer). The effect of SD/TD is stdformer - per_frame
per seed (negative = SD/TD lowers the error), summarised over seeds. `--trained DIR` scores
DIR/<variant>.pt (e.g. `models/`, what `dvc repro` trained with train.seed) as the run of the
one seed given instead of training again. Also prints
the training CPU time per step (process time of this process; use --set train.num_workers=0 to
keep data loading in it).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from stdformer.numerics import pin_environment

pin_environment()  # as every stage (stages/__init__.py), before numpy and torch load: runs equal
                   # the pipeline's

import torch  # noqa: E402
import yaml  # noqa: E402

from stdformer.config import from_dict, read_params, section_config  # noqa: E402
from stdformer.evaluation import EvaluateConfig  # noqa: E402
from stdformer.losses import LossConfig  # noqa: E402
from stdformer.model.stdformer import variant_model_config  # noqa: E402
from stdformer.scoring.predict import constant_predictor, model_predictor  # noqa: E402
from stdformer.scoring.run import evaluate_predictors, mean_pose_vertices  # noqa: E402
from stdformer.train import TrainConfig, TrainPaths, Tracking, train
from stdformer.model.assets import load_body_assets

REPORTED = ("mpjpe", "pa_mpjpe", "mpvpe", "accel", "yaw_median", "width_ratio")
REFERENCE = "per_frame"
REFERENCE_OVERRIDES = {"sd": False, "td": False}   # the ablation baseline: no SD/TD


def variant_overrides(params: dict) -> dict[str, dict]:
    """{variant: model overrides}: params.yaml's `variants` and the reference (unless listed)."""
    overrides = dict(params.get("variants") or {"stdformer": {}})
    overrides.setdefault(REFERENCE, REFERENCE_OVERRIDES)
    return overrides


def apply_overrides(params: dict, overrides: list[str]) -> dict:
    """params with dotted `key=value` overrides (values parsed as YAML) applied to a copy."""
    params = copy.deepcopy(params)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return params


def train_variant(params: dict, variant: str, seed: int, shards: Path, body: Path,
                  work: Path) -> tuple[torch.nn.Module, dict]:
    """Train one (variant, seed); returns the model and {steps, train_s, cpu_s_per_step}."""
    cfg = section_config(params, "train", TrainConfig, "params")
    cfg.seed = seed
    cfg.resume = "never"
    overrides = variant_overrides(params)
    if variant not in overrides:
        raise SystemExit(f"unknown variant {variant!r}; expected one of {sorted(overrides)}")
    model_cfg = variant_model_config({**params, "variants": overrides}, variant, "params")
    loss_cfg = section_config(params, "loss", LossConfig, "params", required=False)
    out = work / f"{variant}_seed{seed}"
    paths = TrainPaths(shards=shards, body=body, model=out / "model.pt",
                       checkpoints=out / "checkpoints", metrics=out / "metrics.json",
                       curve=out / "curve.csv")
    wall, cpu = time.perf_counter(), time.process_time()
    result = train(cfg, model_cfg, loss_cfg, paths, Tracking(uri=None), progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return result.model, {"steps": cfg.steps, "train_s": round(wall, 1),
                          "cpu_s_per_step": round(cpu / cfg.steps, 4),
                          "val_mpjpe": result.metrics.get("val_mpjpe")}


def trained_variant(directory: Path, variant: str, body: Path) -> tuple[torch.nn.Module, dict]:
    """A model the pipeline trained (DIR/<variant>.pt) and what its file says about training."""
    from stdformer.model.model_file import load_model, read_model_file

    path = directory / f"{variant}.pt"
    metrics = read_model_file(path)["metrics"]
    return load_model(path, body), {"steps": metrics.get("steps"), "from": str(path),
                                    "val_mpjpe": metrics.get("val_mpjpe")}


def evaluate_models(models: dict[str, torch.nn.Module], params: dict, shards: Path, body: Path
                    ) -> dict[str, dict]:
    """Test-split summaries {name: {metric: value}} of the models and the mean pose."""
    ecfg = from_dict(EvaluateConfig, params.get("evaluate") or {}, source="params",
                     prefix="evaluate")
    body_model = load_body_assets(body).body
    predictors = {name: model_predictor(m.eval(), torch.device("cpu"))
                  for name, m in models.items()}
    predictors["mean_pose"] = constant_predictor(
        mean_pose_vertices(shards, ecfg.baseline_split, body_model))
    result = evaluate_predictors(predictors, shards, ecfg.split, body_model, merge=ecfg.merge,
                                 batch_size=ecfg.batch_size,
                                 part_labels=body_model.part_labels.numpy())
    return {name: {**result.overall[name], **result.diagnostics[name]}
            for name in result.models}


def combine_runs(runs: list[dict]) -> list[dict]:
    """Runs of the same seed (e.g. one process per variant) merged into one, in seed order."""
    merged: dict[int, dict] = {}
    for run in runs:
        into = merged.setdefault(run["seed"], {"seed": run["seed"], "train": {}, "test": {}})
        into["train"].update(run["train"])
        into["test"].update(run["test"])
    return [merged[seed] for seed in sorted(merged)]


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summary_table(runs: list[dict], variants: list[str]) -> str:
    """Markdown: mean +- std over seeds per variant (and the mean pose), then the paired
    effect variant - REFERENCE per seed."""
    head = "| model | " + " | ".join(REPORTED) + " | seeds |"
    lines = [head, "|" + "---|" * (len(REPORTED) + 2)]
    for name in [*variants, "mean_pose"]:
        cells = []
        for metric in REPORTED:
            m, s = mean_std([r["test"][name].get(metric) for r in runs])
            cells.append(f"{m:.2f} +- {s:.2f}" if metric.endswith("ratio") else
                         f"{m:.1f} +- {s:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(runs)} |")
    for name in variants:
        if name == REFERENCE or REFERENCE not in variants:
            continue
        cells = []
        for metric in REPORTED:
            m, s = mean_std([r["test"][name][metric] - r["test"][REFERENCE][metric]
                             for r in runs])
            cells.append(f"{m:+.2f} +- {s:.2f}" if metric.endswith("ratio") else
                         f"{m:+.1f} +- {s:.1f}")
        lines.append(f"| {name} - {REFERENCE} | " + " | ".join(cells) + f" | {len(runs)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--shards", default="data/shards", type=Path)
    parser.add_argument("--body", default="data/body", type=Path)
    parser.add_argument("--variants", nargs="+", default=None,
                        help="default: params.yaml's `variants` and per_frame")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="dotted params override (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="write all runs as JSON here")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--work", type=Path, default=None, metavar="DIR",
                        help="keep each run's model, metrics and curve in DIR/<variant>_seed<N>/")
    parser.add_argument("--trained", type=Path, metavar="DIR",
                        help="score DIR/<variant>.pt (one seed) instead of training")
    parser.add_argument("--combine", nargs="+", type=Path, metavar="JSON",
                        help="summarise the runs of earlier --out files instead of training")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.trained is not None and len(args.seeds) != 1:
        raise SystemExit("--trained scores one seed's models: give exactly one --seeds value")
    if args.combine:
        docs = [json.loads(p.read_text()) for p in args.combine]
        runs = combine_runs([run for doc in docs for run in doc["runs"]])
        variants = list(dict.fromkeys(v for doc in docs for v in doc["variants"]))
        print(f"test split, {len(runs)} seeds (mean +- std over seeds); overrides: "
              f"{' '.join(docs[0]['overrides']) or 'none'}")
        print(summary_table(runs, variants), end="")
        return

    params = apply_overrides(read_params(args.params), args.overrides)
    variants = args.variants or list(variant_overrides(params))
    runs = []
    with tempfile.TemporaryDirectory(prefix="ablation-") as tmp:
        work = args.work if args.work is not None else Path(tmp)
        for seed in args.seeds:
            models, timing = {}, {}
            for variant in variants:
                if args.trained is not None:
                    models[variant], timing[variant] = trained_variant(args.trained, variant,
                                                                       args.body)
                    continue
                models[variant], timing[variant] = train_variant(
                    params, variant, seed, args.shards, args.body, work)
                print(f"seed {seed} {variant}: {json.dumps(timing[variant])}", file=sys.stderr)
            test = evaluate_models(models, params, args.shards, args.body)
            runs.append({"seed": seed, "train": timing, "test": test})
            line = ", ".join(f"{n} MPJPE {t['mpjpe']:.1f} MPVPE {t['mpvpe']:.1f} "
                             f"yaw {t['yaw_median']:.0f}" for n, t in test.items())
            print(f"seed {seed} test: {line}", file=sys.stderr)
    table = summary_table(runs, variants)
    print(f"test split, {len(args.seeds)} seeds (mean +- std over seeds); overrides: "
          f"{' '.join(args.overrides) or 'none'}")
    print(table, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"overrides": args.overrides, "variants": variants,
                                        "runs": runs, "table": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
