"""DVC stage `preprocess@<name>`: crop every track of dataset `<name>` (params.yaml
`datasets.<name>`, any layout; crop settings from section `preprocess`) into clips and write
WebDataset shards, `manifest.parquet` and `report.json`.

    python -m stages.preprocess --dataset 3dpw data/body data/shards/3dpw
"""

import argparse
import logging

from stdformer.config import read_params
from stdformer.data.datasets import dataset_config, preprocess_section
from stdformer.data.preprocess import preprocess
from stdformer.io import run_guarded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("body_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--dataset", required=True, help="an entry of params.yaml's datasets")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    params = read_params(args.params)
    cfg = preprocess_section(params, args.params)
    dataset = dataset_config(params, args.dataset, args.params)
    preprocess(dataset, args.body_dir, args.out_dir, cfg, name=args.dataset)  # logs a summary


if __name__ == "__main__":
    run_guarded(main)
