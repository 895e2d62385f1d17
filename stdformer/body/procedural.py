"""A license-free, SMPL-format human body built from primitives.

The official SMPL files may not be redistributed, so the default pipeline runs on this body: the
same array layout (v_template, f, shapedirs, posedirs, J_regressor, weights, kintree_table), the
same 24-joint skeleton and rest T-pose conventions (y up, metres, faces +z, left = +x, pelvis
near the origin, about 1.7 m tall), loadable by `smplx.SMPL`.

How it is made (`make_procedural_body`):
1. Skeleton: SMPL-like rest joints (24, 3); seeds other than 0 perturb proportions.
2. Surface: a smooth union of tapered capsules and ellipsoids hung on the skeleton, as a signed
   distance field; marching cubes on the x >= 0 half, quadric decimation of that half, then the
   half is mirrored and welded at x = 0. The mesh is therefore exactly left/right symmetric, one
   closed genus-0 surface, and has exactly `resolution` vertices when the decimation hits its
   target (a closed genus-0 triangle mesh has V = F/2 + 2).
3. Skinning weights: a soft-min over the primitives' distance fields (temperature `SKIN_TAU`),
   summed per joint, pruned to the 4 largest, normalised.
4. Shape directions: each of the 10 betas moves joints and rescales primitives; a vertex follows
   its primitives blended by the same soft weights, so every direction is a smooth field.
5. Pose correctives (posedirs): a documented simple choice, a bulge along the vertex normal near
   each joint proportional to (3 - trace(R_j)) = 2(1 - cos angle), i.e. it grows with the bend.
6. J_regressor: for each joint a sparse convex combination of nearby vertices whose mean is the
   joint (non-negative least squares with a sum-to-one row).

Step 1 lives in `procedural_primitives`, step 2 in `procedural_surface`, steps 3-6 in
`procedural_rigging`; this module puts them together.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from stdformer.body.constants import H36M_JOINT_NAMES, KINTREE_ROOT, SMPL_PARENTS
from stdformer.body.procedural_primitives import (
    Proportions, apply_proportions, primitive_table, reference_joints,
)
from stdformer.body.procedural_rigging import (
    fit_joint_regressor, pose_directions, shape_directions, skinning_weights,
    soft_primitive_weights,
)
from stdformer.body.procedural_surface import primitive_distance, symmetric_surface

DEFAULT_RESOLUTION = 6890  # vertices; the same count as SMPL, so mesh levels match the paper's


def make_procedural_body(seed: int = 0, resolution: int = DEFAULT_RESOLUTION) -> dict:
    """Build a body in SMPL file format.

    Returns a dict: v_template (V, 3) float64, f (F, 3) uint32, shapedirs (V, 3, 10),
    posedirs (V, 3, 207), J_regressor scipy csc (24, V), weights (V, 24), kintree_table
    (2, 24) int64 (root parent 4294967295), J (24, 3) the designed rest joints,
    bs_style 'lbs', bs_type 'lrotmin'. Same seed and resolution -> identical arrays.
    """
    if resolution < 500:
        raise ValueError(f"resolution must be at least 500 vertices, got {resolution}")
    prims = primitive_table()
    J, scales = apply_proportions(reference_joints(), prims, Proportions.from_seed(seed))
    voxel = float(np.clip(0.008 * np.sqrt(10000 / resolution), 0.004, 0.008))
    verts, faces = symmetric_surface(prims, J, scales, resolution, voxel)

    dist = np.empty((len(verts), len(prims)))
    axes = np.empty((len(verts), len(prims), 3))
    ts = np.empty((len(verts), len(prims)))
    for i, (prim, s) in enumerate(zip(prims, scales)):
        dist[:, i], axes[:, i], ts[:, i] = primitive_distance(prim, J, s, verts)
    prim_w = soft_primitive_weights(dist)
    weights = skinning_weights(prim_w, prims)
    shapedirs = shape_directions(verts, prims, J, prim_w, axes, ts)
    posedirs = pose_directions(verts, faces, weights, J)
    J_regressor = fit_joint_regressor(verts, J)
    kintree = np.stack([np.array(SMPL_PARENTS, np.int64), np.arange(24, dtype=np.int64)])
    kintree[0, 0] = KINTREE_ROOT
    return {
        "v_template": verts.astype(np.float64),
        "f": faces.astype(np.uint32),
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": J_regressor,
        "weights": weights,
        "kintree_table": kintree,
        "J": J,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def derive_h36m_regressor(arrays: dict) -> scipy.sparse.csr_matrix:
    """(17, V) Human3.6M regressor for an SMPL-format body, rows convex combinations of vertices.

    Hips, knees, ankles, shoulders, elbows, wrists and the neck reuse the SMPL J_regressor rows;
    the pelvis is the midpoint of the hips (as in H36M); the torso is SMPL's spine2 row; the head
    top averages the highest head vertices, the nose the most forward head vertices.
    """
    verts = np.asarray(arrays["v_template"], np.float64)
    Jr = scipy.sparse.csr_matrix(arrays["J_regressor"])
    head = np.flatnonzero(np.argmax(np.asarray(arrays["weights"]), axis=1) == 15)
    if len(head) < 3:
        raise ValueError("the body has no vertices skinned mainly to the head joint")

    def band(values: np.ndarray, width: float) -> scipy.sparse.csr_matrix:
        sel = head[values >= values.max() - width]
        w = np.full(len(sel), 1.0 / len(sel))
        return scipy.sparse.csr_matrix((w, (np.zeros(len(sel), int), sel)),
                                       shape=(1, len(verts)))

    smpl = {"R_Hip": 2, "R_Knee": 5, "R_Ankle": 8, "L_Hip": 1, "L_Knee": 4, "L_Ankle": 7,
            "Torso": 6, "Neck": 12, "L_Shoulder": 16, "L_Elbow": 18, "L_Wrist": 20,
            "R_Shoulder": 17, "R_Elbow": 19, "R_Wrist": 21}
    rows = []
    for name in H36M_JOINT_NAMES:
        if name in smpl:
            rows.append(Jr[smpl[name]])
        elif name == "Pelvis":
            rows.append(0.5 * (Jr[1] + Jr[2]))
        elif name == "Head":
            rows.append(band(verts[head, 1], 0.01))
        elif name == "Nose":
            rows.append(band(verts[head, 2], 0.008))
    return scipy.sparse.vstack(rows).tocsr()
