"""Mesh hierarchy for coarse-to-fine vertex regression (GraphCMR / METRO / FastMETRO style).

Level 0 is the full mesh (SMPL: 6890 vertices); each further level is a quadric decimation of
the previous one by a factor (default 4, 4: 6890 -> 1723 -> 431).

* `down[l]` (n_{l+1}, n_l): selection; coarse vertex i is the fine vertex nearest to where the
  decimation put it (one 1 a row), so coarse meshes are subsets of the fine vertices.
* `up[l]` (n_l, n_{l+1}): each fine vertex as barycentric weights on its closest coarse face
  (3 stored entries a row; built ones sum to 1, the official file's are projected weights that
  may be negative and sum to 0.83 .. 1.05, see `stdformer.body.checks`).
* `adjacency[l]` (n_l, n_l): symmetric 0/1 edge matrix of level l (no self loops).
* `faces[l]` (F_l, 3) int64.

`load_mesh_downsampling` reads the standard `mesh_downsampling.npz` (keys A, U, D, F, object
arrays of scipy sparse matrices) through the restricted unpickler.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np
import scipy.sparse
from scipy.spatial import cKDTree

from stdformer.body.mesh_geometry import drop_unused_vertices, mesh_edges
from stdformer.body.smpl_files import _rebuild_sparse, pickle_stubs
from stdformer.io import DataError, load_npz, save_npz_atomic
from stdformer.safe_loading import NUMPY_GLOBALS, SCIPY_SPARSE_GLOBALS, load_npz_restricted


@dataclasses.dataclass
class MeshHierarchy:
    faces: list[np.ndarray]               # faces[l] (F_l, 3) int64
    down: list[scipy.sparse.csr_matrix]   # down[l] (n_{l+1}, n_l)
    up: list[scipy.sparse.csr_matrix]     # up[l] (n_l, n_{l+1})
    adjacency: list[scipy.sparse.csr_matrix]  # adjacency[l] (n_l, n_l)

    @property
    def num_levels(self) -> int:
        return len(self.adjacency)

    @property
    def num_vertices(self) -> list[int]:
        return [a.shape[0] for a in self.adjacency]

    def validate(self, source: str | os.PathLike = "<hierarchy>") -> "MeshHierarchy":
        n = self.num_vertices
        L = len(n)
        if L < 1 or len(self.faces) != L or len(self.down) != L - 1 or len(self.up) != L - 1:
            raise DataError(source, f"inconsistent level counts: {len(self.faces)} faces, "
                            f"{len(self.adjacency)} adjacency, {len(self.down)} down, "
                            f"{len(self.up)} up")
        for l in range(L):
            if self.adjacency[l].shape != (n[l], n[l]):
                raise DataError(source, f"shape {self.adjacency[l].shape}", field=f"A[{l}]")
            f = self.faces[l]
            if f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= n[l])):
                raise DataError(source, f"faces must be (F, 3) indices < {n[l]}",
                                field=f"F[{l}]")
        for l in range(L - 1):
            if self.down[l].shape != (n[l + 1], n[l]):
                raise DataError(source, f"expected shape {(n[l + 1], n[l])}, got "
                                f"{self.down[l].shape}", field=f"D[{l}]")
            if self.up[l].shape != (n[l], n[l + 1]):
                raise DataError(source, f"expected shape {(n[l], n[l + 1])}, got "
                                f"{self.up[l].shape}", field=f"U[{l}]")
        return self

    # ---- pickle-free storage -------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"num_levels": np.array([self.num_levels], np.int64)}
        for l in range(self.num_levels):
            out[f"faces_{l}"] = np.asarray(self.faces[l], np.int64)
            out.update(_sparse_arrays(f"adjacency_{l}", self.adjacency[l]))
        for l in range(self.num_levels - 1):
            out.update(_sparse_arrays(f"down_{l}", self.down[l]))
            out.update(_sparse_arrays(f"up_{l}", self.up[l]))
        return out

    @classmethod
    def from_arrays(cls, arrays: dict, source: str | os.PathLike = "<arrays>"):
        try:
            L = int(np.asarray(arrays["num_levels"]).reshape(-1)[0])
            return cls(
                faces=[np.asarray(arrays[f"faces_{l}"], np.int64) for l in range(L)],
                down=[_sparse_from(arrays, f"down_{l}") for l in range(L - 1)],
                up=[_sparse_from(arrays, f"up_{l}") for l in range(L - 1)],
                adjacency=[_sparse_from(arrays, f"adjacency_{l}") for l in range(L)],
            ).validate(source)
        except KeyError as e:
            raise DataError(source, "missing array", field=str(e.args[0])) from e

    def save(self, path: str | os.PathLike) -> None:
        save_npz_atomic(path, self.to_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MeshHierarchy":
        return cls.from_arrays(load_npz(path, required=("num_levels",)), source=path)


def _sparse_arrays(prefix: str, m) -> dict[str, np.ndarray]:
    m = scipy.sparse.csr_matrix(m)
    m.sort_indices()
    return {f"{prefix}_data": m.data.astype(np.float64),
            f"{prefix}_indices": m.indices.astype(np.int64),
            f"{prefix}_indptr": m.indptr.astype(np.int64),
            f"{prefix}_shape": np.array(m.shape, np.int64)}


def _sparse_from(arrays, prefix: str) -> scipy.sparse.csr_matrix:
    shape = tuple(int(s) for s in arrays[f"{prefix}_shape"])
    return scipy.sparse.csr_matrix((arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"],
                                    arrays[f"{prefix}_indptr"]), shape=shape)


# --------------------------------------------------------------------------------------------
# Building


def adjacency_from_faces(faces: np.ndarray, num_vertices: int) -> scipy.sparse.csr_matrix:
    """(n, n) symmetric 0/1 float32 matrix of mesh edges."""
    e = np.asarray(faces, np.int64)[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    e = np.concatenate([e, e[:, ::-1]])
    m = scipy.sparse.csr_matrix((np.ones(len(e), np.float32), (e[:, 0], e[:, 1])),
                                shape=(num_vertices, num_vertices))
    m.data[:] = 1.0  # duplicates were summed
    m.setdiag(0)
    m.eliminate_zeros()
    return m


def _is_closed_manifold(faces: np.ndarray, num_vertices: int) -> bool:
    _, counts = mesh_edges(faces)
    return bool(np.all(counts == 2)) and len(np.unique(faces)) == num_vertices


def _decimate(vertices: np.ndarray, faces: np.ndarray, target_vertices: int):
    """Quadric decimation to about `target_vertices`; returns (coarse vertices, faces).

    A collapse can rarely pinch a closed input into a non-manifold result; then other
    aggressiveness settings are tried. Preference: closed manifold and near the target, else
    near the target, else the first result.
    """
    # Imported here, not at the top: a served model's environment (stdformer.serving
    # REQUIREMENTS) loads hierarchies but never builds one, and has no fast-simplification.
    import fast_simplification

    # Keep the input's faces-per-vertex ratio (a closed genus-0 mesh has F = 2V - 4).
    n, F = len(vertices), len(faces)
    target_faces = max(4, min(F - 1, int(round(F * (target_vertices - 2) / max(n - 2, 1)))))
    want_clean = _is_closed_manifold(faces, n)
    results = []
    for agg in (7.0, 5.0, 3.0, 9.0):
        v, f = fast_simplification.simplify(np.asarray(vertices, np.float64),
                                            np.asarray(faces, np.int32),
                                            target_count=target_faces, agg=agg)
        v, f = drop_unused_vertices(np.asarray(v, np.float64), np.asarray(f, np.int64))
        near = abs(len(v) - target_vertices) <= max(2, 0.05 * target_vertices)
        clean = not want_clean or _is_closed_manifold(f, len(v))
        if near and clean:
            return v, f
        results.append((near, v, f))
    near_ones = [r for r in results if r[0]]
    _, v, f = (near_ones or results)[0]
    return v, f


def _select_nearest_unique(fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """Index into `fine` for each coarse vertex: its nearest fine vertex not taken by a coarse
    vertex that is closer to its own pick (greedy by distance), so selections are distinct."""
    tree = cKDTree(fine)
    k = min(16, len(fine))
    dist, idx = tree.query(coarse, k=k)
    dist, idx = dist.reshape(len(coarse), k), idx.reshape(len(coarse), k)
    order = np.lexsort((np.arange(len(coarse)), dist[:, 0]))
    taken = np.zeros(len(fine), bool)
    pick = np.full(len(coarse), -1, np.int64)
    for i in order:
        for j in idx[i]:
            if not taken[j]:
                pick[i], taken[j] = j, True
                break
        if pick[i] < 0:  # all 16 taken (rare): nearest free vertex overall
            free = np.flatnonzero(~taken)
            j = free[np.argmin(np.linalg.norm(fine[free] - coarse[i], axis=1))]
            pick[i], taken[j] = j, True
    return pick


def closest_points_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """Barycentric weights (..., 3) of the closest point on triangle (a, b, c) to p (..., 3)
    (Ericson, Real-Time Collision Detection 5.1.5, vectorised)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = np.einsum("...i,...i", ab, ap), np.einsum("...i,...i", ac, ap)
    bp = p - b
    d3, d4 = np.einsum("...i,...i", ab, bp), np.einsum("...i,...i", ac, bp)
    cp = p - c
    d5, d6 = np.einsum("...i,...i", ab, cp), np.einsum("...i,...i", ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        v_in, w_in = vb / denom, vc / denom
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
    bary = np.stack([1 - v_in - w_in, v_in, w_in], axis=-1)
    cases = [  # later cases override earlier ones, in Ericson's order reversed
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), (0 * t_bc, 1 - t_bc, t_bc)),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), (1 - t_ac, 0 * t_ac, t_ac)),
        ((d6 >= 0) & (d5 <= d6), (0 * d6, 0 * d6, 1 + 0 * d6)),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), (1 - t_ab, t_ab, 0 * t_ab)),
        ((d3 >= 0) & (d4 <= d3), (0 * d3, 1 + 0 * d3, 0 * d3)),
        ((d1 <= 0) & (d2 <= 0), (1 + 0 * d1, 0 * d1, 0 * d1)),
    ]
    for mask, (u, v, w) in cases:
        bary = np.where(mask[..., None], np.stack([u, v, w], axis=-1), bary)
    bary = np.nan_to_num(bary, nan=1.0 / 3.0)
    bary = np.clip(bary, 0.0, 1.0)
    return bary / bary.sum(axis=-1, keepdims=True)


