"""Per-frame errors of merged track predictions (reference section 4) and their averages.

* MPJPE, PA-MPJPE: J14 from the H36M-17 regressor applied to the predicted fine mesh vs the
  ground-truth `joints_h36m`, each root aligned on its own mid-hip; MPVPE: meshes centred on
  their own pelvis (`stdformer.scoring.frames.frame_errors`, the same code as validation).
* Accel: second differences of root-aligned J14 along ONE track (never across tracks); a term
  is dropped when any of its three frames is invalid (`accel_error_per_sequence`). The term
  centred on frame t is stored on frame t.
* Only valid frames (campose_valid protocol, covered by a clip) get rows; averages are over
  frames, overall and per sequence (all actors of a sequence together).
* Diagnostics (`diagnostics.py`): yaw error, spread ratios and per-part errors per frame; the
  summaries carry the median yaw error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from stdformer.metrics import (
    accel_error_per_sequence,
    j14_from_h36m,
    root_align,
    summarize,
)
from stdformer.scoring.diagnostics import DIAGNOSTICS, frame_diagnostics, median_or_nan
from stdformer.scoring.frames import frame_errors
from stdformer.scoring.predict import TrackPrediction
from stdformer.scoring.smoothing import gaussian_smooth

METRICS = ("mpjpe", "pa_mpjpe", "mpvpe", "accel")      # mm, mm, mm, mm/frame^2
ROW_KEYS = ("model", "sequence", "actor", "frame", "image_frame")


def track_errors(pred_vertices: np.ndarray, gt_vertices: np.ndarray, gt_h36m: np.ndarray,
                 valid: np.ndarray, regressor: torch.Tensor, chunk: int = 256,
                 part_groups: Mapping[str, np.ndarray] | None = None,
                 has_mesh: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Errors of one track. pred_vertices, gt_vertices (T, V, 3), gt_h36m (T, 17, 3) metres,
    valid (T,) bool, regressor (17, V) -> {metric or diagnostic: (T,) float64}, NaN on frames
    that do not count (invalid; for accel also the track ends and terms touching an invalid
    frame). part_groups (`diagnostics.part_vertex_groups`): None = no per-part errors.
    has_mesh (T,) bool: frames with a ground-truth mesh (None: all); on the others (a
    joints-only source) the errors against the mesh (mpvpe, spread ratios, per-part errors)
    are NaN, the joint errors count.
    Meshes are converted to float64 `chunk` frames at a time (a 3DPW track has ~2000 frames)."""
    valid = np.asarray(valid, bool)
    t = len(valid)
    reg = torch.as_tensor(regressor).double()
    gt_j17 = torch.as_tensor(np.asarray(gt_h36m)).double()
    groups = dict(part_groups or {})
    out = {m: np.full(t, np.nan) for m in (*METRICS, *diagnostic_names(groups))}
    pred_j17 = torch.zeros(t, 17, 3, dtype=torch.float64)
    for lo in range(0, t, chunk):
        sl = slice(lo, min(lo + chunk, t))
        pred = torch.as_tensor(np.asarray(pred_vertices[sl])).double()          # (c, V, 3)
        pred_j17[sl] = reg @ pred
        keep = torch.as_tensor(valid[sl])
        if keep.any():
            gt = torch.as_tensor(np.asarray(gt_vertices[sl])).double()[keep]
            errors = frame_errors(pred[keep], gt, gt_j17[sl][keep], reg)
            frames = np.flatnonzero(valid[sl]) + lo
            errors.update(frame_diagnostics(pred[keep], gt, gt_j17[sl][keep], reg, groups))
            for name, values in errors.items():
                out[name][frames] = values.numpy()
    pred_j14 = root_align(j14_from_h36m(pred_j17))                              # (T, 14, 3)
    gt_j14 = root_align(j14_from_h36m(gt_j17))
    values, mask = accel_error_per_sequence(pred_j14, gt_j14, torch.as_tensor(valid),
                                            np.zeros(t, np.int64))
    out["accel"] = np.where(mask.numpy(), values.numpy(), np.nan)
    if has_mesh is not None:
        no_mesh = ~np.asarray(has_mesh, bool)
        for name, values in out.items():
            if name == "mpvpe" or name.endswith("_ratio") or name.startswith("part_"):
                values[no_mesh] = np.nan
    return out


