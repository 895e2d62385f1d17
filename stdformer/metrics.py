"""3DPW evaluation metrics: MPJPE, PA-MPJPE, MPVPE, acceleration error (the published protocol).

Conventions (reference section 4):
* Inputs are in metres; every metric is returned per frame (or per acceleration term) in the
  units of the published tables: mm, and mm/frame^2 for acceleration.
* Joints are the 14 "common" joints (J14) taken from the H36M-17 regression by `J14_FROM_H36M`;
  the pelvis is the mid-hip (mean of J14[2] and J14[3]), subtracted separately from prediction
  and ground truth (`root_align`).
* MPVPE centres each mesh on its own pelvis, H36M-17 joint 0 regressed from that mesh
  (`mesh_pelvis`), as FastMETRO's and STDFormer's evaluation code does (the J14 mid-hip would
  differ slightly).
* Everything is computed in float64 (Procrustes SVDs and second differences lose precision in
  float32); inputs may be float32 tensors or numpy arrays.
* Functions are pure and vectorised over frames; masks (`valid`) say which frames count, and
  `summarize` averages over frames (never over sequences first).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from stdformer.body.constants import J14_FROM_H36M  # index of each J14 joint in H36M-17

# J14 order: R_Ankle, R_Knee, R_Hip, L_Hip, L_Knee, L_Ankle, R_Wrist, R_Elbow, R_Shoulder,
# L_Shoulder, L_Elbow, L_Wrist, Neck, Head-top. The pelvis is the midpoint of the two hips.
J14_HIPS = (2, 3)

M_TO_MM = 1000.0


def _f64(x) -> torch.Tensor:
    return torch.as_tensor(x).to(torch.float64)


# --------------------------------------------------------------------------------------------
# Joint sets and root alignment


def j14_from_h36m(joints17: torch.Tensor) -> torch.Tensor:
    """(..., 17, 3) H36M-17 joints -> (..., 14, 3) J14 joints."""
    if joints17.shape[-2] != 17:
        raise ValueError(f"expected 17 H36M joints on axis -2, got shape {tuple(joints17.shape)}")
    return joints17[..., list(J14_FROM_H36M), :]


def j14_pelvis(j14: torch.Tensor) -> torch.Tensor:
    """(..., 14, 3) -> (..., 3): the mid-hip."""
    return 0.5 * (j14[..., J14_HIPS[0], :] + j14[..., J14_HIPS[1], :])


def root_align(j14: torch.Tensor) -> torch.Tensor:
    """(..., 14, 3) -> (..., 14, 3) with the mid-hip moved to the origin."""
    return j14 - j14_pelvis(j14)[..., None, :]


# --------------------------------------------------------------------------------------------
# Per-frame position errors


def mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error. pred, gt (N, J, 3) metres -> (N,) mm.

    No alignment happens here: pass root-aligned joints for the MPJPE of the tables.
    """
    pred, gt = _f64(pred), _f64(gt)
    return torch.linalg.vector_norm(pred - gt, dim=-1).mean(dim=-1) * M_TO_MM