def upsampling_matrix(fine: np.ndarray, coarse: np.ndarray, coarse_faces: np.ndarray,
                      k: int = 8) -> scipy.sparse.csr_matrix:
    """(n_fine, n_coarse): each fine vertex as barycentric weights on its closest coarse face.

    Candidate faces are those touching the k coarse vertices nearest to the fine vertex.
    """
    nc = len(coarse)
    faces = np.asarray(coarse_faces, np.int64)
    # vertex -> incident faces, padded with -1
    inc = [[] for _ in range(nc)]
    for fi, tri in enumerate(faces):
        for v in tri:
            inc[v].append(fi)
    width = max(len(x) for x in inc)
    incident = np.full((nc, width), -1, np.int64)
    for v, lst in enumerate(inc):
        incident[v, :len(lst)] = lst
    _, near = cKDTree(coarse).query(fine, k=min(k, nc))
    near = near.reshape(len(fine), -1)
    cand = incident[near].reshape(len(fine), -1)  # (N, k*width), -1 = none
    # distinct (fine vertex, candidate face) pairs
    row = np.repeat(np.arange(len(fine)), cand.shape[1])
    flat = cand.reshape(-1)
    key = np.unique(row[flat >= 0] * len(faces) + flat[flat >= 0])
    row, fid = key // len(faces), key % len(faces)
    tri = faces[fid]
    a, b, c = coarse[tri[:, 0]], coarse[tri[:, 1]], coarse[tri[:, 2]]
    p = fine[row]
    bary = closest_points_on_triangles(p, a, b, c)
    closest = bary[:, 0:1] * a + bary[:, 1:2] * b + bary[:, 2:3] * c
    dist = np.linalg.norm(closest - p, axis=1)
    order = np.lexsort((fid, dist, row))  # per fine vertex: nearest face first (ties: lowest id)
    first = order[np.flatnonzero(np.r_[True, np.diff(row[order]) > 0])]
    assert len(first) == len(fine)
    cols, vals = tri[first], bary[first]      # (N, 3) each
    indptr = np.arange(0, 3 * len(fine) + 1, 3)
    m = scipy.sparse.csr_matrix((vals.reshape(-1), cols.reshape(-1), indptr),
                                shape=(len(fine), nc))
    m.has_sorted_indices = False
    m.sort_indices()  # duplicates cannot occur: the 3 corners of a face are distinct
    return m


