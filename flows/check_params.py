"""Check params.yaml before DVC reads it: `make repro` runs this ahead of `dvc repro`.

    python -m flows.check_params [params.yaml]

DVC reads params.yaml without limits (a YAML alias bomb of a few hundred bytes takes `dvc
status` to gigabytes) and removes a stage's outputs before the stage finds a bad value (an
output declared `cache: false` cannot be restored). This reads the file within limits
(stdformer.config.read_params: size, alias expansion) and loads every section as its stage
loads it (flows.overrides.check_sections): bad input is one `error:` line naming the file and
the field, exit status 2, before anything runs.
"""

from __future__ import annotations

import argparse

from flows.overrides import check_sections
from stdformer.config import read_params
from stdformer.io import run_guarded


def check_params_file(path: str) -> None:
    """DataError when `path` is beyond the limits or a section would not load."""
    params = read_params(path)
    check_sections(params, params.keys(), path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("params", nargs="?", default="params.yaml")
    args = parser.parse_args(argv)
    check_params_file(args.params)


if __name__ == "__main__":
    run_guarded(main)
