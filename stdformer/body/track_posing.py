"""Linear blend skinning of one whole track in numpy (`pose_track`), straight into the camera
frame: the fast path preprocess poses its targets with. `BodyModel` (model.py, smplx in torch)
is the reference; the two agree to float32 rounding (tests/test_targets.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse
import torch
from scipy.spatial.transform import Rotation

from stdformer.body.model import read_body_dir


@contextlib.contextmanager
def _single_thread():
    """Body model runs single-threaded everywhere, so results (and bytes) do not depend on how
    many threads the process happens to use."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------
# Posing one track (fixed betas) straight into the camera frame

SPARSE_BELOW = 0.25  # density under which a posing matrix is multiplied as scipy CSR
# Frames per skinning pass: (V, 12 x CHUNK) float32 (10.6 MB at V = 6890) stays in the last-level
# cache; 32 makes a short track one pass (the per-pass products have a frame-long inner loop).
# The output does not depend on it (tests/test_targets.py), only the speed.
CHUNK = 32


def _matrix(m: np.ndarray):
    """float32 scipy CSR when mostly zeros (skinning weights: <= 4 joints a vertex; a
    procedural body's local pose correctives), else a dense torch tensor (BLAS)."""
    m = np.ascontiguousarray(m, dtype=np.float32)
    if np.count_nonzero(m) < SPARSE_BELOW * m.size:
        return scipy.sparse.csr_matrix(m)
    return torch.from_numpy(m)


def _matmul(m, x: np.ndarray) -> np.ndarray:
    """m (P, Q) from `_matrix` @ x (Q, R) float32 -> (P, R) float32."""
    if isinstance(m, torch.Tensor):
        return (m @ torch.from_numpy(np.ascontiguousarray(x))).numpy()
    return m @ x


@dataclass(frozen=True)
class PosingArrays:
    """What `pose_track` needs of a body model to pose a track's joints, in float32.

    Preprocess stores joints, not meshes (the mesh is posed from pose and betas where it is
    used: BodyModel.shard_mesh), so only the vertices the H36M regressor reads are
    skinned: `vertex_ids` (K,) of the body's V (331 of 6890 for the procedural body).
    v_template (K, 3), shapedirs (K, 3, 10), pose_basis (K*3, 207) (posedirs transposed),
    weights (K, 24), h36m (17, K): those vertices' rows (columns of the regressor), sparse or
    dense (`_matrix`); rest_joints (24, 3) and rest_joint_shapedirs (24, 3, 10) float64: the
    SMPL joint regressor applied to the whole template and shape basis; parents (24,) int (-1
    for the root).
    """

    body_model_id: str
    vertex_ids: np.ndarray
    v_template: np.ndarray
    shapedirs: np.ndarray
    pose_basis: Any
    weights: Any
    rest_joints: np.ndarray
    rest_joint_shapedirs: np.ndarray
    parents: np.ndarray
    h36m: Any
    h36m_rowsum: np.ndarray  # (17,) 1 for a regressor that is an exact weighted mean

    @classmethod
    def load(cls, body_dir) -> PosingArrays:
        """From a body directory (`read_body_dir`: validated, digest checked), without building
        the body's torch module: the arrays `BodyModel`'s smplx.SMPL holds, in float32 (its
        h36m regressor too, widened back to float64 for the regression)."""
        files = read_body_dir(body_dir)
        a = files.arrays
        num_betas = min(10, a["shapedirs"].shape[2])            # BodyModel.num_betas
        parents = a["kintree_table"][0].copy()
        parents[0] = -1
        h36m = files.J_regressor_h36m
        h36m = h36m.toarray() if scipy.sparse.issparse(h36m) else np.asarray(h36m)
        h36m = h36m.astype(np.float32).astype(np.float64)
        ids = np.flatnonzero(np.any(h36m != 0, axis=0))
        v_template = a["v_template"].astype(np.float32)
        shapedirs = a["shapedirs"][:, :, :num_betas].astype(np.float32)
        regressor = a["J_regressor"]
        regressor = (regressor.toarray() if scipy.sparse.issparse(regressor)
                     else np.asarray(regressor)).astype(np.float32).astype(np.float64)
        posedirs = a["posedirs"][ids]
        return cls(body_model_id=files.body_model_id, vertex_ids=ids,
                   v_template=v_template[ids], shapedirs=shapedirs[ids],
                   pose_basis=_matrix(posedirs.reshape(-1, posedirs.shape[-1])),
                   weights=_matrix(a["weights"][ids]),
                   rest_joints=regressor @ v_template,
                   rest_joint_shapedirs=np.einsum("jv,vcb->jcb", regressor, shapedirs),
                   parents=parents, h36m=_matrix(h36m[:, ids]), h36m_rowsum=h36m.sum(axis=1))


