"""Camera-frame, root-relative 3D targets of one actor track from the body model (SMPL).

World joints from (pose, betas, trans) composed with cam_poses (`pose_track` of
stdformer.body.track_posing: linear blend skinning, of the vertices the H36M regressor reads,
with the camera on the joint transforms), then relative to the SMPL pelvis; the global
orientation rotated into the camera (the mesh is posed from it where it is used:
BodyModel.shard_mesh, `camera_mesh`); projection with the intrinsics.
Track arrays are checked (shape, finite) with DataErrors naming the pickle and field.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from stdformer.body.track_posing import PosingArrays, pose_track
from stdformer.io import DataError


def camera_pose(poses: np.ndarray, cam_poses: np.ndarray) -> np.ndarray:
    """poses (N,72) world axis-angle -> (N,72) with the global orientation in the camera."""
    out = poses.astype(np.float64).copy()
    world = Rotation.from_rotvec(out[:, :3])
    out[:, :3] = (Rotation.from_matrix(cam_poses[:, :3, :3]) * world).as_rotvec()
    return out


def project(points_cam: np.ndarray, intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """points (N,P,3) camera -> pixels (N,P,2), in_front (N,P) bool."""
    z = points_cam[..., 2]
    in_front = z > 1e-6
    uvw = points_cam @ intrinsics.T
    uv = uvw[..., :2] / np.where(in_front, z, 1.0)[..., None]
    return uv, in_front


def checked_array(track, name: str, shape: tuple, pkl: str, field: str) -> np.ndarray:
    """Track array `name` as float64, or a DataError naming the pickle and its `field`."""
    arr = np.asarray(getattr(track, name), dtype=np.float64)
    if arr.shape != tuple(shape):
        raise DataError(pkl, f"expected shape {tuple(shape)}, got {arr.shape}", field=field)
    if not np.isfinite(arr).all():
        rows = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))
        raise DataError(pkl, f"contains NaN or inf (first at row {rows[0]})", field=field)
    return arr


def _track_betas(track, n: int, pkl: str) -> np.ndarray:
    """(N,10) betas: the track's one shape (3DPW) repeated, or its per-frame shapes."""
    betas = np.asarray(track.betas, dtype=np.float64)
    field = f"betas[{track.actor}]"
    if betas.ndim == 2:
        if betas.shape != (n, 10) or not np.isfinite(betas).all():
            raise DataError(pkl, f"need ({n}, 10) finite per-frame betas, got {betas.shape}",
                            field=field)
        return betas
    betas = betas.reshape(-1)
    if betas.size < 10 or not np.isfinite(betas[:10]).all():
        raise DataError(pkl, f"need 10 finite betas, got {betas[:10]}", field=field)
    return np.tile(betas[:10], (n, 1))


def body_targets(track, arrays: PosingArrays, pkl: str) -> dict[str, np.ndarray]:
    """Camera-frame, root-relative 3D targets of every frame of a track, posed with the body's
    `arrays` (`PosingArrays.load(body_dir)`; preprocess keeps one per process).

    Returns joints3d (N,24,3), joints_h36m (N,17,3), root_cam (N,3), joints_h36m_cam (N,17,3)
    (absolute, for projection), pose (N,72) camera-frame, betas (N,10): the mesh is posed from
    pose and betas where it is needed (`BodyModel.shard_mesh`, `camera_mesh`). A track with
    annotated H36M joints (`joints_h36m_cam`, Human3.6M's mocap) has those as its H36M targets,
    relative to the fit's SMPL pelvis like the regressed ones. A joints-only track
    (`has_mesh` False) gets `joints_only_targets`.
    """
    n = len(track.image_paths)
    if not getattr(track, "has_mesh", True):
        return joints_only_targets(track, pkl)
    actor = track.actor
    poses = checked_array(track, "poses", (n, 72), pkl, f"poses[{actor}]")
    trans = checked_array(track, "trans", (n, 3), pkl, f"trans[{actor}]")
    betas = _track_betas(track, n, pkl)
    cam_poses = checked_array(track, "cam_poses", (n, 4, 4), pkl, "cam_poses")
    # One posing pass per distinct shape (3DPW: one; per-frame fits: up to one per frame).
    shapes, group = np.unique(betas, axis=0, return_inverse=True)
    joints, joints_h36m = np.empty((n, 24, 3)), np.empty((n, 17, 3), np.float32)
    for g, shape in enumerate(shapes):
        rows = np.flatnonzero(group.reshape(-1) == g)
        posed = pose_track(arrays, poses[rows], shape, trans[rows], cam_poses[rows])
        joints[rows], joints_h36m[rows] = posed["joints"], posed["joints_h36m"]
    if getattr(track, "joints_h36m_cam", None) is not None:
        joints_h36m = checked_array(track, "joints_h36m_cam", (n, 17, 3), pkl, "joint_3d")
    root = joints[:, :1, :]  # SMPL pelvis (N,1,3)
    return {
        "joints3d": joints - root,
        "joints_h36m": joints_h36m - root,
        "joints_h36m_cam": joints_h36m,
        "root_cam": root[:, 0],
        "pose": camera_pose(poses, cam_poses),
        "betas": betas,
    }


def joints_only_targets(track, pkl: str) -> dict[str, np.ndarray]:
    """The targets of a track without a body model fit (MPI-INF-3DHP), in `body_targets`'
    form: the annotated H36M-17 joints relative to their own pelvis (joint 0, which stands in
    for the SMPL pelvis: the loss and metrics centre on the J14 mid-hip anyway); SMPL joints,
    pose and betas zeros, and `has_mesh` (N,) False, which preprocess stores so that the loss's
    mesh terms skip these frames (the zeros pose a mean body, not this person)."""
    n = len(track.image_paths)
    joints = checked_array(track, "joints_h36m_cam", (n, 17, 3), pkl, "joints_h36m_cam")
    root = joints[:, 0]
    return {
        "joints3d": np.zeros((n, 24, 3)),
        "joints_h36m": joints - root[:, None],
        "joints_h36m_cam": joints,
        "root_cam": root,
        "pose": np.zeros((n, 72)),
        "betas": np.zeros((n, 10)),
        "has_mesh": np.zeros(n, bool),
    }


def camera_mesh(body: torch.nn.Module, targets: dict[str, np.ndarray]) -> np.ndarray:
    """The camera-frame mesh (N, V, 3) float32 of a track's `body_targets`, posed by `body` (a
    BodyModel, `shard_mesh`) and placed at the pelvis (root_cam)."""
    mesh = body.shard_mesh(torch.from_numpy(targets["pose"]), torch.from_numpy(targets["betas"]))
    return mesh.cpu().numpy() + targets["root_cam"][:, None].astype(np.float32)
