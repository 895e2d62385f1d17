"""Per-frame errors (reference section 4) and the training set's mean pose, shared by
training's validation and `evaluate` (stdformer/scoring/track_scores.py scores merged tracks with
`frame_errors`).

J14 joints come from the H36M-17 regressor applied to the predicted fine mesh (the published
protocol), ground truth from the shards' `joints_h36m`; both are root aligned on their own
mid-hip. Meshes are compared centred on their own pelvis, H36M joint 0 regressed from each mesh
(MPVPE, as FastMETRO's evaluation). Only valid frames count.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from stdformer.metrics import (
    j14_from_h36m,
    j14_pelvis,
    mesh_pelvis,
    mpjpe,
    mpvpe,
    pa_mpjpe,
    root_align,
)


def frame_errors(pred_vertices: torch.Tensor, gt_vertices: torch.Tensor,
                 gt_h36m: torch.Tensor, regressor: torch.Tensor) -> dict[str, torch.Tensor]:
    """pred_vertices, gt_vertices (N, V, 3), gt_h36m (N, 17, 3), regressor (17, V) -> per-frame
    mm errors {mpjpe, pa_mpjpe, mpvpe: (N,) float64}."""
    regressor = regressor.to(pred_vertices)
    gt_vertices = gt_vertices.to(pred_vertices)
    pred_j14 = j14_from_h36m(regressor @ pred_vertices)                       # (N, 14, 3)
    gt_j14 = j14_from_h36m(gt_h36m.to(pred_vertices))
    pred_aligned, gt_aligned = root_align(pred_j14), root_align(gt_j14)
    return {
        "mpjpe": mpjpe(pred_aligned, gt_aligned),
        "pa_mpjpe": pa_mpjpe(pred_aligned, gt_aligned),
        "mpvpe": mpvpe(pred_vertices, gt_vertices, mesh_pelvis(pred_vertices, regressor),
                       mesh_pelvis(gt_vertices, regressor)),
    }


# --------------------------------------------------------------------------------------------
# Mean-pose baseline


@torch.no_grad()
def mean_pose(clips: Iterable[tuple[str, dict]], body: torch.nn.Module
              ) -> tuple[torch.Tensor, int]:
    """Mean pelvis-centred mesh over the valid frames of `clips` ((key, {pose (S, 72), betas
    (S, 10), joints_h36m (S, 17, 3), valid (S,)}) pairs; meshes posed by `body`, a BodyModel).
    Returns (vertices (V, 3) float64, frames).

    Each mesh is centred on the mid-hip of its J14 (from joints_h36m), so the mean mesh's own
    regressed J14, root aligned, is the mean root-relative J14 pose (the regressor is linear
    and its rows sum to one)."""
    total, count = None, 0
    for _, arrays in clips:
        valid = torch.as_tensor(arrays["valid"]).bool()
        if not valid.any():
            continue
        pose, betas = (torch.as_tensor(arrays[k])[valid] for k in ("pose", "betas"))
        verts = body.shard_mesh(pose, betas).cpu().double()                    # (n, V, 3)
        pelvis = j14_pelvis(j14_from_h36m(torch.as_tensor(arrays["joints_h36m"]).double()[valid]))
        centred = (verts - pelvis[:, None, :]).sum(dim=0)
        total = centred if total is None else total + centred
        count += int(valid.sum())
    if total is None:
        raise ValueError("no valid frame to average")
    return total / count, count
