"""The evaluation run: every model (plus the mean-pose baseline and smoothed variants) on the same
frames of one split, then the metrics files, csvs, charts and overlays.

    result = evaluate(cfg, EvaluatePaths(shards=..., body=..., metrics=..., ...))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stdformer.data.manifest import read_manifest
from stdformer.data.shard_index import crop_protocol
from stdformer.devices import resolve_device
from stdformer.evaluation import overlays as ov
from stdformer.evaluation import report
from stdformer.evaluation.config import EvaluateConfig
from stdformer.io import DataError, atomic_output, write_bytes_atomic, write_text_atomic
from stdformer.model.assets import load_body_assets
from stdformer.model.pretrained import load_model_or_checkpoint
from stdformer.scoring import BASELINE_NAME, SMOOTH_SUFFIX
from stdformer.scoring.predict import Predictor, constant_predictor, model_predictor
from stdformer.scoring.run import (
    EvaluationResult,
    clip_length,
    evaluate_predictors,
    mean_pose_vertices,
)


@dataclass(frozen=True)
class EvaluatePaths:
    shards: Path                                       # preprocess output (<split>/shard-*.tar)
    body: Path                                         # body model directory
    metrics: Path                                      # overall results (eval.json)
    model_metrics: Path                                # directory: <model>.json each
    diagnostics: Path
    per_frame: Path                                    # parquet
    per_sequence_csv: Path
    over_time_csv: Path
    plots: Path                                        # directory, replaced as a whole


# --------------------------------------------------------------------------------------------
# Predictors from the configuration


def load_predictors(cfg: EvaluateConfig, shards: Path, body_dir: Path, body: torch.nn.Module,
                    clip_len: int, device: torch.device) -> dict[str, Predictor]:
    """name -> predictor for every configured model file, plus the baseline when enabled.
    A model whose clip length differs from the shards' is refused (its windows would not be
    the clips the manifest describes), and so is one whose recorded input protocol crops
    otherwise than the shards were cropped (its scores would measure another input)."""
    predictors: dict[str, Predictor] = {}
    shard_crops = crop_protocol(shards)
    for name, path in cfg.model_files().items():
        model, inputs = load_model_or_checkpoint(path, body_dir, clip_len=clip_len)
        if model.cfg.clip_len != clip_len:
            raise DataError(path, f"model clip_len {model.cfg.clip_len} differs from the "
                            f"{clip_len}-frame clips in {shards}", field="model_config.clip_len")
        if inputs is not None:
            differs = [f"{k} {getattr(inputs, k)} vs {v}" for k, v in shard_crops.items()
                       if v is not None and getattr(inputs, k) is not None
                       and getattr(inputs, k) != v]
            if differs:
                raise DataError(path, f"trained on crops other than those in {shards} "
                                f"({', '.join(differs)}): rerun preprocess with the model's "
                                "settings", field="inputs")
        predictors[name] = model_predictor(model, device, inputs)
    if cfg.baseline:
        predictors[BASELINE_NAME] = constant_predictor(
            mean_pose_vertices(shards, cfg.baseline_split, body))
    return predictors


# --------------------------------------------------------------------------------------------
# Outputs


def write_outputs(result: EvaluationResult, paths: EvaluatePaths, faces: np.ndarray,
                  primary: str | None, worst: int = 3, overlay_size: int = 160,
                  overlay_frames: int = 4) -> list[str]:
    """Write every output atomically; returns the worst sequences (by `primary`'s MPJPE)."""
    sequences = report.worst_sequences(result.per_sequence, primary, worst) if primary else []
    write_text_atomic(paths.metrics, report.eval_json(result.overall))
    with atomic_output(paths.model_metrics, directory=True) as tmp:
        for model, summary in result.overall.items():
            (tmp / f"{model}.json").write_text(report.model_metrics_json(summary))
    write_text_atomic(paths.diagnostics, report.diagnostics_json(result.diagnostics))
    write_bytes_atomic(paths.per_frame, report.per_frame_parquet(result.rows))
    write_text_atomic(paths.per_sequence_csv, report.per_sequence_csv(result.per_sequence))
    write_text_atomic(paths.over_time_csv, report.error_over_time_csv(result.rows, sequences))
    with atomic_output(paths.plots, directory=True) as tmp:
        (tmp / "per_sequence.png").write_bytes(report.per_sequence_png(result.per_sequence))
        (tmp / "error_over_time.png").write_bytes(
            report.error_over_time_png(result.rows, sequences, result.models))
        if "yaw" in result.rows:
            unsmoothed = [m for m in result.models if not m.endswith(SMOOTH_SUFFIX)]
            (tmp / "yaw_error.png").write_bytes(report.yaw_histogram_png(result.rows, unsmoothed))
        if result.overlay_clips:
            (tmp / "overlays").mkdir()
        for clip in result.overlay_clips:
            image = ov.render_overlay(clip, faces, overlay_size, overlay_frames)
            (tmp / "overlays" / f"{clip.key}.png").write_bytes(ov.png_bytes(image))
    return sequences


def evaluate(cfg: EvaluateConfig, paths: EvaluatePaths, progress: bool = True
             ) -> EvaluationResult:
    """The `evaluate` stage: load models and body, score, write every output."""
    assets = load_body_assets(paths.body)
    body = assets.body
    manifest = read_manifest(paths.shards)
    clip_len = clip_length(manifest, cfg.split, paths.shards / "manifest.parquet")
    try:
        device = resolve_device(cfg.device)
    except ValueError as e:
        raise DataError("evaluate", str(e), field="device") from e
    predictors = load_predictors(cfg, paths.shards, paths.body, body, clip_len, device)
    overlay_keys = ov.select_overlay_keys(manifest, cfg.split, cfg.overlays) \
        if any(n != BASELINE_NAME for n in predictors) else []
    collector = ov.OverlayCollector(overlay_keys)
    result = evaluate_predictors(
        predictors, paths.shards, cfg.split, body, merge=cfg.merge,
        smoothed=cfg.smoothed_models(), sigma=cfg.smoothing.sigma, batch_size=cfg.batch_size,
        num_workers=cfg.num_workers, observers=[collector],
        body_model_id=assets.body_model_id, part_labels=body.part_labels.cpu().numpy(),
        progress=progress)
    result.overlay_clips = collector.ordered()
    primary = result.models[0] if result.models else None
    faces = np.asarray(assets.hierarchy.faces[0], np.int64)        # the full mesh
    write_outputs(result, paths, faces, primary, cfg.worst_sequences, cfg.overlay_size,
                  cfg.overlay_frames)
    return result
