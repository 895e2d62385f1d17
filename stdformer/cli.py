"""The `stdformer` console command: user-facing operations outside the DVC pipeline.

    stdformer body convert SMPL_NEUTRAL.pkl out.npz   # official SMPL pickle -> plain npz, no chumpy
    stdformer body info data/body                     # what body model a pipeline uses, what was checked
    stdformer checkpoint inspect state_dict.bin       # a FastMETRO / STDFormer / project checkpoint
    stdformer checkpoint evaluate state_dict.bin      # released weights on data/shards, no training
    stdformer checkpoint convert SRC DST --to project|fastmetro   # between the two layouts
    stdformer checkpoint list [checkpoints]           # training checkpoints, one dir per config
    stdformer checkpoint prune [checkpoints] [--keep 1] [--dry-run]   # remove older configs
    stdformer shards info data/shards [--verify]      # clips and frames per dataset and split
    stdformer registry list | promote VERSION | rollback   # the MLflow model registry
    stdformer predict VIDEO --model models:/stdformer@champion --out DIR   # video -> meshes
"""

from __future__ import annotations

# Each subcommand imports its code (torch, MLflow, ...) when it runs, inside its function:
# `stdformer --help` and the light commands stay instant (tests/test_layers.py allows it here).
import argparse
import functools
import json
import sys
from pathlib import Path

from stdformer.config import read_params
from stdformer.io import DataError, check_output_dir


def _body_convert(args: argparse.Namespace) -> None:
    from stdformer.body import convert_smpl

    convert_smpl(args.src, args.dst)
    print(f"wrote {args.dst}")


def _body_info(args: argparse.Namespace) -> None:
    from stdformer.body import BodyModel

    body = BodyModel.from_dir(args.body_dir)
    meta = body.meta
    levels = " -> ".join(str(adj.shape[0]) for adj in body.hierarchy.adjacency)
    source = meta.get("source_file") or f"procedural, seed {meta.get('seed')}"
    print(f"body model {body.body_model_id}: {body.num_vertices} vertices, levels {levels} "
          f"({source})")
    for line in body_check_lines(meta):
        print(f"  {line}")


def body_check_lines(meta: dict) -> list[str]:
    """What the body stage checked (meta.json `checks`), one line each."""
    checks = meta.get("checks")
    if not checks:
        return ["nothing checked: written by an older version, rebuild it (dvc repro -f body)"]
    fit, reg, mirror = checks["hierarchy_fit"], checks["h36m_regressor"], checks["mirror"]
    mm = lambda values: " / ".join(f"{v:.1f}" for v in values)  # noqa: E731
    lines = [
        f"hierarchy ({meta.get('hierarchy_file') or meta['hierarchy']}) fits the template: "
        f"median edge {mm(fit['median_edge_mm'])} mm per level (expected about "
        f"{mm(fit['expected_edge_mm'])}), up-sampling error {mm(fit['upsampling_error_mm'])} mm",
        f"H36M regressor: rows sum to {reg['row_sums'][0]:.4f} .. {reg['row_sums'][1]:.4f}, "
        "every joint inside the template, left/right joints on their side",
    ]
    if mirror.get("ok"):
        lines.append(
            f"mirror (flip augmentation): one-to-one, involution; {mirror['self_mapped']} "
            f"vertices on the sagittal plane map to themselves; partner residual "
            f"{mm(mirror['residual_mm'])} mm (median / max); flipped edges change by at most "
            f"{mirror['edge_change_mm']:.1f} mm")
    else:
        lines.append(f"mirror: the body cannot be flipped ({mirror['reason']})")
    standard = meta["standard_smpl_hierarchy"]
    lines.append(f"standard SMPL hierarchy (needed by FastMETRO / STDFormer checkpoints): "
                 f"{'yes' if standard['ok'] else 'no'} ({standard['why']})")
    return lines


