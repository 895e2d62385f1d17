"""DVC stage `register`: log the evaluated model to MLflow, register a new version of the
registered model and apply the promotion gate (section `register`).

    python -m stages.register [--params params.yaml] [--model models/stdformer.pt]
        [--body data/body] [--eval metrics/eval.json] [--lock dvc.lock] [--data data/shards]
        [--out metrics/registry.json]

Writes metrics/registry.json (version, aliases, decision, reason, metrics compared). MLflow:
MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db; artifacts under <cwd>/mlartifacts.
The run records every params.yaml section and metric; the version's tags hold the headline
metrics, the model file md5 and the DVC hashes (dvc.lock) of the data and the train stage's
params; the version and the registered model get a description.
"""

import argparse
from pathlib import Path

from stdformer.config import read_params, section_config
from stdformer.io import run_guarded
from stdformer.progress import mlflow_bars_on_terminal_only
from stdformer.registry import RegisterConfig, RegisterPaths, register
from stdformer.tracking import default_tracking_uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    # Every path is named on dvc.yaml's command line, nowhere else.
    for name in ("--model", "--body", "--eval", "--lock", "--data", "--out"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    mlflow_bars_on_terminal_only()

    params = read_params(args.params)
    cfg = section_config(params, "register", RegisterConfig, args.params, required=False)
    project = Path.cwd()
    record = register(
        RegisterPaths(model=Path(args.model), body=Path(args.body), eval=Path(args.eval),
                      lock=Path(args.lock), data=Path(args.data), out=Path(args.out)),
        cfg, params, tracking_uri=default_tracking_uri(project),
        artifact_root=project / "mlartifacts")
    print(f"register: {record['model_name']} version {record['version']}: "
          f"{record['decision']} ({record['reason']})")


if __name__ == "__main__":
    run_guarded(main)
