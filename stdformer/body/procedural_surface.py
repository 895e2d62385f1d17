"""The procedural body's surface: signed distances to its primitives, their smooth union on
a grid over the x >= 0 half, marching cubes, decimation, then mirrored and welded at x = 0."""

from __future__ import annotations

import numpy as np

from stdformer.body.mesh_geometry import drop_unused_vertices, mesh_edges
from stdformer.body.procedural_primitives import Primitive

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
    uniq, counts = mesh_edges(faces)
    return np.unique(uniq[counts == 1])


def symmetric_surface(prims, joints, scales, resolution: int, voxel: float):
    """Closed, mirror-symmetric mesh: half surface (x >= 0) -> decimate -> mirror -> weld.

    Decimation settings are tried in turn until the welded mesh is a closed manifold (a
    collapse across the seam can rarely pinch it); the last one keeps the seam untouched.
    """
    # Imported here, not at the top: only the body stage builds a surface, and a served model's
    # environment (stdformer.serving.REQUIREMENTS) has no scikit-image nor fast-simplification.
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
    import fast_simplification  # here: see `symmetric_surface`

    # A closed genus-0 mesh has V = F/2 + 2, so the half gets resolution - 2 faces.
    target_faces = resolution - 2
    if target_faces < len(faces):
        verts, faces = fast_simplification.simplify(verts, faces.astype(np.int32),
                                                    target_count=target_faces, agg=agg,
                                                    preserve_border=keep_seam)
    verts, faces = drop_unused_vertices(np.asarray(verts, np.float64), np.asarray(faces, np.int64))
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
    uniq, counts = mesh_edges(faces)
    euler = len(np.unique(faces)) - len(uniq) + len(faces)
    return bool(np.all(counts == 2)) and euler == 2


def _signed_volume(verts, faces) -> float:
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)

