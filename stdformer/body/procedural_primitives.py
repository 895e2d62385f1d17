"""The parts a procedural body is built from (see procedural.py): the rest skeleton, the
primitives (tapered capsules and ellipsoids) hung on it, and per-seed proportions."""

from __future__ import annotations

import dataclasses

import numpy as np

from stdformer.body.constants import SMPL_FLIP_PERM

SMOOTH_K = 0.02            # smooth-union blend radius (m)

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


def primitive_table() -> list[Primitive]:
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


LEG_CHAIN = {1: (4, 7, 10), 2: (5, 8, 11)}
ARM_CHAIN = {16: (18, 20, 22), 17: (19, 21, 23)}


def apply_proportions(joints: np.ndarray, prims: list[Primitive], prop: Proportions):
    """Scale joints and radii by `prop`; returns new joints and a (P,) radius scale."""
    J = joints.copy()
    for hip, chain in LEG_CHAIN.items():
        J[list(chain)] = J[hip] + prop.legs * (J[list(chain)] - J[hip])
        J[[hip, *chain], 0] *= prop.hips
    for shoulder, chain in ARM_CHAIN.items():
        J[list(chain)] = J[shoulder] + prop.arms * (J[list(chain)] - J[shoulder])
        J[[shoulder - 3, shoulder, *chain], 0] *= prop.shoulders  # collars move with them
    J = J[0] + prop.stature * (J - J[0])  # about the pelvis, which stays near the origin
    scale = np.array([
        prop.stature * (prop.head if p.group == "head" else
                        prop.girth if p.group in ("pelvis", "belly", "chest", "neck") else
                        prop.limbs if p.group in ("arm", "leg") else 1.0)
        for p in prims])
    return J, scale
