"""OpenCV mesh renderer: projection, depth order, culling, shading, overlays."""

import numpy as np
import pytest

from stdformer.data.render import (
    Mesh, box_mesh, overlay_mesh, part_face_colors, project_points, rasterize, render_meshes,
)

K = np.array([[100.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]])
H, W = 48, 64
RED, BLUE = (0.0, 0.0, 255.0), (255.0, 0.0, 0.0)


def _triangle(z, size=0.4, color=RED, offset=(0.0, 0.0)):
    """A triangle facing the camera (counter-clockwise as seen from the camera) at depth z."""
    ox, oy = offset
    v = np.array([[-size + ox, size + oy, z], [size + ox, size + oy, z], [ox, -size + oy, z]])
    f = np.array([[0, 1, 2]])
    return Mesh(v, f, np.array([color]))


def test_project_points_matches_pinhole_formula():
    pts = np.array([[0.1, -0.2, 2.0], [0.0, 0.0, 1.0]])
    uv = project_points(pts, K)
    np.testing.assert_allclose(uv, [[32 + 100 * 0.05, 24 - 100 * 0.1], [32, 24]])


@pytest.mark.parametrize("near_first", [True, False])
def test_near_triangle_covers_far_one_in_any_order(near_first):
    near, far = _triangle(2.0, color=RED), _triangle(4.0, size=1.0, color=BLUE)
    meshes = [near, far] if near_first else [far, near]
    img = render_meshes(np.zeros((H, W, 3), np.uint8), meshes, K, ambient=1.0)
    centre = img[24, 32]
    assert centre[2] > 200 and centre[0] == 0  # red (BGR) wins at the centre
    # Outside the near triangle but inside the larger far one: blue.
    assert img[46, 32][0] > 200 and img[46, 32][2] == 0


def test_depth_order_within_one_mesh_and_raster_buffers():
    a, b = _triangle(3.0, size=1.0, color=BLUE), _triangle(1.5, color=RED)
    both = Mesh(np.concatenate([a.vertices, b.vertices]),
                np.concatenate([a.faces, b.faces + 3]),
                np.concatenate([a.face_colors, b.face_colors]))
    r = rasterize([both], K, H, W)
    assert r.face_id[24, 32] == 1  # the nearer face of the same mesh
    assert r.mesh_id[24, 32] == 0 and r.mesh_id[0, 0] == -1
    assert r.depth[24, 32] == pytest.approx(1.5, abs=1e-5)
    assert np.isinf(r.depth[0, 0])


def test_big_polygons_and_small_triangles_are_depth_merged():
    # A wall (painter's path: it covers more pixels than the small-triangle limit) and a small
    # triangle (z-buffer path); whichever is nearer must win.
    wall_v = np.array([[-5, -5, 3.0], [5, -5, 3.0], [5, 5, 3.0], [-5, 5, 3.0]])
    wall_f = np.array([[0, 1, 2], [0, 2, 3]])
    wall_f = wall_f[:, ::-1]  # counter-clockwise seen from the camera
    wall = Mesh(wall_v, wall_f, np.array([BLUE, BLUE]))
    for z, expect_red in ((2.0, True), (4.0, False)):
        tri = _triangle(z, size=0.05 * z)
        r = rasterize([wall, tri], K, H, W)
        assert r.mask.all()  # the wall fills the image
        assert (r.mesh_id[24, 32] == 1) == expect_red


def test_back_faces_are_culled_unless_asked_not_to():
    tri = _triangle(2.0)
    flipped = Mesh(tri.vertices, tri.faces[:, ::-1], tri.face_colors)
    assert rasterize([tri], K, H, W).mask.any()
    assert not rasterize([flipped], K, H, W).mask.any()
    assert rasterize([flipped], K, H, W, cull_back=False).mask.any()


def test_faces_behind_the_camera_are_not_drawn():
    assert not rasterize([_triangle(-2.0)], K, H, W, cull_back=False).mask.any()


def test_lambert_shading_darkens_oblique_faces():
    facing = _triangle(2.0, color=(200.0, 200.0, 200.0), offset=(-0.5, 0.0))
    oblique_v = facing.vertices.copy() + [1.0, 0.0, 0.0]
    oblique_v[:, 2] += (oblique_v[:, 0] - oblique_v[:, 0].mean()) * 2.0  # turned away
    oblique = Mesh(oblique_v, facing.faces, facing.face_colors)
    light = np.array([0.0, 0.0, -1.0])  # from the camera
    img = render_meshes(np.zeros((H, W, 3), np.uint8), [facing, oblique], K, light=light,
                        ambient=0.2)
    r = rasterize([facing, oblique], K, H, W)
    lit = img[r.mesh_id == 0].mean()
    dim = img[r.mesh_id == 1].mean()
    assert lit == pytest.approx(200, abs=2) and dim < lit - 40


def test_overlay_blends_with_the_image():
    base = np.full((H, W, 3), 100, np.uint8)
    tri = _triangle(2.0)
    out = overlay_mesh(base, tri.vertices, tri.faces, K, color=(200, 200, 200), alpha=0.5)
    inside = rasterize([tri], K, H, W).mask
    assert (out[~inside] == 100).all()
    assert 130 < out[inside].mean() < 150  # half of a shaded ~160-200 colour + half of 100
    assert (base == 100).all()  # input untouched


def test_box_mesh_is_closed_and_outward():
    v, f = box_mesh(np.array([0.0, 0.0, 0.0]), np.array([1.0, 2.0, 0.5]), yaw=0.3)
    assert v.shape == (8, 3) and f.shape == (12, 3)
    assert v[:, 1].min() == pytest.approx(0.0) and v[:, 1].max() == pytest.approx(2.0)
    tri = v[f]
    volume = np.einsum("fi,fi->f", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert volume == pytest.approx(1.0 * 2.0 * 0.5)  # positive: outward normals
    edges = np.sort(f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()  # closed


def test_part_face_colors_follow_the_first_vertex_label():
    faces = np.array([[0, 1, 2], [2, 3, 0]])
    labels = np.array([1, 0, 0, 2])
    palette = np.array([[0, 0, 0], [10, 10, 10], [20, 20, 20]])
    np.testing.assert_array_equal(part_face_colors(faces, labels, palette), [[10] * 3, [0] * 3])


def test_body_mesh_renders_as_one_closed_silhouette(synth_body):
    """A posed body seen from the front: a solid silhouette (no cracks between triangles)."""
    import cv2
    import torch

    out = synth_body(torch.zeros(1, 72), torch.zeros(1, 10))
    v = out.vertices[0].double().numpy()
    cam = np.stack([v[:, 0], -v[:, 1], -v[:, 2] + 3.5], -1)  # camera in front, facing the body
    faces = synth_body.faces.numpy()
    Kb = np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]])
    r = rasterize([Mesh(cam, faces, np.full((len(faces), 3), 128.0))], Kb, 240, 320)
    mask = r.mask.astype(np.uint8)
    assert mask.sum() > 2000
    # Holes inside the silhouette would show up as background pixels enclosed by the body.
    filled = mask.copy()
    cv2.floodFill(filled, None, (0, 0), 2)
    assert (filled == 0).sum() == 0
