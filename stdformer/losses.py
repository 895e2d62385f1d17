"""Training losses of STDFormer / FastMETRO (3DPW recipe, reference section 2).

total = 1000 x [3D joints from tokens + 3D J14 regressed from the fine mesh + velocity of both]
      +  100 x sum_l w_l [vertices_l + vertex velocity_l],  w = {coarse 0.25, mid 0.5, fine 0.25}
      +  100 x [5 x edge length vs GT + 1e-4 x edge length self + 0.1 x normal consistency] (mid)
      +  100 x [2D joints (tokens and mesh, weak-perspective camera) + their velocity]

Position terms are L1 (mean absolute coordinate error); velocity terms are the mean over frame
pairs and points of || (p_t - p_{t-1}) - (g_t - g_{t-1}) ||_2.

Shapes: B clips of S frames; P points (14 joints or V_l vertices). Every term is first computed
per frame, (B, S), or per consecutive frame pair, (B, S-1), then averaged over the valid frames
(pairs with both frames valid) only. Invalid frames are zeroed before any arithmetic, so their
contents (even NaN) change neither the loss nor its gradient. With no valid frame the loss is
an exact zero that is still part of the autograd graph.

Joints-only frames (a source without body model fits, e.g. MPI-INF-3DHP): target `mesh_valid`
(B, S) False. The terms that compare against the ground-truth mesh (vertices and their velocity,
edge lengths vs GT, normals) average over frames that are valid and have a mesh only, and the
ground-truth mesh of the others is zeroed before any arithmetic, like an invalid frame's; the
3D/2D joint terms (tokens and the joints regressed from the predicted mesh) and the
ground-truth-free edge term still use every valid frame.

Centring (FastMETRO's training code, so its camera head keeps its meaning): 3D joint terms on
the mid-hip of J14; meshes (every level) on the pelvis of their own fine mesh, joint 0 of the
H36M-17 regression (the J14 mid-hip for a 14-row regressor). The camera projects token joints
centred on their mid-hip and mesh joints centred on the mesh's pelvis. Ground truth is centred
the same way, so targets may come centred or not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from stdformer.body.constants import J14_FROM_H36M
from stdformer.metrics import J14_HIPS

LEVELS = ("coarse", "mid", "fine")

# A regressor from the fine mesh: a (14, V) or (17, V) matrix, or a callable
# vertices (N, V, 3) -> joints (N, 14 or 17, 3).
Regressor = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class LossConfig:
    """Weights (defaults = the published 3DPW recipe) and on/off switches for every term."""

    weight_joints3d: float = 1000.0
    weight_vertices: float = 100.0
    weight_edge_normal: float = 100.0
    weight_joints2d: float = 100.0
    level_weights: tuple[float, ...] = (0.25, 0.5, 0.25)   # coarse, mid, fine
    edge_gt_weight: float = 5.0
    edge_self_weight: float = 1e-4
    normal_weight: float = 0.1
    joints3d_tokens: bool = True
    joints3d_mesh: bool = True
    joints3d_velocity: bool = True     # velocity of whichever 3D joint sets are on
    vertices: bool = True
    vertices_velocity: bool = True
    edge_gt: bool = True
    edge_self: bool = True
    normal: bool = True
    joints2d_tokens: bool = True
    joints2d_mesh: bool = True
    joints2d_velocity: bool = True     # velocity of whichever 2D joint sets are on

    def validate(self) -> None:
        if len(self.level_weights) != 3:
            raise ValueError(f"level_weights needs 3 values (coarse, mid, fine), "
                             f"got {list(self.level_weights)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if not isinstance(value, bool) and any(v < 0 for v in values):
                raise ValueError(f"{f.name} must be >= 0, got {value}")


@dataclasses.dataclass
class MeshInfo:
    """Fixed mesh data the loss needs.

    joint_regressor: (14, V) or (17, V) matrix for the fine mesh, or a callable
        vertices (N, V, 3) -> (N, 14 | 17, 3); 17 rows are H36M-17, reduced by J14_FROM_H36M.
    mid_faces: (F, 3) int faces of the mid level (edge and normal terms).
    mid_edges: (E, 2) int unique edges of the mid level; derived from mid_faces when None.
    """

    joint_regressor: Regressor
    mid_faces: torch.Tensor
    mid_edges: torch.Tensor | None = None

    def __post_init__(self):
        self.mid_faces = torch.as_tensor(self.mid_faces, dtype=torch.long)
        if self.mid_edges is None:
            self.mid_edges = edges_from_faces(self.mid_faces)
        self.mid_edges = torch.as_tensor(self.mid_edges, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Geometry helpers


def edges_from_faces(faces: torch.Tensor) -> torch.Tensor:
    """faces (F, 3) -> unique undirected edges (E, 2), each as (low, high), sorted."""
    faces = torch.as_tensor(faces, dtype=torch.long)
    pairs = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])   # (3F, 2)
    pairs, _ = pairs.sort(dim=1)
    return torch.unique(pairs, dim=0)


def regress_joints(vertices: torch.Tensor, regressor: Regressor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """vertices (..., V, 3) -> (j14 (..., 14, 3), mesh pelvis (..., 3)).

    The mesh pelvis is H36M joint 0 for a 17-row regressor, else the J14 mid-hip.
    """
    if callable(regressor) and not isinstance(regressor, torch.Tensor):
        lead = vertices.shape[:-2]
        joints = regressor(vertices.reshape(-1, *vertices.shape[-2:]))
        joints = joints.reshape(*lead, *joints.shape[-2:])
    else:
        matrix = torch.as_tensor(regressor).to(vertices)
        joints = matrix @ vertices                                          # (..., J, 3)
    if joints.shape[-2] == 17:
        return joints[..., list(J14_FROM_H36M), :], joints[..., 0, :]
    if joints.shape[-2] == 14:
        return joints, mid_hip(joints)
    raise ValueError(f"joint regressor must give 14 or 17 joints, got {joints.shape[-2]}")


def mid_hip(j14: torch.Tensor) -> torch.Tensor:
    """(..., 14, 3) -> (..., 3)."""
    return 0.5 * (j14[..., J14_HIPS[0], :] + j14[..., J14_HIPS[1], :])


def project_weak_perspective(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """points (..., P, 3), cam (..., 3) = (s, tx, ty) -> (..., P, 2) = s * (X_xy + [tx, ty])."""
    return cam[..., None, :1] * (points[..., :2] + cam[..., None, 1:])


# --------------------------------------------------------------------------------------------
# Per-frame terms: inputs (B, S, P, C), outputs (B, S) or, for velocities, (B, S-1)


def l1_per_frame(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(B, S, P, C) x2 -> (B, S): mean absolute coordinate error."""
    return (pred - gt).abs().mean(dim=(-1, -2))


