"""What the synthesizer needs from the body model, in numpy: posed vertices and joints, part
labels, and which joints and head vertices give the COCO-18 keypoints."""

from __future__ import annotations

import numpy as np
import torch

from stdformer.body.constants import COCO18_NAMES, SMPL_JOINT_NAMES
from stdformer.body.mesh_geometry import vertex_normals

# COCO-18 points taken from SMPL joints (OpenPose's neck ~ SMPL neck, hips ~ SMPL hips).
_COCO_FROM_SMPL_NAME = {
    "neck": "Neck", "r_shoulder": "R_Shoulder", "r_elbow": "R_Elbow", "r_wrist": "R_Wrist",
    "l_shoulder": "L_Shoulder", "l_elbow": "L_Elbow", "l_wrist": "L_Wrist", "r_hip": "R_Hip",
    "r_knee": "R_Knee", "r_ankle": "R_Ankle", "l_hip": "L_Hip", "l_knee": "L_Knee",
    "l_ankle": "L_Ankle",
}
COCO_FACE_POINTS = ("nose", "r_eye", "l_eye", "r_ear", "l_ear")  # from head surface vertices
HEAD_PART = SMPL_JOINT_NAMES.index("Head")


class SynthBodyAssets:
    """Numpy views of a BodyModel plus derived lookups (face keypoint vertices, part groups): the
    body as the synthesizer uses it."""

    def __init__(self, body):
        self.body = body
        self.faces = np.asarray(body.faces.cpu().numpy(), np.int64)  # (F,3)
        self.part_labels = np.asarray(_to_numpy(body.part_labels), np.int64)  # (V,)
        self.face_part = self.part_labels[self.faces[:, 0]]  # (F,)
        zero = np.zeros((1, 72))
        rest_v, rest_j = self.evaluate(zero, np.zeros(10))
        self.rest_vertices, self.rest_joints = rest_v[0], rest_j[0]
        self.face_vertex_ids = head_keypoint_vertices(self.rest_vertices, self.part_labels,
                                                      self.rest_joints)
        # Faces around each face-keypoint vertex, for its normal (facing the camera or not).
        self.face_vertex_faces = [np.flatnonzero((self.faces == v).any(1))
                                  for v in self.face_vertex_ids]
        self.vertex_normals_rest = vertex_normals(self.rest_vertices, self.faces)

    def evaluate(self, poses: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """poses (T,72), betas (10,) -> vertices (T,V,3), joints (T,24,3), no translation."""
        poses = torch.as_tensor(np.asarray(poses), dtype=torch.float32)
        betas_t = torch.as_tensor(np.asarray(betas), dtype=torch.float32).expand(len(poses), 10)
        with torch.no_grad():
            out = self.body(poses, betas_t.contiguous(), None)
        # Rounded to a micrometre: float32 BLAS results may differ in the last bits between
        # thread counts / CPUs; rounding keeps the rendered bytes from depending on that.
        return (np.round(out.vertices.double().cpu().numpy(), 6),
                np.round(out.joints.double().cpu().numpy(), 6))


def _to_numpy(x):
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def head_keypoint_vertices(rest_vertices: np.ndarray, part_labels: np.ndarray,
                           rest_joints: np.ndarray) -> np.ndarray:
    """Vertex ids for nose, r_eye, l_eye, r_ear, l_ear, found geometrically on the rest mesh.

    Works for any SMPL-topology-like body (the official mesh or a procedural one): take the
    head part's bounding box and pick the head vertex nearest to a target point in front
    (nose, eyes; the body faces +z, its left is +x) or to the side (ears).
    """
    head = np.flatnonzero(part_labels == HEAD_PART)
    if len(head) < 5:  # no head label: everything above the neck joint
        head = np.flatnonzero(rest_vertices[:, 1] > rest_joints[SMPL_JOINT_NAMES.index("Neck"), 1])
    pts = rest_vertices[head]
    lo, hi = pts.min(0), pts.max(0)
    c, e = (lo + hi) / 2, (hi - lo) / 2
    targets = np.array([
        [c[0], c[1] - 0.2 * e[1], c[2] + e[2]],  # nose
        [c[0] - 0.4 * e[0], c[1] + 0.1 * e[1], c[2] + e[2]],  # right eye (-x)
        [c[0] + 0.4 * e[0], c[1] + 0.1 * e[1], c[2] + e[2]],  # left eye (+x)
        [c[0] - e[0], c[1] - 0.05 * e[1], c[2]],  # right ear
        [c[0] + e[0], c[1] - 0.05 * e[1], c[2]],  # left ear
    ])
    nearest = np.argmin(((pts[None] - targets[:, None]) ** 2).sum(-1), axis=1)
    return head[nearest]


_JOINT_FOR_COCO = np.array([SMPL_JOINT_NAMES.index(_COCO_FROM_SMPL_NAME[n])
                            if n in _COCO_FROM_SMPL_NAME else -1 for n in COCO18_NAMES])
COCO_FACE_SLOTS = np.array([COCO18_NAMES.index(n) for n in COCO_FACE_POINTS])


def coco18_points(assets: SynthBodyAssets, vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """(18,3) COCO-18 points of one body: joints for the body, head vertices for the face."""
    pts = joints[np.maximum(_JOINT_FOR_COCO, 0)]
    pts[COCO_FACE_SLOTS] = vertices[assets.face_vertex_ids]
    return pts

