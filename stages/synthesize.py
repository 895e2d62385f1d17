"""DVC stage `synthesize`: render the embedded synthetic dataset in the exact 3DPW layout.

    python -m stages.synthesize data/body data/raw/synthetic
"""

import argparse
import logging

from stdformer.body import BodyModel
from stdformer.config import load_section
from stdformer.data.synthetic import synthesize
from stdformer.data.synthetic_config import SynthesizeConfig
from stdformer.io import run_guarded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("body_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = load_section("synthesize", SynthesizeConfig, args.params)
    synthesize(args.out_dir, BodyModel.from_dir(args.body_dir), cfg)   # logs its summary


if __name__ == "__main__":
    run_guarded(main)
