"""The evaluation run: every model (plus the mean-pose baseline and smoothed variants) on the same
frames of one split, then the metrics files, csvs, charts and overlays.

    result = evaluate(cfg, EvaluatePaths(shards=..., body=...))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stdformer.data.manifest import read_manifest
from stdformer.data.shards import list_shards, make_clip_loader
from stdformer.evaluation import overlays as ov
from stdformer.evaluation import report
from stdformer.evaluation.config import BASELINE_NAME, SMOOTH_SUFFIX, EvaluateConfig
from stdformer.evaluation.diagnostics import part_vertex_groups, summarize_diagnostics
from stdformer.evaluation.predict import (Predictor, constant_predictor, model_predictor,
                                          predict_tracks, track_layout, with_mesh)
from stdformer.evaluation.scoring import FrameTable, score_track, summaries
from stdformer.io import DataError, atomic_output, write_bytes_atomic, write_text_atomic


@dataclass(frozen=True)
class EvaluatePaths:
    shards: Path                                       # preprocess output (<split>/shard-*.tar)
    body: Path                                         # body model directory
    metrics: Path = Path("metrics/eval.json")
    model_metrics: Path = Path("metrics/eval")         # directory: <model>.json each
    diagnostics: Path = Path("metrics/eval_diagnostics.json")
    per_frame: Path = Path("metrics/per_frame.parquet")
    per_sequence_csv: Path = Path("metrics/eval_per_sequence.csv")
    over_time_csv: Path = Path("metrics/eval_error_over_time.csv")
    plots: Path = Path("plots/eval")                   # directory, replaced as a whole


@dataclass
class EvaluationResult:
    models: list[str]                                  # row names, table order
    rows: dict[str, np.ndarray]                        # per-frame columns (FrameTable)
    overall: dict[str, dict]                           # model -> summary
    per_sequence: dict[str, dict[str, dict]]           # model -> sequence -> summary
    overlay_clips: list[ov.OverlayClip] = field(default_factory=list)
    diagnostics: dict[str, dict] = field(default_factory=dict)   # model -> diagnostics summary


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name!r} needs a CUDA device and none is available")
    return device


def row_order(models: Sequence[str], smoothed: Sequence[str], baseline: bool) -> list[str]:
    """Models in their configured order, each followed by its smoothed row, baseline last."""
    order = []
    for name in models:
        order.append(name)
        if name in smoothed:
            order.append(name + SMOOTH_SUFFIX)
    return order + ([BASELINE_NAME] if baseline else [])


# --------------------------------------------------------------------------------------------
# Predictors from the configuration


def mean_pose_vertices(shards: Path, split: str, body: torch.nn.Module) -> torch.Tensor:
    """The mean root-relative fine mesh (V, 3) over the valid frames of `split` (training set),
    meshes posed by `body` (a BodyModel)."""
    from stdformer.train.data import index_shards, iter_targets
    from stdformer.train.evaluate import mean_pose

    index = index_shards(shards, split)
    vertices, _ = mean_pose(iter_targets(index, ("pose", "betas", "joints_h36m", "valid")), body)
    return vertices.float()


def load_predictors(cfg: EvaluateConfig, shards: Path, body_dir: Path, body: torch.nn.Module,
                    clip_len: int, device: torch.device) -> dict[str, Predictor]:
    """name -> predictor for every configured model file, plus the baseline when enabled.
    A model whose clip length differs from the shards' is refused (its windows would not be
    the clips the manifest describes)."""
    from stdformer.train.export import load_model

    predictors: dict[str, Predictor] = {}
    for name, path in cfg.model_files().items():
        model = load_model(path, body_dir, map_location="cpu")
        if model.cfg.clip_len != clip_len:
            raise DataError(path, f"model clip_len {model.cfg.clip_len} differs from the "
                            f"{clip_len}-frame clips in {shards}", field="model_config.clip_len")
        predictors[name] = model_predictor(model, device)
    if cfg.baseline:
        predictors[BASELINE_NAME] = constant_predictor(
            mean_pose_vertices(shards, cfg.baseline_split, body))
    return predictors


def _clip_len(manifest: Mapping[str, list], split: str, where: Path) -> int:
    lengths = {int(n) for s, n in zip(manifest["split"], manifest["num_frames"]) if s == split}
    if not lengths:
        raise DataError(where, f"the manifest lists no clips of split {split!r}", field="split")
    if len(lengths) != 1:
        raise DataError(where, f"clips of {split!r} have different lengths {sorted(lengths)}",
                        field="num_frames")
    return lengths.pop()


# --------------------------------------------------------------------------------------------
# Scoring


def evaluate_predictors(predictors: Mapping[str, Predictor], shards: str | Path, split: str,
                        body: torch.nn.Module, *, merge: str = "mean",
                        smoothed: Sequence[str] = (), sigma: float = 1.5,
                        batch_size: int = 8, num_workers: int = 0,
                        overlay_keys: Sequence[str] = (), body_model_id: str | None = None,
                        part_labels: np.ndarray | None = None,
                        progress: bool = False) -> EvaluationResult:
    """Score every predictor on every valid frame of `split` (clips predicted, windows merged per
    track, see predict.py); `smoothed` models also get a "_smooth" row. `body` (a BodyModel)
    poses the ground-truth meshes and regresses the joints. part_labels (V,): the SMPL joint of
    every vertex, for per-part errors (diagnostics.py); None = none."""
    shards = Path(shards)
    manifest = read_manifest(shards)
    layout = track_layout(manifest, split)
    if not layout:
        raise DataError(shards, f"the manifest lists no clips of split {split!r}", field="split")
    urls = list_shards(shards, split)
    loader = make_clip_loader(urls, batch_size=batch_size, frames_dtype="uint8",
                              num_workers=min(num_workers, len(urls)))
    collector = ov.OverlayCollector(overlay_keys)
    observers = [collector]
    if body_model_id is not None:
        observers.append(_body_check(body_model_id, shards / split))
    regressor = body.J_regressor_h36m.double()
    batches: Any = with_mesh(loader, body)
    if progress:
        from stdformer.progress import progress as progress_bar

        total = -(-sum(1 for s in manifest["split"] if s == split) // batch_size)
        batches = progress_bar(batches, total=total, unit="batch", desc="evaluate")
    groups = part_vertex_groups(part_labels) if part_labels is not None else None
    table = FrameTable()
    for track in predict_tracks(batches, predictors, layout, merge, observers,
                                where=str(shards / split)):
        table.add_track(track, score_track(track, regressor, smoothed, sigma, SMOOTH_SUFFIX,
                                           part_groups=groups))
    models = row_order([n for n in predictors if n != BASELINE_NAME], smoothed,
                       BASELINE_NAME in predictors)
    rows = table.columns(models)
    overall, per_sequence = summaries(rows, models)
    diagnostics = {m: summarize_diagnostics({k: v[rows["model"] == m] for k, v in rows.items()})
                   for m in models}
    return EvaluationResult(models, rows, overall, per_sequence, collector.ordered(),
                            diagnostics)


def _body_check(body_model_id: str, where: Path):
    def check(batch, _outputs) -> None:
        for key, meta in zip(batch["key"], batch["meta"]):
            if meta.get("body_model_id") != body_model_id:
                raise DataError(f"{where}[{key}]", f"clip made with body model "
                                f"{meta.get('body_model_id')!r}, evaluating with "
                                f"{body_model_id!r}", field="body_model_id")
    return check


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
    from stdformer.train.assets import load_body_assets

    assets = load_body_assets(paths.body)
    body = assets.body
    manifest = read_manifest(paths.shards)
    clip_len = _clip_len(manifest, cfg.split, paths.shards / "manifest.parquet")
    try:
        device = resolve_device(cfg.device)
    except ValueError as e:
        raise DataError("evaluate", str(e), field="device") from e
    predictors = load_predictors(cfg, paths.shards, paths.body, body, clip_len, device)
    overlay_keys = ov.select_overlay_keys(manifest, cfg.split, cfg.overlays) \
        if any(n != BASELINE_NAME for n in predictors) else []
    result = evaluate_predictors(
        predictors, paths.shards, cfg.split, body, merge=cfg.merge,
        smoothed=cfg.smoothed_models(), sigma=cfg.smoothing.sigma, batch_size=cfg.batch_size,
        num_workers=cfg.num_workers, overlay_keys=overlay_keys,
        body_model_id=assets.body_model_id, part_labels=body.part_labels.cpu().numpy(),
        progress=progress)
    primary = result.models[0] if result.models else None
    faces = np.asarray(assets.hierarchy.faces[0], np.int64)        # the full mesh
    write_outputs(result, paths, faces, primary, cfg.worst_sequences, cfg.overlay_size,
                  cfg.overlay_frames)
    return result
