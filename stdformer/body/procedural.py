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
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.optimize
import scipy.sparse
from scipy.spatial import cKDTree

from stdformer.body.constants import (
    KINTREE_ROOT, NUM_BETAS, SMPL_FLIP_PERM, SMPL_PARENTS,
)

DEFAULT_RESOLUTION = 6890  # vertices; the same count as SMPL, so mesh levels match the paper's
SMOOTH_K = 0.02            # smooth-union blend radius (m)
SKIN_TAU = 0.012           # soft-min temperature for skinning weights (m)
MAX_INFLUENCES = 4         # skinning weights kept per vertex (SMPL uses at most about 4)
BULGE = 0.008              # pose corrective: metres of bulge per unit of (3 - trace R)
BULGE_SIGMA = 0.05         # pose corrective falloff around the joint (m)

# Rest joints of the reference body (seed 0); only the left (+x) and centre joints are listed,
# the right side is the mirror image. Values follow SMPL's neutral template closely.
_LEFT_AND_CENTRE_JOINTS = {
    0: (0.0, -0.225, 0.025),     # pelvis
    3: (0.0, -0.115, 0.0),       # spine1
    6: (0.0, 0.02, 0.025),       # spine2
    9: (0.0, 0.075, 0.03),       # spine3
    12: (0.0, 0.29, -0.015),     # neck
    15: (0.0, 0.36, 0.03),       # head
    1: (0.07, -0.315, 0.022),    # hip
    4: (0.104, -0.692, 0.016),   # knee
    7: (0.09, -1.09, -0.027),    # ankle
    10: (0.119, -1.144, 0.087),  # foot (ball)
    13: (0.076, 0.195, -0.006),  # collar
    16: (0.174, 0.225, -0.018),  # shoulder
    18: (0.434, 0.214, -0.042),  # elbow
    20: (0.696, 0.222, -0.048),  # wrist
    22: (0.786, 0.212, -0.058),  # hand
}


def reference_joints() -> np.ndarray:
    """(24, 3) rest joints of the seed-0 body."""
    joints = np.zeros((24, 3))
    for j, xyz in _LEFT_AND_CENTRE_JOINTS.items():
        joints[j] = xyz
        joints[SMPL_FLIP_PERM[j]] = (-xyz[0], xyz[1], xyz[2])
    return joints


# --------------------------------------------------------------------------------------------
# Primitives: each geometric point is joint `anchor` + `offset`, or a blend of two joints, so
# that moving joints (shape directions) moves the primitive consistently.


@dataclasses.dataclass
class Point:
    """A point defined as sum_k weight_k * J[joint_k] + offset."""

    joints: tuple[int, ...]
    weights: tuple[float, ...]
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def at(self, joints: np.ndarray) -> np.ndarray:
        p = np.asarray(self.offset, dtype=np.float64).copy()
        for j, w in zip(self.joints, self.weights):
            p += w * joints[j]
        return p

    def mirrored(self) -> "Point":
        return Point(tuple(SMPL_FLIP_PERM[j] for j in self.joints), self.weights,
                     (-self.offset[0], self.offset[1], self.offset[2]))


def P(j: int, dx=0.0, dy=0.0, dz=0.0) -> Point:
    return Point((j,), (1.0,), (dx, dy, dz))


def Lerp(j1: int, j2: int, t: float, dx=0.0, dy=0.0, dz=0.0) -> Point:
    return Point((j1, j2), (1.0 - t, t), (dx, dy, dz))


@dataclasses.dataclass
class Primitive:
    """A tapered capsule (`kind='cone'`: points a, b, radii ra, rb) or an axis-aligned ellipsoid
    (`kind='ellipsoid'`: centre a, radii (3,)); skinned to SMPL joint `joint`; `group` names the
    body region the shape directions address."""

    kind: str
    joint: int
    group: str
    a: Point
    b: Point | None = None
    radii: tuple[float, ...] = ()
    blend: float = SMOOTH_K  # smooth-union radius with what came before (m)

    def mirrored(self) -> "Primitive":
        return Primitive(self.kind, SMPL_FLIP_PERM[self.joint], self.group, self.a.mirrored(),
                         self.b.mirrored() if self.b is not None else None, self.radii,
                         self.blend)