def _checkpoint_inspect(args: argparse.Namespace) -> None:
    import yaml

    from stdformer.model.pretrained import inspect_checkpoint

    info = inspect_checkpoint(args.path)
    t = info["transformer"]
    print(f"{info['path']}: {info['name'] or 'a'} checkpoint in {info['layout']} layout, "
          f"{info['total_parameters']:,} parameters")
    print(f"  backbone     {info['backbone'] or 'none'}: {info['parameters']['backbone']:,}")
    print(f"  SD/TD        {', '.join(info['sd_td']) or 'none (sd: false, td: false)'}: "
          f"{info['parameters']['SD/TD']:,}")
    print(f"  transformer  {t['enc_layers']} + {t['dec_layers']} layers a stage, widths "
          f"{t['widths']}, FFN {t['ffn_dims']}, {info['joint_tokens']} joint and "
          f"{info['vertex_tokens']} vertex tokens: {info['parameters']['transformer']:,}")
    print(f"  heads        {info['parameters']['heads']:,}")
    if info["skipped"]:
        print(f"  skipped      {len(info['skipped'])} keys of FastMETRO's optional "
              "SMPL-parameter regressor (smpl_parameter_regressor.*)")
    if info["needs_standard_smpl_hierarchy"]:
        print("  needs the standard SMPL hierarchy: body.source = your SMPL file, "
              "body.mesh_downsampling = mesh_downsampling.npz")
    print("params.yaml:")
    print("  " + yaml.safe_dump({"model": info["model_params"]}, sort_keys=False,
                                default_flow_style=None).replace("\n", "\n  ").rstrip())
    if not info["sd_td"]:
        print("  (this is the checkpoint's own network; to train STDFormer from it, the paper's "
              "recipe, set sd: true and td: true: SD/TD then start fresh)")


def _checkpoint_convert(args: argparse.Namespace) -> None:
    from stdformer.model.pretrained import convert_checkpoint

    done = convert_checkpoint(args.src, args.dst, args.to)
    skipped = f"; skipped {len(done['skipped'])} keys" if done["skipped"] else ""
    print(f"wrote {args.dst} ({done['tensors']} tensors, {args.to} layout{skipped})")


def _checkpoint_evaluate(args: argparse.Namespace) -> None:
    """Released weights on the test split, no training: the evaluate stage's outputs under
    --out, plus lineage.json naming the file by its sha256."""
    from pathlib import Path

    from stdformer.data.sources import source_dir
    from stdformer.evaluation import EvaluateConfig, EvaluatePaths, evaluate
    from stdformer.io import file_digest, read_json, write_text_atomic

    name = args.name or Path(args.path).stem
    out = Path(args.out)
    cfg = EvaluateConfig(models={name: args.path}, split=args.split, baseline=False,
                         overlays=args.overlays)
    paths = EvaluatePaths(shards=Path(args.shards), body=Path(args.body),
                          metrics=out / "eval.json", model_metrics=out / "eval",
                          diagnostics=out / "eval_diagnostics.json",
                          per_frame=out / "per_frame.parquet",
                          per_sequence_csv=out / "eval_per_sequence.csv",
                          over_time_csv=out / "eval_error_over_time.csv", plots=out / "plots")
    run = evaluate(cfg, paths, progress=not args.quiet)
    manifests = {d: file_digest(source_dir(args.shards, n["source"]) / "manifest.parquet")
                 for d, n in run.notes.items()}
    lineage = {"checkpoint": Path(args.path).name, "sha256": file_digest(args.path),
               "body_model_id": read_json(Path(args.body) / "meta.json")["body_model_id"],
               "shards_manifest_sha256": manifests, "split": args.split,
               "metrics": {d: r.overall[name] for d, r in run.results.items()}}
    write_text_atomic(out / "lineage.json", json.dumps(lineage, indent=2, sort_keys=True) + "\n")
    print(run.markdown(), end="")


def _current_checkpoint_configs(configs, params_path: str) -> set[Path] | None:
    """The configurations `params_path` would resume (None: no such file, so not known)."""
    from stdformer.train.checkpoint import current_configs
    from stdformer.train.config import params_identity

    if not Path(params_path).is_file():
        return None
    params = read_params(params_path)
    return current_configs(configs, functools.cache(
        lambda variant: params_identity(params, variant, params_path)))


def _checkpoint_list(args: argparse.Namespace) -> None:
    from stdformer.train.checkpoint import format_configs, list_configs

    configs = list_configs(args.root)
    print(format_configs(configs, _current_checkpoint_configs(configs, args.params)))


def _checkpoint_prune(args: argparse.Namespace) -> None:
    from stdformer.train.checkpoint import list_configs, prune_configs

    if args.keep < 0:
        raise DataError("--keep", f"must be >= 0, got {args.keep}")
    current = _current_checkpoint_configs(list_configs(args.root), args.params)
    removed = prune_configs(args.root, keep=args.keep, dry_run=args.dry_run,
                            current=current or ())
    verb = "would remove" if args.dry_run else "removed"
    for c in removed:
        print(f"{verb} {c.directory} ({len(c.steps)} checkpoint(s), {c.bytes / 1e6:.1f} MB)")
    if current is None:
        print(f"note: no {args.params}, so no configuration is known to be current")
    if not removed:
        print(f"nothing to remove: every variant under {args.root} has at most {args.keep} "
              "configuration(s) besides the one the current params resume")