def procrustes_transform(pred: torch.Tensor, gt: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Similarity transform (scale, rotation, translation) best mapping pred onto gt, per frame.

    pred, gt (N, J, 3) -> scale (N,), rotation (N, 3, 3), translation (N, 3), such that
    `scale * pred @ R^T + t` is the least-squares fit to gt. R is a proper rotation
    (det = +1): a reflection would make a mirrored prediction look perfect, so the sign of the
    smallest singular direction is flipped when needed (Umeyama 1991).
    """
    pred, gt = _f64(pred), _f64(gt)
    mu_pred, mu_gt = pred.mean(dim=-2, keepdim=True), gt.mean(dim=-2, keepdim=True)  # (N, 1, 3)
    x, y = pred - mu_pred, gt - mu_gt                                                 # (N, J, 3)
    cov = x.transpose(-1, -2) @ y                                                     # (N, 3, 3)
    u, s, vh = torch.linalg.svd(cov)
    v = vh.transpose(-1, -2)
    # d = sign(det(V U^T)); a zero determinant (degenerate input) counts as +1
    det = torch.linalg.det(v @ u.transpose(-1, -2))
    d = torch.where(det < 0, -torch.ones_like(det), torch.ones_like(det))             # (N,)
    fix = torch.ones_like(s)
    fix[:, -1] = d
    rotation = v @ torch.diag_embed(fix) @ u.transpose(-1, -2)                        # (N, 3, 3)
    var_pred = (x ** 2).sum(dim=(-1, -2))                                             # (N,)
    scale = (s * fix).sum(dim=-1) / var_pred.clamp_min(torch.finfo(torch.float64).tiny)
    translation = mu_gt[:, 0] - scale[:, None] * (rotation @ mu_pred[:, 0, :, None])[..., 0]
    return scale, rotation, translation


def procrustes_align(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """pred, gt (N, J, 3) -> pred (N, J, 3) after the best similarity transform onto gt."""
    scale, rotation, translation = procrustes_transform(pred, gt)
    pred = _f64(pred)
    return scale[:, None, None] * pred @ rotation.transpose(-1, -2) + translation[:, None, :]


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Procrustes-aligned MPJPE. pred, gt (N, J, 3) metres -> (N,) mm."""
    return mpjpe(procrustes_align(pred, gt), gt)


def mesh_pelvis(vertices: torch.Tensor, regressor: torch.Tensor) -> torch.Tensor:
    """vertices (..., V, 3), H36M regressor (17, V) -> (..., 3): H36M joint 0 of the mesh."""
    return torch.einsum("v,...vc->...c", regressor[0].to(vertices), vertices)


def mpvpe(pred_verts: torch.Tensor, gt_verts: torch.Tensor,
          pred_pelvis: torch.Tensor, gt_pelvis: torch.Tensor) -> torch.Tensor:
    """Mean per-vertex position error, each mesh centred on its own pelvis (the protocol:
    `mesh_pelvis` of each mesh).

    pred_verts, gt_verts (N, V, 3); pred_pelvis, gt_pelvis (N, 3); metres -> (N,) mm.
    """
    pred = _f64(pred_verts) - _f64(pred_pelvis)[:, None, :]
    gt = _f64(gt_verts) - _f64(gt_pelvis)[:, None, :]
    return mpjpe(pred, gt)


# --------------------------------------------------------------------------------------------
# Acceleration error


def _second_difference(x: torch.Tensor) -> torch.Tensor:
    """(T, J, 3) -> (T-2, J, 3): a_t = X_{t-1} - 2 X_t + X_{t+1} for t = 1..T-2."""
    return x[:-2] - 2.0 * x[1:-1] + x[2:]


def _accel_terms(pred: torch.Tensor, gt: torch.Tensor, term_ok: torch.Tensor) -> torch.Tensor:
    """pred, gt (T, J, 3); term_ok (T-2,) bool -> (T-2,) mm/frame^2, NaN where not term_ok."""
    diff = _second_difference(_f64(pred)) - _second_difference(_f64(gt))
    values = torch.linalg.vector_norm(diff, dim=-1).mean(dim=-1) * M_TO_MM
    return torch.where(term_ok, values, torch.full_like(values, float("nan")))


def accel_error(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Acceleration error of one sequence.

    pred, gt (T, J, 3) root-aligned joints in metres, consecutive frames of ONE sequence (keep
    invalid frames in place so that differences never skip over a gap); valid (T,) bool.
    Returns values (T-2,) in mm/frame^2 (term k is centred on frame k+1) and mask (T-2,) bool,
    False where any of the term's three frames is invalid; dropped values are NaN.
    """
    valid = torch.as_tensor(valid, dtype=torch.bool)
    if pred.shape != gt.shape or pred.shape[0] != valid.shape[0]:
        raise ValueError(f"shape mismatch: pred {tuple(pred.shape)}, gt {tuple(gt.shape)}, "
                         f"valid {tuple(valid.shape)}")
    if valid.shape[0] < 3:
        empty = torch.zeros(0, dtype=torch.float64)
        return empty, torch.zeros(0, dtype=torch.bool)
    mask = valid[:-2] & valid[1:-1] & valid[2:]
    return _accel_terms(pred, gt, mask), mask


def accel_error_per_sequence(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor,
                             seq_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """Acceleration error over many sequences stacked along the frame axis.

    pred, gt (N, J, 3) root-aligned joints (metres); valid (N,) bool; seq_ids (N,) int, one id per
    frame. Each sequence's frames must be one contiguous run in temporal order (a repeated id in
    a second run raises ValueError: the input was shuffled or not grouped).
    Returns values (N,) mm/frame^2 and mask (N,) bool, aligned with the frames: the term centred
    on frame t sits at index t; the first and last frame of every sequence carry no term, and a
    term whose window crosses a sequence boundary or holds an invalid frame is dropped
    (mask False, value NaN).
    """
    valid = torch.as_tensor(valid, dtype=torch.bool)
    seq = torch.as_tensor(np.asarray(seq_ids)).to(torch.int64)
    n = seq.shape[0]
    if pred.shape != gt.shape or pred.shape[0] != n or valid.shape[0] != n:
        raise ValueError(f"shape mismatch: pred {tuple(pred.shape)}, gt {tuple(gt.shape)}, "
                         f"valid {tuple(valid.shape)}, seq_ids {tuple(seq.shape)}")
    run_starts = torch.ones(n, dtype=torch.bool)
    run_starts[1:] = seq[1:] != seq[:-1]
    run_ids = seq[run_starts]
    if torch.unique(run_ids).numel() != run_ids.numel():
        raise ValueError("seq_ids: each sequence's frames must form one contiguous run")
    values = torch.full((n,), float("nan"), dtype=torch.float64)
    mask = torch.zeros(n, dtype=torch.bool)
    if n < 3:
        return values, mask
    same_seq = (seq[:-2] == seq[1:-1]) & (seq[1:-1] == seq[2:])
    term_ok = same_seq & valid[:-2] & valid[1:-1] & valid[2:]
    values[1:-1] = _accel_terms(pred, gt, term_ok)
    mask[1:-1] = term_ok
    return values, mask


# --------------------------------------------------------------------------------------------
# Averaging


def summarize(per_frame: Mapping[str, object]) -> dict[str, float]:
    """Average per-frame metrics over frames (not over sequences).

    per_frame maps a metric name to either values (N,) (all frames count) or a pair
    (values (N,), mask (N,) bool) as returned by the accel functions. Returns {name: mean};
    NaN when no frame counts. A NaN among counted frames raises ValueError (a bug upstream).
    """
    out = {}
    for name in sorted(per_frame):
        item = per_frame[name]
        if isinstance(item, tuple):
            values, mask = _f64(item[0]), torch.as_tensor(item[1], dtype=torch.bool)
        else:
            values = _f64(item)
            mask = torch.ones_like(values, dtype=torch.bool)
        if values.shape != mask.shape:
            raise ValueError(f"{name}: values {tuple(values.shape)} vs mask {tuple(mask.shape)}")
        kept = values[mask]
        if torch.isnan(kept).any():
            raise ValueError(f"{name}: NaN in a counted frame")
        out[name] = float(kept.mean()) if kept.numel() else float("nan")
    return out