def _primitive_table() -> list[Primitive]:
    """Centre primitives, then left ones, then their mirror images (right)."""
    torso = 0.05  # wide blends so the trunk reads as one smooth shape, not stacked blobs
    centre = [
        Primitive("ellipsoid", 0, "pelvis", P(0, 0, -0.025, -0.015), radii=(0.16, 0.125, 0.12),
                  blend=torso),
        Primitive("ellipsoid", 3, "belly", P(3, 0, 0, 0.01), radii=(0.135, 0.17, 0.105),
                  blend=torso),
        Primitive("ellipsoid", 6, "chest", P(6, 0, 0.02), radii=(0.145, 0.16, 0.11),
                  blend=torso),
        Primitive("ellipsoid", 9, "chest", P(9, 0, 0.08, -0.005), radii=(0.16, 0.12, 0.105),
                  blend=torso),
        Primitive("cone", 12, "neck", P(12, 0, -0.06), P(15, 0, 0, -0.01), radii=(0.058, 0.05)),
        Primitive("ellipsoid", 15, "head", P(15, 0, 0.085), radii=(0.078, 0.105, 0.095)),
        Primitive("ellipsoid", 15, "head", P(15, 0, 0.03, 0.04), radii=(0.06, 0.05, 0.07)),
        Primitive("ellipsoid", 15, "head", P(15, 0, 0.07, 0.09), radii=(0.012, 0.022, 0.02)),
    ]
    left = [
        Primitive("cone", 13, "arm", P(13, -0.05, 0.04, -0.01), P(16), radii=(0.05, 0.055)),
        Primitive("cone", 16, "arm", P(16), P(18), radii=(0.052, 0.04)),
        Primitive("cone", 18, "arm", P(18), P(20), radii=(0.042, 0.03)),
        Primitive("ellipsoid", 20, "hand", Lerp(20, 22, 0.45), radii=(0.05, 0.017, 0.043)),
        Primitive("ellipsoid", 22, "hand", P(22, 0.035), radii=(0.055, 0.013, 0.04)),
        Primitive("cone", 20, "hand", P(20, 0.02, -0.005, 0.03), P(20, 0.075, -0.01, 0.06),
                  radii=(0.012, 0.01)),
        Primitive("cone", 1, "leg", P(1, 0, 0.02), P(4), radii=(0.088, 0.056)),
        Primitive("cone", 4, "leg", P(4), P(7), radii=(0.053, 0.037)),
        Primitive("ellipsoid", 4, "leg", Lerp(4, 7, 0.3, 0, 0, -0.02), radii=(0.05, 0.11, 0.05)),
        Primitive("cone", 7, "foot", P(7, 0, -0.035, -0.03), P(10, 0, 0.015),
                  radii=(0.036, 0.033)),
        Primitive("ellipsoid", 10, "foot", P(10, 0, 0.012, 0.05), radii=(0.04, 0.022, 0.045)),
    ]
    return centre + left + [p.mirrored() for p in left]


@dataclasses.dataclass
class Proportions:
    """Per-body variation drawn from the seed (seed 0: all ones, the reference body)."""

    stature: float = 1.0
    legs: float = 1.0
    arms: float = 1.0
    shoulders: float = 1.0
    hips: float = 1.0
    girth: float = 1.0
    limbs: float = 1.0
    head: float = 1.0

    @staticmethod
    def from_seed(seed: int) -> "Proportions":
        if seed == 0:
            return Proportions()
        rng = np.random.default_rng(seed)
        sd = {"stature": 0.03, "legs": 0.03, "arms": 0.03, "shoulders": 0.04, "hips": 0.04,
              "girth": 0.06, "limbs": 0.05, "head": 0.03}
        return Proportions(**{k: float(np.clip(1 + s * rng.standard_normal(), 1 - 2.5 * s,
                                               1 + 2.5 * s)) for k, s in sd.items()})