def _source_summary(directory, verify: bool) -> dict:
    from stdformer.data.manifest import read_manifest, split_counts, split_shards

    summary = split_counts(read_manifest(directory))
    if verify:
        for split in summary:
            split_shards(directory, split)  # DataError naming the first shard that differs
            summary[split]["verified"] = True
    return summary


def _shards_info(args: argparse.Namespace) -> None:
    """One dataset's output (data/shards/3dpw): counts per split; their parent (data/shards):
    one block per dataset."""
    from stdformer.data.manifest import MANIFEST_NAME, source_dirs

    if (Path(args.shards_dir) / MANIFEST_NAME).is_file():
        summary = _source_summary(args.shards_dir, args.verify)
    else:
        summary = {name: _source_summary(directory, args.verify)
                   for name, directory in source_dirs(args.shards_dir).items()}
    print(json.dumps(summary, indent=2))


def _predict(args: argparse.Namespace) -> None:
    from stdformer.data.datasets import preprocess_section
    from stdformer.inference import PredictConfig, load_inference_model, predict_video

    # The crop protocol is the model file's; a project's preprocess section may only confirm it
    # (predict warns where it differs). Outside a project there is none, and nothing to confirm.
    crop = (preprocess_section(read_params(args.params), args.params, required=False)
            if Path(args.params).is_file() else None)
    cfg = PredictConfig(min_track_frames=args.min_track_frames, max_people=args.max_people,
                        box_scale=args.box_scale, focal=args.focal, device=args.device,
                        glb=not args.no_glb, overlay=not args.no_overlay,
                        obj_every=args.obj_every)
    cfg.detector.kind = args.detector
    cfg.smoothing.enabled, cfg.smoothing.sigma = args.smooth is not None, args.smooth or 1.5
    try:
        cfg.validate()
    except ValueError as e:
        raise DataError("stdformer predict", str(e)) from e
    check_output_dir(args.out)                 # before the model is fetched or a frame decoded
    model = load_inference_model(args.model, args.body, device="cpu")
    result = predict_video(args.video, model, args.out, cfg, crop, boxes=args.boxes,
                           fps=args.fps, show_progress=not args.quiet,
                           strict_frames=args.strict_frames)
    for warning in result.warnings:
        print(f"predict: warning: {warning}", file=sys.stderr)
    if result.message:
        print(f"predict: {result.message}", file=sys.stderr)
    print(f"predict: {result.num_frames} frames, {len(result.track_ids)} track(s) in "
          f"{result.seconds:.1f} s ({result.frames_per_s:.1f} frames/s)", file=sys.stderr)
    for kind, path in result.files.items():
        print(f"{kind}\t{path}")


