"""Left/right mirror correspondence of a body's vertices and joints, for flip augmentation.

The real SMPL template is nearly, not exactly, mirror-symmetric, and its vertex order is not
mirrored, so the correspondence is computed, never assumed: a one-to-one assignment of every
vertex to a mirrored vertex that minimises the total distance (a sparse linear assignment,
LAPMOD from the `lap` package, on the nearest mirrored candidates of each vertex), made an
involution, then verified. Joints get the same assignment (dense: a few of them) and must agree
with their left/right names.

Convention (constants.py): SMPL's rest pose is y up, the body faces +z, its left side is +x; the
sagittal plane is x = plane_x, estimated from the template. Mirroring maps x -> 2 plane_x - x.
After a flip, vertex i takes the mirrored position of vertex perm[i].

Checks, each a DataError naming the body file when it fails:
* the permutation is an involution (perm[perm] = identity);
* vertices mapped to themselves lie on the sagittal plane (within half a median edge);
* every vertex lands near its partner's mirror image (within MAX_RESIDUAL median edges);
* a flipped template keeps its edge lengths (within MAX_EDGE_CHANGE median edges); a torn
  correspondence joins far-apart vertices (the greedy nearest-neighbour pairing this replaces
  left 213 off-centre SMPL vertices on themselves and made 1.75 m edges).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from stdformer.body.constants import (
    H36M_FLIP_PERM,
    H36M_JOINT_NAMES,
    SMPL_FLIP_PERM,
    SMPL_JOINT_NAMES,
)
from stdformer.body.mesh_geometry import mesh_edges
from stdformer.io import DataError

MAX_RESIDUAL = 2.0        # median edges: |mirror(v[perm[i]]) - v[i]|
MAX_EDGE_CHANGE = 1.0     # median edges: | |flipped edge| - |edge| |
ON_PLANE = 0.5            # median edges: how far from the plane a self-mapped vertex may be
CANDIDATES = 8            # nearest mirrored neighbours offered to each vertex


@dataclass(frozen=True)
class FlipPerms:
    """Mirror index of every point: after a flip, point i takes the mirrored point perm[i].

    vertices (V,), smpl (24,), h36m (17,), coco (18,) int arrays (each an involution), from
    the body directory (`stdformer.body.mirror`). vertices is None when the body is not
    mirror-symmetric, so that the mesh of a flipped pose is not the mirrored mesh;
    `unavailable` then says why, and flip augmentation refuses to start.
    """

    vertices: np.ndarray | None
    smpl: np.ndarray
    h36m: np.ndarray
    coco: np.ndarray
    source: str = "<body>"
    unavailable: str | None = None

    def check(self, may_flip: bool) -> None:
        """DataError (naming the body) when augmentation may flip a body that cannot be
        flipped."""
        if may_flip and self.vertices is None:
            raise DataError(self.source, f"cannot flip this body ({self.unavailable}); set "
                            "train.augment.flip_prob: 0", field="mirror")



def mirror_points(points: np.ndarray, plane_x: float) -> np.ndarray:
    """(..., 3) -> (..., 3) mirrored across the plane x = plane_x."""
    out = np.array(points, np.float64, copy=True)
    out[..., 0] = 2.0 * plane_x - out[..., 0]
    return out


def _matching(points: np.ndarray, plane_x: float) -> np.ndarray:
    """Minimum-cost one-to-one map i -> j, cost |mirror(p_i) - p_j|: a sparse linear
    assignment (lap.lapmod) over candidate pairs, the CANDIDATES nearest mirrored neighbours
    of each vertex, offered both ways (the cost is symmetric), plus every vertex with itself
    (so a full assignment always exists).

    Not scipy's min_weight_full_bipartite_matching: its Hopcroft-Karp feasibility check takes
    exponential time on mesh-like candidate graphs (scipy issue 26147; measured here: 2.2 s
    with 8 candidates a vertex, no answer within 100 s with 12). A dense 6890 x 6890
    `linear_sum_assignment` would need 380 MB. lapmod: about 10 ms.
    """
    import lap  # only the body stage needs it (not a served model)

    n = len(points)
    mirrored = mirror_points(points, plane_x)
    _, idx = cKDTree(points).query(mirrored, k=min(CANDIDATES, n))
    idx = np.asarray(idx, np.int64).reshape(n, -1)
    rows = np.repeat(np.arange(n), idx.shape[1])
    pairs = np.unique(np.stack([np.r_[rows, idx.ravel(), np.arange(n)],
                                np.r_[idx.ravel(), rows, np.arange(n)]], axis=1), axis=0)
    cost = np.linalg.norm(mirrored[pairs[:, 0]] - points[pairs[:, 1]], axis=1)
    graph = scipy.sparse.csr_matrix((cost, (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    graph.sort_indices()
    _, assignment, _ = lap.lapmod(n, graph.data, graph.indptr, graph.indices)
    return np.asarray(assignment, np.int64)


def _make_involution(perm: np.ndarray, cost) -> np.ndarray:
    """Turn a permutation into an involution: 2-cycles and fixed points stay; a longer cycle is
    cut into the cheaper of its pairings (an odd one keeps its cheapest element fixed).
    cost(i, j) -> float, symmetric."""
    perm = perm.copy()
    seen = np.zeros(len(perm), bool)
    for start in range(len(perm)):
        if seen[start]:
            continue
        cycle = [start]
        seen[start] = True
        while not seen[perm[cycle[-1]]]:
            cycle.append(int(perm[cycle[-1]]))
            seen[cycle[-1]] = True
        if len(cycle) <= 2:
            continue
        best, best_pairs = np.inf, None
        for shift in range(len(cycle)):
            rot = cycle[shift:] + cycle[:shift]
            pairs = [(rot[i], rot[i + 1]) for i in range(0, len(rot) - 1, 2)]
            fixed = [rot[-1]] if len(rot) % 2 else []
            total = sum(cost(a, b) for a, b in pairs) + sum(cost(a, a) for a in fixed)
            if total < best:
                best, best_pairs = total, (pairs, fixed)
        pairs, fixed = best_pairs
        for a, b in pairs:
            perm[a], perm[b] = b, a
        for a in fixed:
            perm[a] = a
    return perm


def _plane(points: np.ndarray, perm: np.ndarray | None) -> float:
    """x of the sagittal plane: the mean of x, then the mean midpoint of matched pairs."""
    x = points[:, 0]
    return float(np.mean(x if perm is None else 0.5 * (x + x[perm])))


def vertex_mirror(vertices: np.ndarray, faces: np.ndarray, source: str | os.PathLike
                  ) -> tuple[np.ndarray, dict]:
    """(perm (V,) int64 involution, report) for a template (V, 3) with faces (F, 3); DataError
    (on `source`) when the mesh is not mirror-symmetric enough to flip."""
    v = np.asarray(vertices, np.float64)
    e, _ = mesh_edges(faces)
    edge = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    unit = float(np.median(edge))
    plane_x = _plane(v, None)
    for _ in range(2):  # match, re-estimate the plane from the pairs, match again
        perm = _matching(v, plane_x)
        plane_x = _plane(v, perm)
    mirrored = mirror_points(v, plane_x)
    perm = _make_involution(
        perm, lambda i, j: float(np.linalg.norm(mirrored[i] - v[j])))

    flipped = mirrored[perm]                                         # vertex i after a flip
    residual = np.linalg.norm(flipped - v, axis=1)
    edge_change = np.abs(np.linalg.norm(flipped[e[:, 0]] - flipped[e[:, 1]], axis=1) - edge)
    fixed = np.flatnonzero(perm == np.arange(len(v)))
    off_plane = fixed[np.abs(v[fixed, 0] - plane_x) > ON_PLANE * unit]
    report = {"plane_x_mm": round(plane_x * 1000, 3), "self_mapped": int(len(fixed)),
              "residual_mm": [round(float(np.median(residual)) * 1000, 3),
                              round(float(residual.max()) * 1000, 3)],
              "edge_change_mm": round(float(edge_change.max()) * 1000, 3),
              "median_edge_mm": round(unit * 1000, 3)}
    if not np.array_equal(perm[perm], np.arange(len(v))):
        raise DataError(source, "the mirror correspondence is not an involution",
                        field="v_template")
    if len(off_plane):
        raise DataError(source, f"{len(off_plane)} vertices off the sagittal plane have no "
                        f"mirror partner (e.g. vertex {int(off_plane[0])}): not mirror-symmetric "
                        "enough to flip", field="v_template")
    if residual.max() > MAX_RESIDUAL * unit:
        raise DataError(source, f"vertex {int(residual.argmax())} is "
                        f"{residual.max() * 1000:.0f} mm from its partner's mirror image "
                        f"(limit {MAX_RESIDUAL * unit * 1000:.0f} mm): not mirror-symmetric "
                        "enough to flip", field="v_template")
    if edge_change.max() > MAX_EDGE_CHANGE * unit:
        i = int(edge_change.argmax())
        raise DataError(source, f"flipping changes edge {tuple(int(x) for x in e[i])} by "
                        f"{edge_change[i] * 1000:.0f} mm (limit {MAX_EDGE_CHANGE * unit * 1000:.0f}"
                        " mm): not mirror-symmetric enough to flip", field="v_template")
    return perm, report


def joint_mirror(joints: np.ndarray, names: list[str], named_perm: list[int], plane_x: float,
                 source: str | os.PathLike, field: str) -> np.ndarray:
    """The mirror partners of joints (J, 3) of the template by geometry (a linear assignment),
    checked against the name-based permutation (L_ <-> R_) and the side of each named joint
    (left is +x). DataError (on `source`) when they disagree: rows in another order, or a
    left/right-swapped regressor."""
    for name, point in zip(names, joints):
        side = {"L_": 1.0, "R_": -1.0}.get(name[:2].upper())
        if side is not None and side * (point[0] - plane_x) <= 0:
            raise DataError(source, f"joint {name} lies on the {'right' if side > 0 else 'left'}"
                            " of the template (SMPL's left is +x): left and right swapped?",
                            field=field)
    mirrored = mirror_points(joints, plane_x)
    cost = np.linalg.norm(mirrored[:, None] - joints[None], axis=-1)      # (J, J), symmetric
    _, perm = linear_sum_assignment(cost)
    perm = _make_involution(np.asarray(perm, np.int64), lambda i, j: float(cost[i, j]))
    wrong = np.flatnonzero(perm != np.asarray(named_perm))
    if len(wrong):
        j = int(wrong[0])
        raise DataError(source, f"joint {names[j]} mirrors to {names[perm[j]]} by geometry, "
                        f"expected {names[named_perm[j]]}: joints in another order or left/"
                        "right swapped?", field=field)
    return perm





def body_flip_perms(template: np.ndarray, faces: np.ndarray, smpl_joints: np.ndarray,
                    h36m_joints: np.ndarray, body_file: str, regressor_file: str
                    ) -> tuple[dict[str, np.ndarray] | None, dict]:
    """The flip permutations of a body: {"vertices" (V,), "smpl" (24,), "h36m" (17,)} and a
    report for meta.json. A template that is not mirror-symmetric enough gives None (the body
    still works; flip augmentation refuses it with the report's reason). Joint sets whose
    geometry contradicts their left/right names raise DataError: that is a wrong file."""

    try:
        vertices, report = vertex_mirror(template, faces, body_file)
        plane_x = report["plane_x_mm"] / 1000.0
    except DataError as e:
        vertices, report = None, {"ok": False, "reason": str(e)}
        plane_x = float(np.mean(np.asarray(template)[:, 0]))
    smpl = joint_mirror(smpl_joints, SMPL_JOINT_NAMES, SMPL_FLIP_PERM, plane_x, body_file,
                        "J_regressor")
    h36m = joint_mirror(h36m_joints, H36M_JOINT_NAMES, H36M_FLIP_PERM, plane_x, regressor_file,
                        "J_regressor_h36m")
    if vertices is None:
        return None, report
    return {"vertices": vertices, "smpl": smpl, "h36m": h36m}, {"ok": True, **report}

__all__ = ["FlipPerms", "body_flip_perms", "vertex_mirror", "joint_mirror", "mirror_points"]
