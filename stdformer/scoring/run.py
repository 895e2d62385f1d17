"""Scoring predictors on one split of the shards: every clip predicted, overlapping windows
merged per track, every valid frame scored with the published metrics. Training's validation
and the `evaluate` stage both call `evaluate_predictors`, so they report the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stdformer.data.manifest import read_manifest
from stdformer.data.shard_index import index_shards, iter_targets
from stdformer.data.shards import list_shards, make_clip_loader
from stdformer.io import DataError
from stdformer.progress import progress as progress_bar
from stdformer.scoring import BASELINE_NAME, SMOOTH_SUFFIX
from stdformer.scoring.diagnostics import part_vertex_groups, summarize_diagnostics
from stdformer.scoring.frames import mean_pose
from stdformer.scoring.predict import Predictor, predict_tracks, track_layout, with_mesh
from stdformer.scoring.track_scores import FrameTable, score_track, summaries


@dataclass
class EvaluationResult:
    models: list[str]                                  # row names, table order
    rows: dict[str, np.ndarray]                        # per-frame columns (FrameTable)
    overall: dict[str, dict]                           # model -> summary
    per_sequence: dict[str, dict[str, dict]]           # model -> sequence -> summary
    overlay_clips: list = field(default_factory=list)  # evaluation.overlays.OverlayClip
    diagnostics: dict[str, dict] = field(default_factory=dict)   # model -> diagnostics summary


def row_order(models: Sequence[str], smoothed: Sequence[str], baseline: bool) -> list[str]:
    """Models in their configured order, each followed by its smoothed row, baseline last."""
    order = []
    for name in models:
        order.append(name)
        if name in smoothed:
            order.append(name + SMOOTH_SUFFIX)
    return order + ([BASELINE_NAME] if baseline else [])


def mean_pose_vertices(shards: Path, split: str, body: torch.nn.Module) -> torch.Tensor:
    """The mean root-relative fine mesh (V, 3) over the valid frames of `split` (training set),
    meshes posed by `body` (a BodyModel)."""
    index = index_shards(shards, split)
    vertices, _ = mean_pose(iter_targets(index, ("pose", "betas", "joints_h36m", "valid")), body)
    return vertices.float()


def clip_length(manifest: Mapping[str, list], split: str, where: Path) -> int:
    lengths = {int(n) for s, n in zip(manifest["split"], manifest["num_frames"]) if s == split}
    if not lengths:
        raise DataError(where, f"the manifest lists no clips of split {split!r}", field="split")
    if len(lengths) != 1:
        raise DataError(where, f"clips of {split!r} have different lengths {sorted(lengths)}",
                        field="num_frames")
    return lengths.pop()


def camera_clips(manifest: Mapping[str, list], camera: int | None, where: Path
                 ) -> dict[str, list]:
    """The manifest's rows of clips filmed by `camera` (its `camera` column; None: all)."""
    if camera is None:
        return dict(manifest)
    keep = [int(c) == camera for c in manifest["camera"]]
    if not any(keep):
        raise DataError(where, f"no clip of camera {camera} (cameras here: "
                        f"{sorted({int(c) for c in manifest['camera']})})", field="camera")
    return {name: [v for v, k in zip(column, keep) if k] for name, column in manifest.items()}


def evaluate_predictors(predictors: Mapping[str, Predictor], shards: str | Path, split: str,
                        body: torch.nn.Module, *, camera: int | None = None,
                        merge: str = "mean",
                        smoothed: Sequence[str] = (), sigma: float = 1.5,
                        batch_size: int = 8, num_workers: int = 0,
                        observers: Sequence[Callable] = (), body_model_id: str | None = None,
                        part_labels: np.ndarray | None = None,
                        progress: bool = False) -> EvaluationResult:
    """Score every predictor on every valid frame of `split` (of `camera` only when given:
    camera_clips) (clips predicted, windows merged per
    track, see predict.py); `observers(batch, outputs)` see every predicted batch (evaluation's
    overlay collector); `smoothed` models also get a "_smooth" row. `body` (a BodyModel)
    poses the ground-truth meshes and regresses the joints. part_labels (V,): the SMPL joint of
    every vertex, for per-part errors (diagnostics.py); None = none."""
    shards = Path(shards)
    manifest = camera_clips(read_manifest(shards), camera, shards / "manifest.parquet")
    layout = track_layout(manifest, split)
    if not layout:
        raise DataError(shards, f"the manifest lists no clips of split {split!r}", field="split")
    urls = list_shards(shards, split)
    keys = None
    if camera is not None:      # only that camera's clips, read from the shards holding them
        keys, holding = set(manifest["key"]), set(manifest["shard"])
        urls = [u for u in urls if f"{Path(u).parent.name}/{Path(u).name}" in holding]
    loader = make_clip_loader(urls, batch_size=batch_size, frames_dtype="uint8",
                              num_workers=min(num_workers, len(urls)), keys=keys)
    observers = list(observers)
    if body_model_id is not None:
        observers.append(_body_check(body_model_id, shards / split))
    regressor = body.J_regressor_h36m.double()
    batches: Any = with_mesh(loader, body)
    if progress:
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
    return EvaluationResult(models, rows, overall, per_sequence, diagnostics=diagnostics)


def _body_check(body_model_id: str, where: Path):
    def check(batch, _outputs) -> None:
        for key, meta in zip(batch["key"], batch["meta"]):
            if meta.get("body_model_id") != body_model_id:
                raise DataError(f"{where}[{key}]", f"clip made with body model "
                                f"{meta.get('body_model_id')!r}, evaluating with "
                                f"{body_model_id!r}", field="body_model_id")
    return check
