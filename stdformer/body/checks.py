"""Consistency checks between the files a body is made of, run by the body stage.

Each check returns a small dict for `meta.json` (what was measured, in mm where it is a length)
and raises `DataError` naming both files when they do not belong together:

* `check_hierarchy_fits`: the mesh hierarchy (mesh_downsampling.npz or a built one) against the
  body's template. Vertex counts alone do not tell two 6890-vertex meshes apart; geometry does.
  Every level's down-sampled template, joined by that level's faces, must have edges about as
  long as a mesh of that many vertices over the same surface has (the template's median edge x
  sqrt(n_0 / n_l)); each `D` row selects one vertex; each `U` row's columns are a face (or an
  edge or corner) of the coarser level; and up-sampling the down-sampled template must land
  near the template. A hierarchy made for another vertex order joins vertices from all over the
  body: its median edges are several times too long (measured: about 9x on the procedural body
  with a hierarchy of a shuffled copy).
  `U`'s weights are NOT required to sum to 1: the official file holds projected barycentric
  weights (COMA's `setup_deformation_transfer`) with row sums 0.83 .. 1.05 and hundreds of
  negative entries (reference section 7). Their geometry is what holds, and what is checked.
* `check_h36m_regressor`: rows are convex-ish combinations (each sums to about 1) and the 17
  joints of the template lie inside the template's bounding box.
* `standard_smpl_hierarchy`: whether a body is the standard SMPL mesh with the standard
  hierarchy file (431 / 1723 / 6890 vertices), the only one FastMETRO / STDFormer checkpoints
  fit (their vertex tokens, learnable up-sampling and decoder mask refer to its vertices).
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse

from stdformer.body.mesh_geometry import mesh_edges
from stdformer.io import DataError

# A level's median edge may be this many times the expected one (a fitting hierarchy: 0.95-1.0
# on the procedural body; a foreign one: about 9).
EDGE_RATIO_MAX = 2.0
# Up-sampled down-sampled template vs template: median distance in fine median edges (a fitting
# hierarchy: 0.03-0.1; a foreign one: about 20).
UPSAMPLING_ERROR_MAX = 1.0
# ... and the largest distance, in median edges of the coarser level: a fine vertex lies near
# its coarse face (the official file on the real template: 6.1 mm / 11.9 mm at most, well under
# one coarse edge; the procedural body's built hierarchy: 0.2).
UPSAMPLING_ERROR_WORST_MAX = 2.0
SELECTION_TOLERANCE = 1e-6      # D rows: one entry, equal to 1
REGRESSOR_ROW_SUM_TOLERANCE = 0.05
BOX_MARGIN = 0.05               # joints may lie this fraction of the box size outside it

STANDARD_SMPL_LEVELS = [6890, 1723, 431]
STANDARD_SMPL_FACES = [13776, 3442, 858]


def median_edge(points: np.ndarray, faces: np.ndarray) -> float:
    """Median length of the unique edges of `faces` (F, 3) over `points` (n, 3)."""
    e, _ = mesh_edges(faces)
    return float(np.median(np.linalg.norm(points[e[:, 0]] - points[e[:, 1]], axis=1)))


def selection_problem(down) -> str | None:
    """Why the (n_coarse, n_fine) matrix `down` is not a vertex selection (one entry a row,
    equal to 1, as in every known hierarchy file), or None."""
    d = scipy.sparse.csr_matrix(down, copy=True)
    d.eliminate_zeros()
    counts = np.diff(d.indptr)
    bad = np.flatnonzero(counts != 1)
    if len(bad):
        return (f"row {int(bad[0])} has {int(counts[bad[0]])} entries: each row must select "
                f"one fine vertex")
    off = np.flatnonzero(np.abs(d.data - 1.0) > SELECTION_TOLERANCE)
    if len(off):
        return f"row {int(off[0])} selects with weight {d.data[off[0]]:.4g}, not 1"
    return None


def upsampling_structure_problem(up, coarse_faces: np.ndarray) -> str | None:
    """Why the (n_fine, n_coarse) matrix `up` does not interpolate on the faces
    `coarse_faces` (F, 3), or None: every row must have 1 to 3 non-zero weights whose columns
    are a face of the coarser level (or an edge or a corner of one). The weights themselves may
    be negative and need not sum to 1 (projected barycentric weights)."""
    u = scipy.sparse.csr_matrix(up, copy=True)
    u.eliminate_zeros()
    u.sort_indices()
    counts = np.diff(u.indptr)
    bad = np.flatnonzero((counts < 1) | (counts > 3))
    if len(bad):
        return (f"row {int(bad[0])} has {int(counts[bad[0]])} non-zero weights, expected 1 to 3 "
                f"(the corners of one coarse face)")
    n = u.shape[1]
    faces = np.sort(np.asarray(coarse_faces, np.int64), axis=1)
    # Every face, edge and corner of the coarse mesh as one integer key (corners sorted;
    # -1 pads edges and corners): a row is fine when its sorted columns are one of them.
    subsets = np.concatenate([
        faces,
        np.column_stack([faces[:, [0, 1]], np.full(len(faces), -1)]),
        np.column_stack([faces[:, [0, 2]], np.full(len(faces), -1)]),
        np.column_stack([faces[:, [1, 2]], np.full(len(faces), -1)]),
        np.column_stack([faces.reshape(-1, 1), np.full((faces.size, 2), -1)]),
    ])
    allowed = np.unique(_subset_keys(subsets, n))
    cols = np.full((u.shape[0], 3), -1, np.int64)
    slot = np.arange(u.nnz) - np.repeat(u.indptr[:-1], counts)
    cols[np.repeat(np.arange(u.shape[0]), counts), slot] = u.indices
    outside = np.flatnonzero(~np.isin(_subset_keys(cols, n), allowed))
    if len(outside):
        r = int(outside[0])
        return (f"row {r} interpolates coarse vertices {[int(c) for c in cols[r] if c >= 0]}, "
                f"which are not one face of the coarser level ({len(outside)} such rows)")
    return None


def _subset_keys(rows: np.ndarray, n: int) -> np.ndarray:
    """(R, 3) vertex indices, -1 for none -> (R,) int64 keys, one per distinct row."""
    r = rows + 1                     # 0 .. n
    return (r[:, 0] * (n + 1) + r[:, 1]) * (n + 1) + r[:, 2]


def check_hierarchy_fits(template: np.ndarray, faces: np.ndarray, hierarchy,
                         hierarchy_file: str | os.PathLike, body_file: str) -> dict:
    """template (V, 3) and faces (F, 3) of the body, its `MeshHierarchy` -> the measurements;
    DataError (on `hierarchy_file`, naming `body_file`) when the hierarchy does not fit."""
    def refuse(problem: str, field: str) -> DataError:
        return DataError(hierarchy_file, f"{problem}: this hierarchy does not fit the body "
                         f"template of {body_file} (made for another mesh or vertex order?)",
                         field=field)

    template = np.asarray(template, np.float64)
    fine_edge = median_edge(template, faces)
    n0 = len(template)
    positions = [template]
    for down in hierarchy.down:
        positions.append(down @ positions[-1])
    edges_mm, expected_mm = [], []
    for level, (points, level_faces) in enumerate(zip(positions, hierarchy.faces)):
        adj = scipy.sparse.coo_matrix(hierarchy.adjacency[level])
        want = fine_edge * np.sqrt(n0 / len(points))
        face_edge = median_edge(points, level_faces)
        adj_edge = (float(np.median(np.linalg.norm(points[adj.row] - points[adj.col], axis=1)))
                    if adj.nnz else 0.0)
        for name, got in (("F", face_edge), ("A", adj_edge)):
            if got > EDGE_RATIO_MAX * want:
                raise refuse(f"level {level} ({len(points)} vertices): median edge "
                             f"{got * 1000:.0f} mm on the down-sampled template, expected about "
                             f"{want * 1000:.0f} mm", f"{name}[{level}]")
        edges_mm.append(round(face_edge * 1000, 2))
        expected_mm.append(round(want * 1000, 2))
    upsampling_mm = []
    for level, (up, down) in enumerate(zip(hierarchy.up, hierarchy.down)):
        problem = selection_problem(down)
        if problem:
            raise refuse(problem, f"D[{level}]")
        problem = upsampling_structure_problem(up, hierarchy.faces[level + 1])
        if problem:
            raise refuse(problem, f"U[{level}]")
        fine = positions[level]
        miss = np.linalg.norm(up @ (down @ fine) - fine, axis=1)
        error, worst = float(np.median(miss)), float(miss.max(initial=0.0))
        upsampling_mm.append(round(error * 1000, 2))
        if error > UPSAMPLING_ERROR_MAX * median_edge(fine, hierarchy.faces[level]):
            raise refuse(f"up-sampling the down-sampled template misses it by {error * 1000:.0f}"
                         f" mm (median)", f"U[{level}]")
        coarse_edge = median_edge(positions[level + 1], hierarchy.faces[level + 1])
        if worst > UPSAMPLING_ERROR_WORST_MAX * coarse_edge:
            raise refuse(f"up-sampling the down-sampled template misses vertex "
                         f"{int(np.argmax(miss))} by {worst * 1000:.0f} mm (over "
                         f"{UPSAMPLING_ERROR_WORST_MAX:g} coarse edges of "
                         f"{coarse_edge * 1000:.0f} mm)", f"U[{level}]")
    return {"levels": hierarchy.num_vertices, "median_edge_mm": edges_mm,
            "expected_edge_mm": expected_mm, "upsampling_error_mm": upsampling_mm}


def check_h36m_regressor(regressor: np.ndarray, template: np.ndarray,
                         regressor_file: str | os.PathLike, body_file: str) -> dict:
    """regressor (17, V) against the body template (V, 3) -> measurements; DataError naming
    both files when a row does not sum to about 1 or a joint falls outside the template."""
    reg = regressor.toarray() if scipy.sparse.issparse(regressor) else np.asarray(regressor)
    sums = reg.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > REGRESSOR_ROW_SUM_TOLERANCE)
    if len(bad):
        raise DataError(regressor_file, f"row {int(bad[0])} sums to {sums[bad[0]]:.3f}, not 1: "
                        f"not a joint regressor for the body of {body_file}",
                        field="J_regressor_h36m")
    joints = reg @ np.asarray(template, np.float64)
    lo, hi = template.min(axis=0), template.max(axis=0)
    margin = BOX_MARGIN * (hi - lo)
    outside = np.flatnonzero(((joints < lo - margin) | (joints > hi + margin)).any(axis=1))
    if len(outside):
        j = int(outside[0])
        raise DataError(regressor_file, f"joint {j} regresses to {np.round(joints[j], 3)} m, "
                        f"outside the template of {body_file} (box {np.round(lo, 3)} .. "
                        f"{np.round(hi, 3)}): made for another mesh?", field="J_regressor_h36m")
    return {"row_sums": [round(float(sums.min()), 4), round(float(sums.max()), 4)],
            "joints_inside_template": True}


def standard_smpl_hierarchy(meta: dict) -> tuple[bool, str]:
    """(is standard, why) from a body directory's meta.json: a real SMPL file (body.source a
    path), the hierarchy read from mesh_downsampling.npz (not built), 6890 / 1723 / 431
    vertices with SMPL's face counts, and the consistency checks passed. The procedural body has
    the same counts but is not SMPL: its 431 coarse vertices are other points of another mesh."""
    if meta.get("source") != "smpl":
        return False, f"the body is {meta.get('source', 'unknown')!r}, not an SMPL file"
    if meta.get("hierarchy") != "mesh_downsampling.npz":
        return False, (f"the hierarchy was {meta.get('hierarchy', 'not recorded')!r}, not read "
                       "from the standard mesh_downsampling.npz (set body.mesh_downsampling)")
    if meta.get("levels") != STANDARD_SMPL_LEVELS or meta.get("num_faces") != STANDARD_SMPL_FACES:
        return False, (f"levels {meta.get('levels')} / faces {meta.get('num_faces')} are not "
                       f"SMPL's {STANDARD_SMPL_LEVELS} / {STANDARD_SMPL_FACES}")
    if "hierarchy_fit" not in meta.get("checks", {}):
        return False, "the hierarchy was not checked against the template (rebuild the body)"
    return True, "SMPL file with the standard mesh_downsampling.npz hierarchy"


__all__ = ["check_hierarchy_fits", "check_h36m_regressor", "standard_smpl_hierarchy",
           "median_edge", "STANDARD_SMPL_LEVELS", "STANDARD_SMPL_FACES"]