def build_hierarchy(vertices: np.ndarray, faces: np.ndarray,
                    factors: tuple[int, ...] | list[int] = (4, 4)) -> MeshHierarchy:
    """Coarse levels of mesh (vertices (V, 3), faces (F, 3)), each `factor` times fewer vertices
    (ceil), by quadric decimation; deterministic."""
    verts = np.asarray(vertices, np.float64)
    level_faces = [np.asarray(faces, np.int64)]
    level_verts = [verts]
    down, up = [], []
    for factor in factors:
        if int(factor) < 2:
            raise ValueError(f"downsampling factors must be >= 2, got {factor}")
        fine, fine_faces = level_verts[-1], level_faces[-1]
        target = math.ceil(len(fine) / int(factor))
        coarse_pos, coarse_faces = _decimate(fine, fine_faces, target)
        pick = _select_nearest_unique(fine, coarse_pos)
        coarse = fine[pick]
        n_c = len(coarse)
        D = scipy.sparse.csr_matrix((np.ones(n_c), (np.arange(n_c), pick)),
                                    shape=(n_c, len(fine)))
        U = upsampling_matrix(fine, coarse, coarse_faces)
        down.append(D)
        up.append(U)
        level_verts.append(coarse)
        level_faces.append(coarse_faces)
    adjacency = [adjacency_from_faces(f, len(v)) for v, f in zip(level_verts, level_faces)]
    return MeshHierarchy(faces=level_faces, down=down, up=up, adjacency=adjacency).validate()