def diagnostic_names(part_groups: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    """The diagnostic columns `track_errors` fills for these part groups."""
    return tuple(d for d in DIAGNOSTICS
                 if not d.startswith("part_") or d.removeprefix("part_") in part_groups)


def score_track(track: TrackPrediction, regressor: torch.Tensor, smooth: Sequence[str] = (),
                sigma: float = 1.5, suffix: str = "_smooth",
                part_groups: Mapping[str, np.ndarray] | None = None
                ) -> dict[str, dict[str, np.ndarray]]:
    """{row name: {metric: (T,)}} for every model of the track, plus "<name><suffix>" for the
    models in `smooth` (their merged vertices Gaussian-smoothed over the track's valid frames)."""
    out = {}
    for name, vertices in track.vertices.items():
        out[name] = track_errors(vertices, track.gt_vertices, track.gt_h36m, track.valid,
                                 regressor, part_groups=part_groups, has_mesh=track.has_mesh)
        if name in smooth:
            smoothed = gaussian_smooth(vertices, track.valid, sigma)
            out[name + suffix] = track_errors(smoothed, track.gt_vertices, track.gt_h36m,
                                              track.valid, regressor, part_groups=part_groups,
                                              has_mesh=track.has_mesh)
    return out


class FrameTable:
    """Rows (model, sequence, actor, frame, image_frame, mpjpe, pa_mpjpe, mpvpe, accel, then the
    diagnostics), one per (model, valid frame), collected track by track; `columns()` sorts
    them. Every track must carry the same metric names."""

    def __init__(self):
        self._parts: list[dict[str, np.ndarray]] = []
        self.metric_names: tuple[str, ...] = METRICS

    def add_track(self, track: TrackPrediction, errors: Mapping[str, Mapping[str, np.ndarray]]
                  ) -> None:
        frames = np.flatnonzero(track.valid)
        n = len(frames)
        for model, metrics in errors.items():
            part = {"model": np.full(n, model, dtype=object),
                    "sequence": np.full(n, track.sequence, dtype=object),
                    "actor": np.full(n, track.actor, np.int32),
                    "frame": frames.astype(np.int32),
                    "image_frame": track.frame_ids[frames].astype(np.int32)}
            self.metric_names = tuple(metrics)
            for m in metrics:
                part[m] = np.asarray(metrics[m], np.float64)[frames]
            self._parts.append(part)

    def columns(self, model_order: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """All rows as columns, sorted by (model in `model_order`, sequence, actor, frame)."""
        keys = (*ROW_KEYS, *self.metric_names)
        if not self._parts:
            return {k: np.zeros(0, object if k in ROW_KEYS else np.float64) for k in keys}
        cols = {k: np.concatenate([p[k] for p in self._parts]) for k in keys}
        names = list(model_order) if model_order is not None else sorted(set(cols["model"]))
        rank = {name: i for i, name in enumerate(names)}
        model_rank = np.array([rank.get(m, len(rank)) for m in cols["model"]])
        order = np.lexsort((cols["frame"], cols["actor"], cols["sequence"].astype(str),
                            model_rank))
        return {k: v[order] for k, v in cols.items()}


def summarize_rows(rows: Mapping[str, np.ndarray], select: np.ndarray | None = None
                   ) -> dict[str, float | int]:
    """Frame averages {mpjpe, pa_mpjpe, mpvpe, accel, frames} of the rows (or a boolean
    selection of them); accel over the rows that carry a term, mpvpe over the rows with a
    ground-truth mesh (not a joints-only source's); NaN where nothing counts."""
    idx = np.ones(len(rows["mpjpe"]), bool) if select is None else np.asarray(select, bool)
    per_frame = {}
    for m in METRICS:
        values = torch.as_tensor(np.asarray(rows[m], np.float64)[idx])
        per_frame[m] = (values, ~torch.isnan(values)) if m in ("accel", "mpvpe") else values
    means = summarize(per_frame)
    out: dict[str, float | int] = {m: means[m] for m in METRICS}
    if "yaw" in rows:
        out["yaw_median"] = median_or_nan(np.asarray(rows["yaw"], np.float64)[idx])
    out["frames"] = int(idx.sum())
    return out


def summaries(rows: Mapping[str, np.ndarray], models: Iterable[str]
              ) -> tuple[dict[str, dict], dict[str, dict[str, dict]]]:
    """(overall {model: summary}, per_sequence {model: {sequence: summary}})."""
    overall, per_sequence = {}, {}
    model_col, seq_col = rows["model"], rows["sequence"]
    for model in models:
        mine = model_col == model
        overall[model] = summarize_rows(rows, mine)
        per_sequence[model] = {str(seq): summarize_rows(rows, mine & (seq_col == seq))
                               for seq in sorted(set(seq_col[mine]))}
    return overall, per_sequence