def joint_transforms(poses: np.ndarray, rest_joints: np.ndarray, parents: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SMPL's kinematic chain in float64 (smplx.lbs.batch_rigid_transform, in numpy).

    poses (N, 72) axis-angle, rest_joints (24, 3) of the shaped body, parents (24,) (-1 at
    the root) -> rotations (N, 24, 3, 3) local, posed joints (N, 24, 3) and skinning
    transforms (N, 24, 4, 4) (each joint's world transform less its rest position).
    """
    n, num_joints = len(poses), len(parents)
    rot = Rotation.from_rotvec(poses.reshape(-1, 3)).as_matrix().reshape(n, num_joints, 3, 3)
    offsets = rest_joints.copy()
    offsets[1:] -= rest_joints[parents[1:]]
    local = np.zeros((n, num_joints, 4, 4))
    local[..., :3, :3] = rot
    local[..., :3, 3] = offsets
    local[..., 3, 3] = 1.0
    world = np.empty_like(local)
    world[:, 0] = local[:, 0]
    for i in range(1, num_joints):
        world[:, i] = world[:, parents[i]] @ local[:, i]
    joints = world[..., :3, 3].copy()
    skinning = world.copy()
    skinning[..., :3, 3] -= (world[..., :3, :3] @ rest_joints[:, :, None])[..., 0]
    return rot, joints, skinning


def pose_track(arrays: PosingArrays, poses: np.ndarray, betas: np.ndarray, trans: np.ndarray,
               cam_poses: np.ndarray, chunk: int = CHUNK) -> dict[str, np.ndarray]:
    """SMPL linear blend skinning of one track (one shape), composed with the camera.

    poses (N, 72) world axis-angle, betas (10,), trans (N, 3), cam_poses (N, 4, 4)
    world->camera. Returns `vertices` (N, K, 3) float32 (the arrays' K vertices,
    `arrays.vertex_ids`), `joints` (N, 24, 3) float64 and `joints_h36m` (N, 17, 3) float32,
    all in the camera frame: the body model's output (`BodyModel.forward`) mapped through
    cam_poses, to float32 rounding. Faster than the module on a track: the shape blend is done
    once, only the vertices the H36M regressor reads are skinned, the camera and translation
    ride on the 24 joint transforms instead of a pass over every vertex, and the mostly-zero
    matrices are multiplied sparse.
    """
    n, num_vertices = len(poses), len(arrays.v_template)
    num_betas = arrays.shapedirs.shape[-1]  # the body's (<= 10)
    v_shaped = arrays.v_template + (arrays.shapedirs.reshape(-1, num_betas)
                                    @ np.asarray(betas[:num_betas], np.float32)).reshape(-1, 3)
    rest_joints = arrays.rest_joints + arrays.rest_joint_shapedirs @ np.asarray(
        betas[:num_betas], np.float64)                                               # (24, 3)
    rot, joints, skinning = joint_transforms(poses, rest_joints, arrays.parents)
    # World placement then camera: one (4, 4) per frame applied to the 24 joint transforms.
    place = np.tile(np.eye(4), (n, 1, 1))
    place[:, :3, 3] = trans
    to_cam = cam_poses @ place
    joints_cam = joints @ to_cam[:, :3, :3].transpose(0, 2, 1) + to_cam[:, None, :3, 3]
    skinning = (to_cam[:, None] @ skinning)[:, :, :3, :]                         # (N, 24, 3, 4)
    # [joint, column, row, frame]: one product with the weights gives every vertex's 3x4.
    skinning = np.ascontiguousarray(skinning.transpose(1, 3, 2, 0), dtype=np.float32)
    pose_feature = (rot[:, 1:] - np.eye(3)).reshape(n, -1).astype(np.float32)    # (N, 207)
    vertices = np.empty((n, num_vertices, 3), np.float32)
    h36m = np.empty((n, len(arrays.h36m_rowsum), 3), np.float32)
    step = -(-n // -(-n // chunk))  # equal chunks of at most `chunk` frames
    with _single_thread():
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            m = hi - lo
            offsets = _matmul(arrays.pose_basis, pose_feature[lo:hi].T)           # (V*3, m)
            posed = torch.from_numpy(offsets.reshape(num_vertices, 3, m) + v_shaped[:, :, None])
            skin = torch.from_numpy(_matmul(arrays.weights, skinning[..., lo:hi].reshape(
                len(arrays.parents), 12 * m)).reshape(num_vertices, 4, 3, m))
            out = skin[:, 3].clone()                                                # (V, 3, m)
            for k in range(3):
                out.addcmul_(skin[:, k], posed[:, k:k + 1])
            vertices[lo:hi] = out.permute(2, 0, 1).numpy()
            h36m[lo:hi] = _matmul(arrays.h36m, out.numpy().reshape(num_vertices, 3 * m)
                                  ).reshape(-1, 3, m).transpose(2, 0, 1)
    # Regressing camera-frame vertices counts the camera translation once per unit of row
    # weight; the body model regresses before the camera, so add back what is missing.
    h36m += ((1.0 - arrays.h36m_rowsum)[:, None] * cam_poses[:, None, :3, 3]).astype(np.float32)
    return {"vertices": vertices, "joints": joints_cam, "joints_h36m": h36m}