_LEG_CHAIN = {1: (4, 7, 10), 2: (5, 8, 11)}
_ARM_CHAIN = {16: (18, 20, 22), 17: (19, 21, 23)}


def _apply_proportions(joints: np.ndarray, prims: list[Primitive], prop: Proportions):
    """Scale joints and radii by `prop`; returns new joints and a (P,) radius scale."""
    J = joints.copy()
    for hip, chain in _LEG_CHAIN.items():
        J[list(chain)] = J[hip] + prop.legs * (J[list(chain)] - J[hip])
        J[[hip, *chain], 0] *= prop.hips
    for shoulder, chain in _ARM_CHAIN.items():
        J[list(chain)] = J[shoulder] + prop.arms * (J[list(chain)] - J[shoulder])
        J[[shoulder - 3, shoulder, *chain], 0] *= prop.shoulders  # collars move with them
    J = J[0] + prop.stature * (J - J[0])  # about the pelvis, which stays near the origin
    scale = np.array([
        prop.stature * (prop.head if p.group == "head" else
                        prop.girth if p.group in ("pelvis", "belly", "chest", "neck") else
                        prop.limbs if p.group in ("arm", "leg") else 1.0)
        for p in prims])
    return J, scale


# --------------------------------------------------------------------------------------------
# Signed distances


def _cone_axis(points: np.ndarray, a: np.ndarray, b: np.ndarray):
    """Closest axis parameter t in [0, 1] and axis point for each of points (N, 3)."""
    ab = b - a
    t = np.clip((points - a) @ ab / max(ab @ ab, 1e-12), 0.0, 1.0)
    return t, a + t[:, None] * ab


def primitive_distance(prim: Primitive, joints: np.ndarray, scale: float, points: np.ndarray):
    """Approximate signed distance (N,) of points (N, 3) to one primitive; plus the closest axis
    point (N, 3) and axis parameter t (N,) used by shape directions."""
    a = prim.a.at(joints)
    if prim.kind == "cone":
        b = prim.b.at(joints)
        ra, rb = (r * scale for r in prim.radii)
        t, axis = _cone_axis(points, a, b)
        d = np.linalg.norm(points - axis, axis=1) - (ra + t * (rb - ra))
        return d, axis, t
    radii = np.asarray(prim.radii) * scale
    q = points - a
    k0 = np.linalg.norm(q / radii, axis=1)
    k1 = np.linalg.norm(q / radii**2, axis=1)
    d = k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)  # iq's ellipsoid bound, exact on the surface
    return d, np.broadcast_to(a, points.shape), np.zeros(len(points))


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _prim_bounds(prim: Primitive, joints, scale) -> tuple[np.ndarray, np.ndarray]:
    a = prim.a.at(joints)
    if prim.kind == "cone":
        b = prim.b.at(joints)
        r = max(prim.radii) * scale
        return np.minimum(a, b) - r, np.maximum(a, b) + r
    r = np.asarray(prim.radii) * scale
    return a - r, a + r


