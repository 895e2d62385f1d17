"""DVC stage `preprocess`: crop every actor track into clips and write WebDataset shards,
`manifest.parquet` and `report.json`.

    python -m stages.preprocess data/body data/shards
"""

import argparse
import logging

from stdformer.config import load_section
from stdformer.data.preprocess import preprocess
from stdformer.data.preprocess_config import PreprocessConfig
from stdformer.io import run_guarded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("body_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = load_section("preprocess", PreprocessConfig, args.params)
    preprocess(cfg.dataset_root, args.body_dir, args.out_dir, cfg)   # report.json; logs a summary


if __name__ == "__main__":
    run_guarded(main)