def l1_visible_per_frame(pred: torch.Tensor, gt: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """(B, S, P, C) x2, vis (B, S, P) -> (B, S).

    Invisible points contribute 0 but still count in the mean (FastMETRO's 2D keypoint loss).
    """
    return (vis[..., None] * (pred - gt).abs()).mean(dim=(-1, -2))


def velocity_per_pair(pred: torch.Tensor, gt: torch.Tensor,
                      vis: torch.Tensor | None = None) -> torch.Tensor:
    """(B, S, P, C) x2 -> (B, S-1): mean over points of ||(p_t - p_{t-1}) - (g_t - g_{t-1})||_2.

    With vis (B, S, P), a point counts only when visible in both frames (others give 0).
    """
    diff = (pred[:, 1:] - pred[:, :-1]) - (gt[:, 1:] - gt[:, :-1])         # (B, S-1, P, C)
    dist = torch.linalg.vector_norm(diff, dim=-1)                          # (B, S-1, P)
    if vis is not None:
        dist = dist * (vis[:, 1:] * vis[:, :-1])
    return dist.mean(dim=-1)


def _edge_lengths(vertices: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """(B, S, V, 3), edges (E, 2) -> (B, S, E)."""
    return torch.linalg.vector_norm(vertices[..., edges[:, 0], :] - vertices[..., edges[:, 1], :],
                                    dim=-1)


def edge_length_gt_per_frame(pred: torch.Tensor, gt: torch.Tensor,
                             edges: torch.Tensor) -> torch.Tensor:
    """(B, S, V, 3) x2, edges (E, 2) -> (B, S): mean |len_pred - len_gt| over edges."""
    return (_edge_lengths(pred, edges) - _edge_lengths(gt, edges)).abs().mean(dim=-1)


def edge_length_self_per_frame(pred: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """(B, S, V, 3), edges (E, 2) -> (B, S): mean edge length (a small shrink regulariser)."""
    return _edge_lengths(pred, edges).mean(dim=-1)


def normal_consistency_per_frame(pred: torch.Tensor, gt: torch.Tensor,
                                 faces: torch.Tensor) -> torch.Tensor:
    """(B, S, V, 3) x2, faces (F, 3) -> (B, S).

    Mean over faces and the 3 predicted edge directions of |cos(edge, GT face normal)|: zero
    when every predicted face lies in the plane of its GT face.
    """
    def corners(v):
        return v[..., faces[:, 0], :], v[..., faces[:, 1], :], v[..., faces[:, 2], :]

    p0, p1, p2 = corners(pred)
    g0, g1, g2 = corners(gt)
    normal = F.normalize(torch.cross(g1 - g0, g2 - g0, dim=-1), dim=-1)    # (B, S, F, 3)
    cos = [(F.normalize(e, dim=-1) * normal).sum(dim=-1).abs()
           for e in (p1 - p0, p2 - p0, p2 - p1)]
    return torch.stack(cos, dim=-1).mean(dim=(-1, -2))


# --------------------------------------------------------------------------------------------
# Masked averaging


def masked_frame_mean(per_frame: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """per_frame (B, S'), mask (B, S') bool -> scalar mean over masked-in entries (0 if none)."""
    weight = mask.to(per_frame.dtype)
    return (per_frame * weight).sum() / weight.sum().clamp_min(1.0)


def _zero_invalid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x (B, S, ...), valid (B, S) -> x with invalid frames set to 0 (gradient 0 there)."""
    keep = valid.reshape(*valid.shape, *([1] * (x.dim() - valid.dim())))
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _get(d: Mapping, key: str, name: str, valid: torch.Tensor) -> torch.Tensor:
    """d[key] with invalid frames zeroed; a clear error when an enabled term lacks its input."""
    if key not in d:
        raise KeyError(f"{name}[{key!r}] is required by the enabled loss terms")
    x = torch.as_tensor(d[key])
    if x.shape[:2] != valid.shape:
        raise ValueError(f"{name}[{key!r}] has shape {tuple(x.shape)}, expected (B, S) = "
                         f"{tuple(valid.shape)} leading")
    return _zero_invalid(x, valid)


# --------------------------------------------------------------------------------------------
# The full loss


def compute_losses(pred: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                   cfg: LossConfig, mesh_info: MeshInfo
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted STDFormer loss over a batch of clips.

    pred: joints3d (B, S, 14, 3) from the joint tokens; vertices_coarse / vertices_mid /
        vertices_fine (B, S, V_l, 3); cam (B, S, 3) weak-perspective (s, tx, ty).
    target: joints3d (B, S, 14, 3); joints2d (B, S, 14, 2) in crop coords [-1, 1];
        joints2d_vis (B, S, 14) in [0, 1]; vertices_coarse / vertices_mid / vertices_fine
        (B, S, V_l, 3); valid (B, S) bool; mesh_valid (B, S) bool, optional (default: all
        True): False on frames without a ground-truth mesh (joints only).
    Only the keys the enabled terms use are read.
    Returns (total scalar tensor, {name: float}) with every enabled raw (unweighted) term,
    the weighted groups loss_joints3d / loss_vertices / loss_edge_normal / loss_joints2d, and
    total.
    """
    if "valid" not in target:
        raise KeyError("target['valid'] (B, S) bool is required")
    valid = torch.as_tensor(target["valid"], dtype=torch.bool)
    pair_valid = valid[:, 1:] & valid[:, :-1]                               # (B, S-1)
    mesh_valid = valid
    if "mesh_valid" in target:
        mesh_valid = valid & torch.as_tensor(target["mesh_valid"], dtype=torch.bool,
                                             device=valid.device).reshape(valid.shape)
    mesh_pair_valid = mesh_valid[:, 1:] & mesh_valid[:, :-1]               # (B, S-1)

    def from_pred(key):
        return _get(pred, key, "pred", valid)

    def from_target(key):
        return _get(target, key, "target", valid)

    def mesh_target(key):  # the ground-truth mesh: zero where there is none
        return _get(target, key, "target", mesh_valid)

    # A zero tied to the prediction, so the total is differentiable even with every term off
    present = [k for k in ("joints3d", "vertices_fine", "vertices_mid", "vertices_coarse", "cam")
               if k in pred]
    if not present:
        raise KeyError("pred holds none of joints3d, vertices_*, cam")
    anchor = from_pred(present[0])
    terms: dict[str, torch.Tensor] = {}

    def add(name: str, per_frame: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        terms[name] = masked_frame_mean(per_frame, mask)
        return terms[name]

    need_mesh = (cfg.joints3d_mesh or cfg.joints2d_mesh or cfg.vertices)
    if need_mesh:
        regressor = mesh_info.joint_regressor
        pred_fine = from_pred("vertices_fine")
        gt_fine = mesh_target("vertices_fine")
        pred_mesh_j14, pred_pelvis = regress_joints(pred_fine, regressor)  # (B,S,14,3), (B,S,3)
        _, gt_pelvis = regress_joints(gt_fine, regressor)

    # Joint sets that are on: name -> predicted J14 (B, S, 14, 3), centred as in FastMETRO's
    # training code, so an imported camera head keeps its meaning: token joints on their own
    # mid-hip, mesh joints on the mesh's pelvis (H36M joint 0). The camera projects these;
    # the 3D terms re-centre both on the mid-hip.
    joints = {}
    if cfg.joints3d_tokens or cfg.joints2d_tokens:
        tokens = from_pred("joints3d")
        joints["tokens"] = tokens - mid_hip(tokens)[..., None, :]
    if cfg.joints3d_mesh or cfg.joints2d_mesh:
        joints["mesh"] = pred_mesh_j14 - pred_pelvis[..., None, :]

    # 3D joints
    group_j3d = anchor.new_zeros(())
    sets_3d = [s for s in ("tokens", "mesh") if getattr(cfg, f"joints3d_{s}")]
    if sets_3d:
        gt_j3d = from_target("joints3d")
        gt_j3d = gt_j3d - mid_hip(gt_j3d)[..., None, :]
        for s in sets_3d:
            pred_j3d = joints[s] - mid_hip(joints[s])[..., None, :]
            group_j3d = group_j3d + add(f"joints3d_{s}", l1_per_frame(pred_j3d, gt_j3d), valid)
            if cfg.joints3d_velocity:
                group_j3d = group_j3d + add(f"joints3d_{s}_vel",
                                            velocity_per_pair(pred_j3d, gt_j3d), pair_valid)

    # Vertices at three levels, each centred on its fine mesh's pelvis
    group_vert = anchor.new_zeros(())
    if cfg.vertices:
        for level, w in zip(LEVELS, cfg.level_weights):
            p = from_pred(f"vertices_{level}") - pred_pelvis[..., None, :]
            g = mesh_target(f"vertices_{level}") - gt_pelvis[..., None, :]
            group_vert = group_vert + w * add(f"vertices_{level}", l1_per_frame(p, g),
                                              mesh_valid)
            if cfg.vertices_velocity:
                group_vert = group_vert + w * add(f"vertices_{level}_vel",
                                                  velocity_per_pair(p, g), mesh_pair_valid)

    # Edge lengths and normals on the mid mesh (translation-invariant: no centring needed)
    group_edge = anchor.new_zeros(())
    if cfg.edge_gt or cfg.edge_self or cfg.normal:
        p_mid = from_pred("vertices_mid")
        edges = mesh_info.mid_edges.to(p_mid.device)
        if cfg.edge_gt:
            g_mid = mesh_target("vertices_mid")
            group_edge = group_edge + cfg.edge_gt_weight * add(
                "edge_gt", edge_length_gt_per_frame(p_mid, g_mid, edges), mesh_valid)
        if cfg.edge_self:
            group_edge = group_edge + cfg.edge_self_weight * add(
                "edge_self", edge_length_self_per_frame(p_mid, edges), valid)
        if cfg.normal:
            g_mid = mesh_target("vertices_mid")
            faces = mesh_info.mid_faces.to(p_mid.device)
            group_edge = group_edge + cfg.normal_weight * add(
                "normal", normal_consistency_per_frame(p_mid, g_mid, faces), mesh_valid)

    # 2D joints through the weak-perspective camera
    group_j2d = anchor.new_zeros(())
    sets_2d = [s for s in ("tokens", "mesh") if getattr(cfg, f"joints2d_{s}")]
    if sets_2d:
        cam = from_pred("cam")
        gt_j2d = from_target("joints2d")
        vis = from_target("joints2d_vis").to(gt_j2d.dtype)
        gt_j2d = torch.where(vis[..., None] > 0, gt_j2d, torch.zeros_like(gt_j2d))
        for s in sets_2d:
            p2d = project_weak_perspective(joints[s], cam)                 # (B, S, 14, 2)
            group_j2d = group_j2d + add(f"joints2d_{s}",
                                        l1_visible_per_frame(p2d, gt_j2d, vis), valid)
            if cfg.joints2d_velocity:
                group_j2d = group_j2d + add(f"joints2d_{s}_vel",
                                            velocity_per_pair(p2d, gt_j2d, vis), pair_valid)

    groups = {
        "loss_joints3d": cfg.weight_joints3d * group_j3d,
        "loss_vertices": cfg.weight_vertices * group_vert,
        "loss_edge_normal": cfg.weight_edge_normal * group_edge,
        "loss_joints2d": cfg.weight_joints2d * group_j2d,
    }
    total = 0.0 * anchor.sum() + sum(groups.values())
    report = {name: float(v.detach()) for name, v in {**terms, **groups}.items()}
    report["total"] = float(total.detach())
    return total, report