def _half_body_field(prims, joints, scales, voxel: float):
    """Signed distance of the smooth union on a grid covering x >= 0 (x = 0 is the first slab).
    Returns the grid (nx, ny, nz) and its origin."""
    lo = np.min([_prim_bounds(p, joints, s)[0] for p, s in zip(prims, scales)], axis=0)
    hi = np.max([_prim_bounds(p, joints, s)[1] for p, s in zip(prims, scales)], axis=0)
    margin = 3 * max(p.blend for p in prims) + 2 * voxel
    origin = np.array([0.0, lo[1] - margin, lo[2] - margin])
    top = hi + margin
    shape = np.ceil((top - origin) / voxel).astype(int) + 1
    axes = [origin[i] + voxel * np.arange(shape[i]) for i in range(3)]
    field = np.full(tuple(shape), 1.0)
    for prim, s in zip(prims, scales):
        blo, bhi = _prim_bounds(prim, joints, s)
        blo, bhi = blo - 2 * prim.blend, bhi + 2 * prim.blend
        sl = []
        for i in range(3):
            i0 = int(np.searchsorted(axes[i], blo[i]))
            i1 = int(np.searchsorted(axes[i], bhi[i], side="right"))
            sl.append(slice(i0, max(i0, i1)))
        if any(x.stop <= x.start for x in sl):
            continue
        sub = np.stack(np.meshgrid(axes[0][sl[0]], axes[1][sl[1]], axes[2][sl[2]],
                                   indexing="ij"), axis=-1)
        d, _, _ = primitive_distance(prim, joints, s, sub.reshape(-1, 3))
        block = field[sl[0], sl[1], sl[2]]
        field[sl[0], sl[1], sl[2]] = _smooth_min(block, d.reshape(block.shape), prim.blend)
    return field, origin


# --------------------------------------------------------------------------------------------
# Surface


def _boundary_vertices(faces: np.ndarray) -> np.ndarray:
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    uniq, counts = np.unique(edges, axis=0, return_counts=True)
    return np.unique(uniq[counts == 1])


def _symmetric_surface(prims, joints, scales, resolution: int, voxel: float):
    """Closed, mirror-symmetric mesh: half surface (x >= 0) -> decimate -> mirror -> weld.

    Decimation settings are tried in turn until the welded mesh is a closed manifold (a
    collapse across the seam can rarely pinch it); the last one keeps the seam untouched.
    """
    from skimage.measure import marching_cubes

    field, origin = _half_body_field(prims, joints, scales, voxel)
    verts, faces, _, _ = marching_cubes(field, level=0.0, spacing=(voxel,) * 3,
                                        allow_degenerate=False, method="lewiner")
    verts = verts + origin
    verts[:, 0] = np.where(np.abs(verts[:, 0]) < 1e-9, 0.0, verts[:, 0])
    if _signed_volume(verts, faces) < 0:  # make faces counter-clockwise seen from outside
        faces = faces[:, ::-1]
    for agg, keep_seam in ((7.0, False), (5.0, False), (3.0, False), (7.0, True)):
        full = _decimate_and_mirror(verts, faces, resolution, agg, keep_seam)
        if _is_closed_manifold(full[1]):
            break
    return full


def _decimate_and_mirror(verts, faces, resolution: int, agg: float, keep_seam: bool):
    import fast_simplification

    # A closed genus-0 mesh has V = F/2 + 2, so the half gets resolution - 2 faces.
    target_faces = resolution - 2
    if target_faces < len(faces):
        verts, faces = fast_simplification.simplify(verts, faces.astype(np.int32),
                                                    target_count=target_faces, agg=agg,
                                                    preserve_border=keep_seam)
    verts, faces = _drop_unused(np.asarray(verts, np.float64), np.asarray(faces, np.int64))
    seam = _boundary_vertices(faces)
    verts[seam, 0] = 0.0  # border collapses keep seam points on x = 0; make it exact
    # Mirror: seam vertices are shared, all others get a mirrored copy.
    n = len(verts)
    is_seam = np.zeros(n, bool)
    is_seam[seam] = True
    mirror_index = np.arange(n)
    off_seam = np.flatnonzero(~is_seam)
    mirror_index[off_seam] = n + np.arange(len(off_seam))
    mirrored = verts[off_seam] * np.array([-1.0, 1.0, 1.0])
    all_verts = np.concatenate([verts, mirrored])
    all_faces = np.concatenate([faces, mirror_index[faces][:, ::-1]])
    return all_verts, all_faces


