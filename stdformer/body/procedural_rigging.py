"""Rigging of the procedural body: skinning weights from soft primitive distances, the 10
shape directions, the pose correctives (posedirs) and the joint regressor."""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.sparse
from scipy.spatial import cKDTree

from stdformer.body.constants import NUM_BETAS, SMPL_PARENTS
from stdformer.body.mesh_geometry import vertex_normals
from stdformer.body.procedural_primitives import ARM_CHAIN, LEG_CHAIN, Primitive

SKIN_TAU = 0.012           # soft-min temperature for skinning weights (m)
MAX_INFLUENCES = 4         # skinning weights kept per vertex (SMPL uses at most about 4)
BULGE = 0.008              # pose corrective: metres of bulge per unit of (3 - trace R)
BULGE_SIGMA = 0.05         # pose corrective falloff around the joint (m)


# --------------------------------------------------------------------------------------------
# Skinning, shape and pose directions, joint regressor


def soft_primitive_weights(dist: np.ndarray) -> np.ndarray:
    """(V, P) soft-min weights over primitives from their distances (V, P)."""
    z = -(dist - dist.min(axis=1, keepdims=True)) / SKIN_TAU
    w = np.exp(z)
    return w / w.sum(axis=1, keepdims=True)


def skinning_weights(prim_w: np.ndarray, prims: list[Primitive]) -> np.ndarray:
    """(V, 24) per-joint weights: primitive weights summed per joint, top-4, normalised."""
    onehot = np.zeros((len(prims), 24))
    onehot[np.arange(len(prims)), [p.joint for p in prims]] = 1.0
    w = prim_w @ onehot
    keep = np.argsort(-w, axis=1, kind="stable")[:, :MAX_INFLUENCES]
    pruned = np.zeros_like(w)
    rows = np.arange(len(w))[:, None]
    pruned[rows, keep] = w[rows, keep]
    pruned[pruned < 1e-4] = 0.0
    return pruned / pruned.sum(axis=1, keepdims=True)


def _beta_definitions(J: np.ndarray, prims: list[Primitive]):
    """For each of the 10 betas: joint displacement (24, 3) and per-primitive axis scale (P, 3)
    per unit beta. Magnitudes are SMPL-like: a few cm per unit."""
    n_p = len(prims)
    side = np.sign(J[:, 0])  # +1 left, -1 right, 0 centre
    groups = np.array([p.group for p in prims])
    betas = []

    def scale(values: dict[str, tuple[float, float, float]]):
        s = np.zeros((n_p, 3))
        for g, v in values.items():
            s[groups == g] = v
        return s

    # 0: stature (uniform scaling about the pelvis)
    betas.append((0.04 * (J - J[0]), np.full((n_p, 3), 0.04)))
    # 1: weight (torso and limb girth)
    g = 0.14
    betas.append((np.zeros((24, 3)), scale({"pelvis": (g, g, g), "belly": (g, g, g),
                                            "chest": (g, g, g), "neck": (0.1,) * 3,
                                            "arm": (0.1,) * 3, "leg": (0.1,) * 3,
                                            "hand": (0.03,) * 3, "foot": (0.02,) * 3})))
    # 2: leg length
    dj = np.zeros((24, 3))
    for hip, chain in LEG_CHAIN.items():
        dj[list(chain)] = 0.06 * (J[list(chain)] - J[hip])
    betas.append((dj, np.zeros((n_p, 3))))
    # 3: arm length
    dj = np.zeros((24, 3))
    for shoulder, chain in ARM_CHAIN.items():
        dj[list(chain)] = 0.07 * (J[list(chain)] - J[shoulder])
    betas.append((dj, np.zeros((n_p, 3))))
    # 4: shoulder breadth
    dj = np.zeros((24, 3))
    for collar, shoulder in ((13, 16), (14, 17)):
        dj[collar, 0] = 0.01 * side[collar]
        for j in (shoulder, *ARM_CHAIN[shoulder]):
            dj[j, 0] = 0.02 * side[j]
    s = np.zeros((n_p, 3))
    s[[i for i, p in enumerate(prims) if p.joint == 9], 0] = 0.08
    betas.append((dj, s))
    # 5: torso length (everything above spine2 moves up)
    dj = np.zeros((24, 3))
    dj[6, 1] = 0.012
    dj[[9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23], 1] = 0.035
    betas.append((dj, scale({"belly": (0, 0.1, 0), "chest": (0, 0.1, 0)})))
    # 6: hip width
    dj = np.zeros((24, 3))
    for hip, chain in LEG_CHAIN.items():
        for j in (hip, *chain):
            dj[j, 0] = 0.015 * side[j]
    betas.append((dj, scale({"pelvis": (0.1, 0, 0.02)})))
    # 7: belly
    betas.append((np.zeros((24, 3)), scale({"belly": (0.05, 0.0, 0.25)})))
    # 8: head size
    betas.append((np.zeros((24, 3)), scale({"head": (0.08, 0.08, 0.08)})))
    # 9: limb muscularity versus torso
    betas.append((np.zeros((24, 3)), scale({"arm": (0.12,) * 3, "leg": (0.12,) * 3,
                                            "pelvis": (-0.03,) * 3, "belly": (-0.03,) * 3,
                                            "chest": (-0.03,) * 3})))
    assert len(betas) == NUM_BETAS
    return betas


