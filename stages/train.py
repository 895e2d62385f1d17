"""DVC stage `train`: train STDFormer on the shards (sections `train`, `model`, `loss`).

    python -m stages.train [--params params.yaml] [--shards data/shards] [--body data/body]
                           [--out models/stdformer.pt]
    torchrun --nproc_per_node 2 -m stages.train ...      # DDP (NCCL on GPU, gloo on CPU)

Also writes checkpoints/<hash of the config>/ (resumed automatically when the config matches;
`stdformer checkpoint list | prune`), metrics/train.json and metrics/train_curve.csv.
MLflow: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db.
"""

import argparse
from pathlib import Path

# The numeric environment is pinned by `stages/__init__.py`, before torch runs anything.
from stdformer.config import read_params, section_config
from stdformer.io import DataError, run_guarded
from stdformer.losses import LossConfig
from stdformer.model.stdformer import model_config_from_section
from stdformer.tracking import default_tracking_uri
from stdformer.train import TrainConfig, TrainPaths, Tracking, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--shards", default="data/shards")
    parser.add_argument("--body", default="data/body")
    parser.add_argument("--out", default="models/stdformer.pt")
    parser.add_argument("--checkpoints", default="checkpoints")
    parser.add_argument("--metrics", default="metrics/train.json")
    parser.add_argument("--curve", default="metrics/train_curve.csv")
    parser.add_argument("--variant", help="apply the model overrides of params `variants.NAME`")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    params = read_params(args.params)
    source = str(args.params)
    cfg = section_config(params, "train", TrainConfig, source)
    model_section = dict(params.get("model") or {})
    if args.variant is not None:
        variants = params.get("variants") or {}
        if args.variant not in variants:
            raise DataError(source, f"no such variant (known: {', '.join(variants) or 'none'})",
                            field=f"variants.{args.variant}")
        model_section.update(variants[args.variant] or {})
    model_cfg = model_config_from_section(model_section, source=source, prefix="model")
    loss_cfg = section_config(params, "loss", LossConfig, source, required=False)

    project = Path.cwd()
    train(cfg, model_cfg, loss_cfg,                       # logs the validation summary
          TrainPaths(shards=Path(args.shards), body=Path(args.body), model=Path(args.out),
                     checkpoints=Path(args.checkpoints), metrics=Path(args.metrics),
                     curve=Path(args.curve)),
          Tracking(uri=default_tracking_uri(project), artifact_root=project / "mlartifacts",
                   run_name=args.variant),
          progress=not args.no_progress)


if __name__ == "__main__":
    run_guarded(main)
