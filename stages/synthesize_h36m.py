"""DVC stage `synthesize_h36m`: render the embedded synthetic Human3.6M set in the layout the
field distributes (images/ + annotations/Human36M_subject{S}_*.json; docs/synthetic-h36m.md).

    python -m stages.synthesize_h36m data/body data/raw/synthetic_h36m
"""

import argparse
import logging

from stdformer.body import BodyModel
from stdformer.body.track_posing import PosingArrays
from stdformer.config import load_section
from stdformer.data.synthetic_h36m import synthesize_h36m
from stdformer.data.synthetic_h36m_config import SynthesizeH36MConfig
from stdformer.io import run_guarded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("body_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = load_section("synthesize_h36m", SynthesizeH36MConfig, args.params)
    synthesize_h36m(args.out_dir, BodyModel.from_dir(args.body_dir),
                    PosingArrays.load(args.body_dir), cfg)  # logs its summary


if __name__ == "__main__":
    run_guarded(main)