def _add_predict(groups) -> None:
    from stdformer.inference.config import DETECTOR_KINDS, PredictConfig

    predict = groups.add_parser(
        "predict", help="meshes of every person in a video (or a folder of frames)",
        description="Find and track people (BlazePose, or --boxes), crop them as preprocess "
        "does, run the model over windows merged as evaluate merges them, and write "
        "DIR/<video>.npz, an H.264 overlay video, a contact sheet and a .glb per person.")
    predict.add_argument("video", help="video file (anything OpenCV reads) or folder of frames")
    predict.add_argument("--model", required=True,
                         help="models/<variant>.pt, or an MLflow URI (models:/stdformer@champion)")
    predict.add_argument("--out", required=True, help="output directory")
    predict.add_argument("--body", default="data/body",
                         help="body directory a model file was trained with (default data/body)")
    predict.add_argument("--boxes", help="person boxes, MOT-style CSV frame,id,x,y,w,h,score "
                         "(frames from 1) or JSON; with ids on every row tracking is skipped")
    predict.add_argument("--focal", type=float, help="focal length in pixels (default: the "
                         "image diagonal)")
    predict.add_argument("--fps", type=float, help="frame rate of a frame folder (default 30) or "
                         "override of the video's")
    defaults = PredictConfig()
    predict.add_argument("--detector", default=defaults.detector.kind, choices=DETECTOR_KINDS,
                         help="person detector: blazepose (default; docs/detector.md) or hog "
                         "(OpenCV's, needs no model files; slower, weaker)")
    predict.add_argument("--max-people", type=int, default=defaults.max_people,
                         help="keep the N longest tracks (default 0: all)")
    predict.add_argument("--min-track-frames", type=int, default=defaults.min_track_frames,
                         help="drop tracks with fewer detected frames (default %(default)s)")
    predict.add_argument("--box-scale", type=float, default=defaults.box_scale,
                         help="crop side / longer side of a full-body box (default %(default)s)")
    predict.add_argument("--smooth", type=float, metavar="SIGMA",
                         help="Gaussian smoothing over time (frames), as evaluate's")
    predict.add_argument("--obj-every", type=int, default=0, metavar="N",
                         help="also write an OBJ of every Nth frame of each person")
    predict.add_argument("--no-glb", action="store_true", help="skip the .glb files")
    predict.add_argument("--no-overlay", action="store_true",
                         help="skip the overlay video and contact sheet")
    predict.add_argument("--strict-frames", action="store_true",
                         help="fail (exit status 2, nothing written) when the video decodes to "
                         "fewer frames than its container declares (truncated or damaged); "
                         "without it that is a warning and the decoded frames are used")
    predict.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    predict.add_argument("--params", default="params.yaml",
                         help="project params: the preprocess section sets the crop protocol")
    predict.add_argument("--quiet", action="store_true", help="no progress output")
    predict.set_defaults(func=_predict)


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

    ckpt = groups.add_parser("checkpoint", help="FastMETRO / STDFormer checkpoints (inspect, "
                             "convert) and training checkpoints (list, prune)"
                             ).add_subparsers(dest="cmd", required=True)
    inspect = ckpt.add_parser("inspect", help="what a checkpoint holds and the model params "
                              "that fit it")
    inspect.add_argument("path")
    inspect.set_defaults(func=_checkpoint_inspect)
    convert_ckpt = ckpt.add_parser("convert", help="rewrite a checkpoint in this project's or "
                                   "FastMETRO's names")
    convert_ckpt.add_argument("src")
    convert_ckpt.add_argument("dst")
    convert_ckpt.add_argument("--to", choices=("project", "fastmetro"), default="project")
    convert_ckpt.set_defaults(func=_checkpoint_convert)
    ceval = ckpt.add_parser("evaluate", help="evaluate released FastMETRO / STDFormer weights "
                            "(or a model file) on the shards, without training")
    ceval.add_argument("path", help="state_dict.bin (FastMETRO / STDFormer) or models/*.pt")
    ceval.add_argument("--name", help="row name (default: the file name's stem)")
    ceval.add_argument("--body", default="data/body")
    ceval.add_argument("--shards", default="data/shards")
    ceval.add_argument("--split", default="test")
    ceval.add_argument("--out", default="metrics/published",
                       help="directory for eval.json, per-frame and per-sequence tables, plots "
                       "and lineage.json")
    ceval.add_argument("--overlays", type=int, default=3, help="clips drawn with meshes")
    ceval.add_argument("--quiet", action="store_true", help="no progress bar")
    ceval.set_defaults(func=_checkpoint_evaluate)
    clist = ckpt.add_parser("list", help="training checkpoints: one line per configuration, "
                            "newest first, with steps, size, what the newest changed and which one "
                            "the current params.yaml resumes")
    clist.add_argument("root", nargs="?", default="checkpoints")
    clist.add_argument("--params", default="params.yaml",
                       help="marks the configuration these params resume as current")
    clist.set_defaults(func=_checkpoint_list)
    prune = ckpt.add_parser("prune", help="remove all but the newest training configurations "
                            "of each variant, never the one the current params.yaml resumes")
    prune.add_argument("root", nargs="?", default="checkpoints")
    prune.add_argument("--keep", type=int, default=1,
                       help="configurations to keep per variant (default 1: the newest)")
    prune.add_argument("--dry-run", action="store_true", help="say what would be removed")
    prune.add_argument("--params", default="params.yaml",
                       help="the configuration these params resume is never removed")
    prune.set_defaults(func=_checkpoint_prune)

    shards = groups.add_parser("shards", help="preprocessed shards").add_subparsers(
        dest="cmd", required=True)
    sinfo = shards.add_parser("info", help="clips, shards, frames and valid frames per split "
                              "(each frame counted once); of each dataset under data/shards")
    sinfo.add_argument("shards_dir", nargs="?", default="data/shards")
    sinfo.add_argument("--verify", action="store_true",
                       help="also check every shard's size and sha256 against the manifest")
    sinfo.set_defaults(func=_shards_info)

    from stdformer.registry import add_registry_commands

    add_registry_commands(groups)
    _add_predict(groups)
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
