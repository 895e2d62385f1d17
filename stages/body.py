"""DVC stage `body`: write the body model (procedural or the user's SMPL) and its mesh
hierarchy to data/body.

    python -m stages.body data/body
"""

import argparse

from stdformer.body.files import BodyConfig, write_body_dir_from_config
from stdformer.config import load_section
from stdformer.io import run_guarded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    cfg = load_section("body", BodyConfig, args.params)
    meta = write_body_dir_from_config(args.out_dir, cfg)
    levels = " -> ".join(str(n) for n in meta["levels"])
    print(f"body: model {meta['body_model_id']} ({meta['source']}), mesh levels {levels} "
          f"vertices -> {args.out_dir}")


if __name__ == "__main__":
    run_guarded(main)