def shape_directions(verts, prims, J, prim_w, axes, ts) -> np.ndarray:
    """(V, 3, 10): each beta's displacement, blended over primitives by their soft weights."""
    V = len(verts)
    out = np.zeros((V, 3, NUM_BETAS))
    for k, (dj, s) in enumerate(_beta_definitions(J, prims)):
        disp = np.zeros((V, 3))
        for i, prim in enumerate(prims):
            da = prim.a.at(dj) - np.asarray(prim.a.offset)  # translation of the point a
            if prim.kind == "cone":
                db = prim.b.at(dj) - np.asarray(prim.b.offset)
                move = (1 - ts[:, i, None]) * da + ts[:, i, None] * db
            else:
                move = np.broadcast_to(da, (V, 3))
            radial = verts - axes[:, i]
            disp += prim_w[:, i, None] * (move + s[i] * radial)
        out[:, :, k] = disp
    return out


def pose_directions(verts, faces, weights, J) -> np.ndarray:
    """(V, 3, 207) bulge correctives; feature 9*(j-1) + 3a + b is (R_j - I)[a, b]."""
    normals = vertex_normals(verts, faces)
    posedirs = np.zeros((len(verts), 3, 207))
    for j in range(1, 24):
        parent = SMPL_PARENTS[j]
        d2 = np.sum((verts - J[j]) ** 2, axis=1)
        mask = np.exp(-d2 / (2 * BULGE_SIGMA**2)) * np.clip(weights[:, j] + weights[:, parent],
                                                            0, 1)
        mask[mask < 1e-3] = 0.0
        for a in range(3):
            # sum_a (R_aa - 1) * (-c m n) = c m n (3 - trace R) >= 0: an outward bulge
            posedirs[:, :, 9 * (j - 1) + 4 * a] = -BULGE * mask[:, None] * normals
    return posedirs


def fit_joint_regressor(verts: np.ndarray, joints: np.ndarray, min_k: int = 24,
                        max_k: int = 384, tol: float = 5e-4) -> scipy.sparse.csc_matrix:
    """(J, V) sparse rows of non-negative weights summing to 1 with rows @ verts ~= joints.

    Per joint: the k nearest vertices (k doubling until the joint lies within `tol` of their
    convex combination), weights by NNLS with a sum-to-one row and a small pull towards uniform
    weights so that the whole ring around the joint contributes, not two or three vertices.
    """
    tree = cKDTree(verts)
    rows, cols, vals = [], [], []
    for j, target in enumerate(joints):
        k = min_k
        while True:
            _, idx = tree.query(target, k=min(k, len(verts)))
            idx = np.sort(idx)
            pts = verts[idx]
            lam, big = 1e-3, 100.0
            A = np.concatenate([big * pts.T, big * np.ones((1, len(idx))),
                                np.sqrt(lam) * np.eye(len(idx))])
            b = np.concatenate([big * target, [big], np.full(len(idx), np.sqrt(lam) / len(idx))])
            w, _ = scipy.optimize.nnls(A, b, maxiter=50 * len(idx))
            w[w < 1e-6] = 0.0
            w /= w.sum()
            err = np.linalg.norm(w @ pts - target)
            if err < tol or k >= max_k or k >= len(verts):
                break
            k *= 2
        nz = w > 0
        rows += [j] * int(nz.sum())
        cols += idx[nz].tolist()
        vals += w[nz].tolist()
    return scipy.sparse.csc_matrix((vals, (rows, cols)), shape=(len(joints), len(verts)))