def _is_closed_manifold(faces: np.ndarray) -> bool:
    """Every edge in exactly two faces, and genus 0 (Euler characteristic 2)."""
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    uniq, counts = np.unique(edges, axis=0, return_counts=True)
    euler = len(np.unique(faces)) - len(uniq) + len(faces)
    return bool(np.all(counts == 2)) and euler == 2


def _drop_unused(verts, faces):
    used = np.unique(faces)
    remap = np.full(len(verts), -1)
    remap[used] = np.arange(len(used))
    return verts[used], remap[faces]


def _signed_volume(verts, faces) -> float:
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) area-weighted unit vertex normals."""
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    fn = np.cross(b - a, c - a)
    vn = np.zeros_like(verts)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------------------------
# Skinning, shape and pose directions, joint regressor


def _soft_primitive_weights(dist: np.ndarray) -> np.ndarray:
    """(V, P) soft-min weights over primitives from their distances (V, P)."""
    z = -(dist - dist.min(axis=1, keepdims=True)) / SKIN_TAU
    w = np.exp(z)
    return w / w.sum(axis=1, keepdims=True)


def _skinning_weights(prim_w: np.ndarray, prims: list[Primitive]) -> np.ndarray:
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
    for hip, chain in _LEG_CHAIN.items():
        dj[list(chain)] = 0.06 * (J[list(chain)] - J[hip])
    betas.append((dj, np.zeros((n_p, 3))))
    # 3: arm length
    dj = np.zeros((24, 3))
    for shoulder, chain in _ARM_CHAIN.items():
        dj[list(chain)] = 0.07 * (J[list(chain)] - J[shoulder])
    betas.append((dj, np.zeros((n_p, 3))))
    # 4: shoulder breadth
    dj = np.zeros((24, 3))
    for collar, shoulder in ((13, 16), (14, 17)):
        dj[collar, 0] = 0.01 * side[collar]
        for j in (shoulder, *_ARM_CHAIN[shoulder]):
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
    for hip, chain in _LEG_CHAIN.items():
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


def _shape_directions(verts, prims, J, prim_w, axes, ts) -> np.ndarray:
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


def _pose_directions(verts, faces, weights, J) -> np.ndarray:
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


# --------------------------------------------------------------------------------------------


def make_procedural_body(seed: int = 0, resolution: int = DEFAULT_RESOLUTION) -> dict:
    """Build a body in SMPL file format.

    Returns a dict: v_template (V, 3) float64, f (F, 3) uint32, shapedirs (V, 3, 10),
    posedirs (V, 3, 207), J_regressor scipy csc (24, V), weights (V, 24), kintree_table
    (2, 24) int64 (root parent 4294967295), J (24, 3) the designed rest joints,
    bs_style 'lbs', bs_type 'lrotmin'. Same seed and resolution -> identical arrays.
    """
    if resolution < 500:
        raise ValueError(f"resolution must be at least 500 vertices, got {resolution}")
    prims = _primitive_table()
    J, scales = _apply_proportions(reference_joints(), prims, Proportions.from_seed(seed))
    voxel = float(np.clip(0.008 * np.sqrt(10000 / resolution), 0.004, 0.008))
    verts, faces = _symmetric_surface(prims, J, scales, resolution, voxel)

    dist = np.empty((len(verts), len(prims)))
    axes = np.empty((len(verts), len(prims), 3))
    ts = np.empty((len(verts), len(prims)))
    for i, (prim, s) in enumerate(zip(prims, scales)):
        dist[:, i], axes[:, i], ts[:, i] = primitive_distance(prim, J, s, verts)
    prim_w = _soft_primitive_weights(dist)
    weights = _skinning_weights(prim_w, prims)
    shapedirs = _shape_directions(verts, prims, J, prim_w, axes, ts)
    posedirs = _pose_directions(verts, faces, weights, J)
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
    from stdformer.body.constants import H36M_JOINT_NAMES

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
