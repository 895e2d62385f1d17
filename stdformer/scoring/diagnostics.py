"""Why a mesh is wrong, per frame: facing direction, body proportions, error by body part.

* Yaw error (degrees, 0..180): the body's left-right axis (the mean of the unit hip axis
  R_Hip -> L_Hip and the unit shoulder axis R_Shoulder -> L_Shoulder of the H36M-17 joints
  regressed from the mesh) of the prediction and of the ground truth, both projected onto the
  plane perpendicular to the ground truth's spine (pelvis -> neck); the angle between the two
  projections. A body that faces the wrong way scores ~180, a side view mistaken for a front
  view ~90. A mesh with no left-right axis (a collapsed "sliver") scores at random.
* Spread ratios: the standard deviations of the mesh vertices along their own principal axes
  (largest = height, then width, then depth), predicted over ground truth. They need no
  orientation: a human-shaped prediction has ratios near 1 whichever way it faces, a sliver
  has a width ratio far below 1.
* Part errors: MPVPE (mm, each mesh centred on its own pelvis, `metrics.mesh_pelvis`, as the
  protocol's MPVPE) over the vertices of each body-part group, by the vertex's dominant SMPL
  joint (`BodyModel.part_labels`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from stdformer.body.constants import H36M_JOINT_NAMES, SMPL_JOINT_NAMES
from stdformer.metrics import mesh_pelvis

_H36M = {name: i for i, name in enumerate(H36M_JOINT_NAMES)}
# Body-part groups (SMPL joint names) for the per-part errors.
PART_GROUPS: dict[str, tuple[str, ...]] = {
    "head": ("Neck", "Head"),
    "torso": ("Pelvis", "Spine1", "Spine2", "Spine3", "L_Collar", "R_Collar"),
    "arms": ("L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow"),
    "hands": ("L_Wrist", "R_Wrist", "L_Hand", "R_Hand"),
    "legs": ("L_Hip", "R_Hip", "L_Knee", "R_Knee"),
    "feet": ("L_Ankle", "R_Ankle", "L_Foot", "R_Foot"),
}
SPREAD_NAMES = ("height", "width", "depth")     # principal axes, largest first
DIAGNOSTICS = ("yaw", *(f"{n}_ratio" for n in SPREAD_NAMES), *(f"part_{g}" for g in PART_GROUPS))


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def left_right_axis(j17: torch.Tensor) -> torch.Tensor:
    """(N, 17, 3) H36M joints -> (N, 3) unit axis pointing to the body's left (hips and
    shoulders averaged)."""
    hips = _unit(j17[:, _H36M["L_Hip"]] - j17[:, _H36M["R_Hip"]])
    shoulders = _unit(j17[:, _H36M["L_Shoulder"]] - j17[:, _H36M["R_Shoulder"]])
    return _unit(hips + shoulders)


def yaw_error(pred_j17: torch.Tensor, gt_j17: torch.Tensor) -> torch.Tensor:
    """(N, 17, 3) predicted and ground-truth H36M joints -> (N,) float64 degrees in [0, 180]:
    the angle between the left-right axes about the ground truth's spine (pelvis -> neck)."""
    pred_j17, gt_j17 = pred_j17.double(), gt_j17.double()
    up = _unit(gt_j17[:, _H36M["Neck"]] - gt_j17[:, _H36M["Pelvis"]])          # (N, 3)

    def flat(axis: torch.Tensor) -> torch.Tensor:
        return axis - (axis * up).sum(-1, keepdim=True) * up

    a, b = flat(left_right_axis(pred_j17)), flat(left_right_axis(gt_j17))
    angle = torch.atan2(torch.cross(a, b, dim=-1).norm(dim=-1), (a * b).sum(-1))
    return torch.rad2deg(angle)


def principal_spreads(vertices: torch.Tensor) -> torch.Tensor:
    """(N, V, 3) -> (N, 3) standard deviations along the principal axes, largest first."""
    centred = vertices.double() - vertices.double().mean(dim=1, keepdim=True)
    cov = centred.transpose(1, 2) @ centred / vertices.shape[1]                  # (N, 3, 3)
    return torch.linalg.eigvalsh(cov).clamp_min(0.0).flip(-1).sqrt()


def part_vertex_groups(part_labels: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """(V,) SMPL joint index per vertex -> {group: vertex indices} for PART_GROUPS."""
    labels = np.asarray(part_labels).reshape(-1)
    return {group: np.flatnonzero(np.isin(labels, [SMPL_JOINT_NAMES.index(n) for n in names]))
            for group, names in PART_GROUPS.items()}


def frame_diagnostics(pred_vertices: torch.Tensor, gt_vertices: torch.Tensor,
                      gt_h36m: torch.Tensor, regressor: torch.Tensor,
                      groups: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """pred_vertices, gt_vertices (N, V, 3), gt_h36m (N, 17, 3) metres, regressor (17, V),
    groups from `part_vertex_groups` -> {DIAGNOSTICS name: (N,) float64}: yaw in degrees,
    spread ratios, part errors in mm (NaN for an empty group)."""
    pred, gt = pred_vertices.double(), gt_vertices.double()
    gt_h36m = gt_h36m.double()
    pred_j17 = regressor.double() @ pred
    out = {"yaw": yaw_error(pred_j17, gt_h36m)}
    ratios = principal_spreads(pred) / principal_spreads(gt).clamp_min(1e-9)
    for k, name in enumerate(SPREAD_NAMES):
        out[f"{name}_ratio"] = ratios[:, k]
    pred_c = pred - mesh_pelvis(pred, regressor.double())[:, None]
    gt_c = gt - mesh_pelvis(gt, regressor.double())[:, None]
    vertex_mm = (pred_c - gt_c).norm(dim=-1) * 1000.0                           # (N, V)
    for group, index in groups.items():
        out[f"part_{group}"] = (vertex_mm[:, index].mean(dim=1) if len(index)
                                else torch.full((len(pred),), float("nan"), dtype=torch.float64))
    return out


def _finite(values) -> np.ndarray:
    values = np.asarray(values, np.float64).reshape(-1)
    return values[np.isfinite(values)]


def median_or_nan(values) -> float:
    finite = _finite(values)
    return float(np.median(finite)) if len(finite) else float("nan")


def summarize_diagnostics(columns: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per-frame diagnostic columns of one model (those present) -> yaw_median / yaw_mean (deg),
    yaw_over_90 (fraction of frames facing more than 90 degrees off), median spread ratios,
    mean part errors (mm). NaN where there is no frame."""
    out: dict[str, float] = {}
    if "yaw" in columns:
        yaw = _finite(columns["yaw"])
        out["yaw_median"] = median_or_nan(yaw)
        out["yaw_mean"] = float(yaw.mean()) if len(yaw) else float("nan")
        out["yaw_over_90"] = float((yaw > 90.0).mean()) if len(yaw) else float("nan")
    for name in DIAGNOSTICS[1:]:
        if name in columns:
            values = _finite(columns[name])
            summary = np.median if name.endswith("_ratio") else np.mean
            out[name] = float(summary(values)) if len(values) else float("nan")
    return out
