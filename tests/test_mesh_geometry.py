"""Mesh geometry every body module shares (stdformer.body.mesh_geometry)."""

import numpy as np

from stdformer.body.mesh_geometry import drop_unused_vertices, mesh_edges, vertex_normals

# A tetrahedron, faces counter-clockwise seen from outside.
TETRA_V = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
TETRA_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def test_a_closed_mesh_has_every_edge_in_two_faces_and_an_open_one_has_a_border():
    edges, counts = mesh_edges(TETRA_F)
    assert edges.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert counts.tolist() == [2] * 6
    edges, counts = mesh_edges(TETRA_F[:3].astype(np.uint32))          # the lid removed
    assert edges.dtype == np.int64
    assert edges[counts == 1].tolist() == [[1, 2], [1, 3], [2, 3]]


def test_vertex_normals_are_unit_and_point_out_of_a_closed_mesh():
    normals = vertex_normals(TETRA_V, TETRA_F)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0)
    outward = TETRA_V - TETRA_V.mean(axis=0)
    assert (np.einsum("ij,ij->i", normals, outward) > 0).all()
    np.testing.assert_allclose(normals[0], -np.ones(3) / np.sqrt(3))   # the corner at the origin


def test_dropping_unused_vertices_keeps_the_order_and_renumbers_the_faces():
    verts = np.concatenate([TETRA_V[:2], [[9.0, 9.0, 9.0]], TETRA_V[2:]])  # vertex 2 unused
    faces = np.where(TETRA_F >= 2, TETRA_F + 1, TETRA_F)
    kept, renumbered = drop_unused_vertices(verts, faces)
    np.testing.assert_array_equal(kept, TETRA_V)
    np.testing.assert_array_equal(renumbered, TETRA_F)
