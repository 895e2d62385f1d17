"""The `stdformer` console command: user-facing operations outside the DVC pipeline.

    stdformer body convert SMPL_NEUTRAL.pkl out.npz   # official SMPL pickle -> plain npz, no chumpy
    stdformer body info data/body                     # what body model a pipeline uses
    stdformer shards info data/shards [--verify]      # clips and frames per split
    stdformer registry list | promote VERSION | rollback   # the MLflow model registry
"""

from __future__ import annotations

import argparse
import json
import sys

from stdformer.io import DataError


def _body_convert(args: argparse.Namespace) -> None:
    from stdformer.body import convert_smpl

    convert_smpl(args.src, args.dst)
    print(f"wrote {args.dst}")


def _body_info(args: argparse.Namespace) -> None:
    from stdformer.body import BodyModel

    body = BodyModel.from_dir(args.body_dir)
    levels = " -> ".join(str(adj.shape[0]) for adj in body.hierarchy.adjacency)
    print(f"body model {body.body_model_id}: {body.num_vertices} vertices, levels {levels}")


def _shards_info(args: argparse.Namespace) -> None:
    from stdformer.data.manifest import read_manifest, split_counts, split_shards

    summary = split_counts(read_manifest(args.shards_dir))
    if args.verify:
        for split in summary:
            split_shards(args.shards_dir, split)  # DataError naming the first shard that differs
            summary[split]["verified"] = True
    print(json.dumps(summary, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stdformer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = parser.add_subparsers(dest="group", required=True)

    body = groups.add_parser("body", help="body model files").add_subparsers(dest="cmd",
                                                                             required=True)
    convert = body.add_parser("convert", help="convert an official SMPL .pkl (or .npz) to a "
                              "plain .npz without chumpy")
    convert.add_argument("src")
    convert.add_argument("dst")
    convert.set_defaults(func=_body_convert)
    info = body.add_parser("info", help="summarise a body directory written by the body stage")
    info.add_argument("body_dir", nargs="?", default="data/body")
    info.set_defaults(func=_body_info)

    shards = groups.add_parser("shards", help="preprocessed shards").add_subparsers(
        dest="cmd", required=True)
    sinfo = shards.add_parser("info", help="clips, shards, frames and valid frames per split "
                              "(each frame counted once)")
    sinfo.add_argument("shards_dir", nargs="?", default="data/shards")
    sinfo.add_argument("--verify", action="store_true",
                       help="also check every shard's size and sha256 against the manifest")
    sinfo.set_defaults(func=_shards_info)

    from stdformer.registry import add_registry_commands

    add_registry_commands(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