# --------------------------------------------------------------------------------------------
# The standard GraphCMR / METRO file


MESH_DOWNSAMPLING_KEYS = ("A", "U", "D", "F")


def load_mesh_downsampling(path: str | os.PathLike) -> MeshHierarchy:
    """Read `mesh_downsampling.npz` (A: adjacencies, U: upsampling, D: downsampling, F: faces;
    object arrays of scipy sparse matrices / int arrays) without running pickled code.

    Only A, U, D and F are read. The standard file also holds `M`, the meshes pickled as
    `__main__.MyMesh` objects (a class only the script that wrote the file had); nothing needs
    it, so it is never unpickled. Sparse matrices pickled by old SciPy (module paths
    `scipy.sparse.csc` etc.) load as today's classes."""
    path = Path(path)
    raw = load_npz_restricted(path, NUMPY_GLOBALS | SCIPY_SPARSE_GLOBALS,
                              keys=MESH_DOWNSAMPLING_KEYS, stubs=pickle_stubs())
    for key in MESH_DOWNSAMPLING_KEYS:
        if key not in raw:
            raise DataError(path, "missing array", field=key)

    def items(key):
        v = raw[key]
        return list(v) if isinstance(v, (np.ndarray, list, tuple)) else [v]

    def as_csr(m, field):
        try:
            if scipy.sparse.issparse(m):
                return _rebuild_sparse(m).tocsr()
            return scipy.sparse.csr_matrix(np.asarray(m, np.float64))
        except (ValueError, TypeError, KeyError) as e:
            raise DataError(path, f"not a matrix: {e}", field=field) from e

    A = [as_csr(m, f"A[{i}]") for i, m in enumerate(items("A"))]
    U = [as_csr(m, f"U[{i}]") for i, m in enumerate(items("U"))]
    D = [as_csr(m, f"D[{i}]") for i, m in enumerate(items("D"))]
    F = []
    for i, f in enumerate(items("F")):
        f = f.toarray() if scipy.sparse.issparse(f) else np.asarray(f)
        if not np.issubdtype(f.dtype, np.integer) and not np.issubdtype(f.dtype, np.floating):
            raise DataError(path, "faces must be integer arrays", field=f"F[{i}]")
        F.append(f.astype(np.int64))
    adjacency = []
    for a in A:  # binary, symmetric, no self loops (some files store weights or self loops)
        a = a.copy()
        a.setdiag(0)
        a.eliminate_zeros()
        a.data[:] = 1.0
        adjacency.append(a.astype(np.float32))
    return MeshHierarchy(faces=F, down=D, up=U, adjacency=adjacency).validate(path)


__all__ = ["MeshHierarchy", "build_hierarchy", "load_mesh_downsampling", "adjacency_from_faces",
           "upsampling_matrix", "closest_points_on_triangles"]
