"""Joint sets used across the project: SMPL-24, Human3.6M-17, the 14 evaluation joints, COCO-18.

Conventions: SMPL's rest pose is y up, metres, the body faces +z, so its *left* side is +x.
A flip permutation `P` maps joint i of a mirrored body to joint P[i] (left <-> right); applying
it twice is the identity.
"""

from __future__ import annotations


def _flip_perm(names: list[str], left: str, right: str) -> list[int]:
    """Index of each joint's mirror partner, found by swapping the left/right name prefix."""
    index = {n: i for i, n in enumerate(names)}
    perm = []
    for n in names:
        if n.startswith(left):
            partner = right + n[len(left):]
        elif n.startswith(right):
            partner = left + n[len(right):]
        else:
            partner = n
        perm.append(index[partner])
    return perm


SMPL_JOINT_NAMES = [
    "Pelvis", "L_Hip", "R_Hip", "Spine1", "L_Knee", "R_Knee", "Spine2", "L_Ankle", "R_Ankle",
    "Spine3", "L_Foot", "R_Foot", "Neck", "L_Collar", "R_Collar", "Head", "L_Shoulder",
    "R_Shoulder", "L_Elbow", "R_Elbow", "L_Wrist", "R_Wrist", "L_Hand", "R_Hand",
]
# Parent of each SMPL joint in the kinematic tree (-1 for the root).
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
SMPL_FLIP_PERM = _flip_perm(SMPL_JOINT_NAMES, "L_", "R_")
NUM_SMPL_JOINTS = 24
NUM_POSE_PARAMS = 72  # 24 joints x axis-angle
NUM_BETAS = 10

# Human3.6M-17 as regressed by `J_regressor_h36m_correct.npy` ("Head" is the head top).
H36M_JOINT_NAMES = [
    "Pelvis", "R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "Torso", "Neck",
    "Nose", "Head", "L_Shoulder", "L_Elbow", "L_Wrist", "R_Shoulder", "R_Elbow", "R_Wrist",
]
H36M_FLIP_PERM = _flip_perm(H36M_JOINT_NAMES, "L_", "R_")

# The 14 common evaluation joints, selected from H36M-17.
J14_FROM_H36M = [3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10]
J14_NAMES = [
    "R_Ankle", "R_Knee", "R_Hip", "L_Hip", "L_Knee", "L_Ankle", "R_Wrist", "R_Elbow",
    "R_Shoulder", "L_Shoulder", "L_Elbow", "L_Wrist", "Neck", "Head_Top",
]
J14_FLIP_PERM = _flip_perm(J14_NAMES, "L_", "R_")

# OpenPose-18 / COCO-18 order, as in 3DPW's poses2d.
COCO18_NAMES = [
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear",
]
COCO18_FLIP_PERM = _flip_perm(COCO18_NAMES, "l_", "r_")

# kintree_table row 0 in the official files stores the root's parent as uint32(-1).
KINTREE_ROOT = 4294967295
