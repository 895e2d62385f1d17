"""DVC stage `train`: train STDFormer on the shards (sections `train`, `model`, `loss`).

    python -m stages.train [--params params.yaml] [--variant NAME] --shards DIR --body DIR
                           --out MODEL.pt --checkpoints DIR --metrics FILE --curve FILE
    torchrun --nproc_per_node 2 -m stages.train ...      # DDP (NCCL on GPU, gloo on CPU)

Writes the model file (--out), checkpoints under --checkpoints/<hash of the config>/ (resumed
automatically when the config matches; `stdformer checkpoint list | prune`), the validation
metrics and the training curve. dvc.yaml names every path.
MLflow: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db.
"""

import argparse
from pathlib import Path

# The numeric environment is pinned by `stages/__init__.py`, before torch runs anything.
from stdformer.config import read_params, section_config
from stdformer.io import run_guarded
from stdformer.losses import LossConfig
from stdformer.model.stdformer import variant_model_config
from stdformer.tracking import default_tracking_uri
from stdformer.train import TrainConfig, TrainPaths, Tracking, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    # Every path is named on dvc.yaml's command line, nowhere else.
    for name in ("--shards", "--body", "--out", "--checkpoints", "--metrics", "--curve"):
        parser.add_argument(name, required=True)
    parser.add_argument("--variant", help="apply the model overrides of params `variants.NAME`")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    params = read_params(args.params)
    source = str(args.params)
    cfg = section_config(params, "train", TrainConfig, source)
    model_cfg = variant_model_config(params, args.variant, source)
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
