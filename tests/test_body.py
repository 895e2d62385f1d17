"""Body model layer: procedural SMPL-format body, SMPL files, mesh hierarchy, BodyModel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse
import torch

from stdformer.body import (
    COCO18_FLIP_PERM, COCO18_NAMES, H36M_FLIP_PERM, H36M_JOINT_NAMES, J14_FROM_H36M, J14_NAMES,
    SMPL_FLIP_PERM, SMPL_JOINT_NAMES, SMPL_PARENTS, BodyConfig, BodyModel, MeshHierarchy,
    build_hierarchy, derive_h36m_regressor, make_procedural_body, write_body_dir,
)
from stdformer.body.smpl_files import SMPL_KEYS
from stdformer.config import from_dict
from stdformer.io import DataError, load_npz

# ---------------------------------------------------------------------------------------------
# Shared fixtures (built once per session: the default body takes about a second)


@pytest.fixture(scope="session")
def body_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("body") / "body"
    write_body_dir(out, source="procedural", seed=0)
    return out


@pytest.fixture(scope="session")
def body(body_dir):
    return BodyModel.from_dir(body_dir)


def _edges(faces):
    e = np.sort(np.asarray(faces, np.int64)[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    return np.unique(e, axis=0, return_counts=True)


def _num_components(faces, n):
    e, _ = _edges(faces)
    adj = scipy.sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    return scipy.sparse.csgraph.connected_components(adj, directed=False)[0]


def _rotvec(axis, angle):
    return torch.tensor(axis, dtype=torch.float32) * angle


# ---------------------------------------------------------------------------------------------
# Constants


def test_joint_constants_and_flip_permutations():
    assert len(SMPL_JOINT_NAMES) == 24 and len(H36M_JOINT_NAMES) == 17 and len(COCO18_NAMES) == 18
    assert SMPL_PARENTS == [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17,
                            18, 19, 20, 21]
    assert SMPL_FLIP_PERM == [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19,
                              18, 21, 20, 23, 22]
    assert H36M_FLIP_PERM == [0, 4, 5, 6, 1, 2, 3, 7, 8, 9, 10, 14, 15, 16, 11, 12, 13]
    assert COCO18_FLIP_PERM == [0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16]
    for names, perm in ((SMPL_JOINT_NAMES, SMPL_FLIP_PERM), (H36M_JOINT_NAMES, H36M_FLIP_PERM),
                        (COCO18_NAMES, COCO18_FLIP_PERM)):
        assert [perm[p] for p in perm] == list(range(len(perm)))  # involution
        for i, p in enumerate(perm):
            a, b = names[i].lower(), names[p].lower()
            assert a.replace("l_", "x_").replace("r_", "l_").replace("x_", "r_") == b or a == b
    # J14 picks the H36M joints it names (Head_Top is H36M's "Head").
    assert J14_FROM_H36M == [3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10]
    assert [H36M_JOINT_NAMES[i] for i in J14_FROM_H36M] == [
        n.replace("Head_Top", "Head") for n in J14_NAMES]


# ---------------------------------------------------------------------------------------------
# Procedural body


def test_procedural_body_is_a_closed_human_shaped_smpl_mesh(arrays):
    v, f = arrays["v_template"], arrays["f"]
    V = len(v)
    assert 3000 <= V <= 7000 and v.dtype == np.float64 and f.dtype == np.uint32
    assert arrays["shapedirs"].shape == (V, 3, 10)
    assert arrays["posedirs"].shape == (V, 3, 207)
    assert arrays["J_regressor"].shape == (24, V) and scipy.sparse.issparse(arrays["J_regressor"])
    assert arrays["weights"].shape == (V, 24)
    kt = arrays["kintree_table"]
    assert kt[0, 0] == 4294967295 and list(kt[0, 1:]) == SMPL_PARENTS[1:]
    assert list(kt[1]) == list(range(24))
    # one closed, consistently oriented, genus-0 surface, facing outwards
    edges, counts = _edges(f)
    assert np.all(counts == 2)
    assert V - len(edges) + len(f) == 2
    assert _num_components(f, V) == 1
    directed = np.asarray(f, np.int64)[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    assert len(np.unique(directed, axis=0)) == len(directed)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6
    assert 0.045 < volume < 0.09  # m^3: a 60-75 kg person
    # rest T-pose conventions: y up, ~1.7 m, pelvis near origin, left = +x, arms out
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.6 < height < 1.8
    J = arrays["J"]
    assert np.linalg.norm(J[0]) < 0.3
    assert J[15, 1] > J[12, 1] > J[0, 1] > J[4, 1] > J[7, 1]
    assert J[1, 0] > 0 > J[2, 0] and J[20, 0] > 0.6 and J[21, 0] < -0.6
    assert abs(J[20, 1] - J[16, 1]) < 0.05  # T-pose: wrist at shoulder height


def test_skinning_weights_are_convex_and_follow_body_parts(arrays):
    w = arrays["weights"]
    assert np.all(w >= 0) and np.allclose(w.sum(axis=1), 1.0)
    assert (w > 0).sum(axis=1).max() <= 4
    v, label = arrays["v_template"], np.argmax(w, axis=1)
    assert set(np.unique(label)) == set(range(24))  # every joint drives some vertices
    assert label[np.argmax(v[:, 1])] == 15          # top of the head -> head
    assert label[np.argmax(v[:, 0])] in (20, 22)    # left finger tips -> left hand
    assert label[np.argmin(v[:, 1])] in (7, 8, 10, 11)  # soles -> feet


def test_joint_regressor_recovers_the_skeleton(arrays):
    Jr = arrays["J_regressor"].toarray()
    assert np.all(Jr >= 0) and np.allclose(Jr.sum(axis=1), 1.0)
    assert (Jr > 0).sum(axis=1).max() < 400  # sparse rows
    err = np.linalg.norm(Jr @ arrays["v_template"] - arrays["J"], axis=1)
    assert err.max() < 1e-3


def test_same_seed_same_arrays_other_seed_other_valid_body(arrays):
    again = make_procedural_body(seed=0)
    for key in SMPL_KEYS:
        a, b = arrays[key], again[key]
        if scipy.sparse.issparse(a):
            a, b = a.toarray(), b.toarray()
        assert np.array_equal(a, b), key
    other = make_procedural_body(seed=3)
    assert other["v_template"].shape[0] > 3000
    assert not np.allclose(np.sort(other["v_template"][:, 1])[-10:],
                           np.sort(arrays["v_template"][:, 1])[-10:])
    edges, counts = _edges(other["f"])
    assert np.all(counts == 2) and len(other["v_template"]) - len(edges) + len(other["f"]) == 2
    assert np.allclose(other["weights"].sum(axis=1), 1.0)


def test_smaller_mesh_works_end_to_end(small_arrays):
    V = len(small_arrays["v_template"])
    assert 1150 <= V <= 1200
    with pytest.raises(ValueError, match="resolution"):
        make_procedural_body(resolution=10)
    # A non-6890 mesh needs its own smplx keypoint vertex ids: posing must still work.
    h = build_hierarchy(small_arrays["v_template"], small_arrays["f"], factors=(4,))
    assert h.num_vertices == [V, -(-V // 4)]
    small = BodyModel(small_arrays, derive_h36m_regressor(small_arrays), h)
    out = small(0.3 * torch.randn(2, 72), torch.randn(2, 10))
    assert out.vertices.shape == (2, V, 3) and torch.isfinite(out.vertices).all()
    with pytest.raises(ValueError, match="72"):
        small(torch.zeros(2, 69))


def test_hierarchy_works_for_other_topologies():
    # a torus (genus 1), not a body: 48 x 24 grid of quads
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 48, endpoint=False),
                       np.linspace(0, 2 * np.pi, 24, endpoint=False), indexing="ij")
    verts = np.stack([(1 + 0.3 * np.cos(v)) * np.cos(u), (1 + 0.3 * np.cos(v)) * np.sin(u),
                      0.3 * np.sin(v)], axis=-1).reshape(-1, 3)
    idx = np.arange(48 * 24).reshape(48, 24)
    a, b = idx, np.roll(idx, -1, axis=0)
    c, d = np.roll(idx, -1, axis=1), np.roll(b, -1, axis=1)
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3),
                            np.stack([a, d, c], -1).reshape(-1, 3)])
    h = build_hierarchy(verts, faces, factors=(3, 2))
    assert h.num_vertices[0] == 1152 and abs(h.num_vertices[1] - 384) <= 4
    assert abs(h.num_vertices[2] - h.num_vertices[1] / 2) <= 4
    for level in range(2):
        assert np.all(np.diff(h.up[level].indptr) == 3)
        assert np.allclose(np.asarray(h.up[level].sum(axis=1)).ravel(), 1.0)
    recon = np.linalg.norm(h.up[0] @ (h.down[0] @ verts) - verts, axis=1)
    assert recon.mean() < 0.02


def test_h36m_regressor_is_convex_and_anatomical(arrays):
    H = derive_h36m_regressor(arrays).toarray()
    V = len(arrays["v_template"])
    assert H.shape == (17, V) and np.all(H >= 0) and np.allclose(H.sum(axis=1), 1.0)
    j = H @ arrays["v_template"]
    name = {n: i for i, n in enumerate(H36M_JOINT_NAMES)}
    assert np.allclose(j[name["Pelvis"]], 0.5 * (j[name["L_Hip"]] + j[name["R_Hip"]]))
    top = arrays["v_template"][:, 1].max()
    assert abs(j[name["Head"]][1] - top) < 0.02 and j[name["Head"]][1] == j[:, 1].max()
    assert j[name["Nose"]][2] > j[name["Head"]][2] + 0.05  # nose in front of the head top
    assert j[name["L_Shoulder"]][0] > 0 > j[name["R_Shoulder"]][0]


# ---------------------------------------------------------------------------------------------
# Body directory and BodyModel


def test_body_dir_layout_loads_through_smplx(body_dir, arrays):
    import smplx

    meta = json.loads((body_dir / "meta.json").read_text())
    assert meta["source"] == "procedural" and meta["seed"] == 0
    assert meta["levels"] == [len(arrays["v_template"]), 1723, 431]
    for name in ("model.npz", "regressors.npz", "hierarchy.npz"):  # all pickle-free
        with np.load(body_dir / name, allow_pickle=False) as z:
            assert len(z.files) > 0
    regs = load_npz(body_dir / "regressors.npz")
    assert regs["J_regressor"].shape == (24, len(arrays["v_template"]))
    assert regs["J_regressor_h36m"].shape == (17, len(arrays["v_template"]))

    model = smplx.create(str(body_dir), "smpl")
    direct = smplx.SMPL(model_path=str(body_dir / "smpl" / "SMPL_NEUTRAL.pkl"))
    for m in (model, direct):
        assert np.allclose(m.v_template.numpy(), arrays["v_template"], atol=1e-6)
        out = m(betas=torch.zeros(1, 10), body_pose=torch.zeros(1, 69),
                global_orient=torch.zeros(1, 3))
        assert out.vertices.shape == (1, len(arrays["v_template"]), 3)
        assert np.allclose(out.joints[0, :24].detach().numpy(), arrays["J"], atol=1e-3)


def test_write_body_dir_is_deterministic(body_dir, tmp_path):
    again = tmp_path / "again"
    write_body_dir(again, source="procedural", seed=0)
    for name in ("smpl/SMPL_NEUTRAL.pkl", "model.npz", "regressors.npz", "hierarchy.npz",
                 "meta.json"):
        assert (again / name).read_bytes() == (body_dir / name).read_bytes(), name


def test_body_model_api(body, arrays):
    V = len(arrays["v_template"])
    assert body.num_vertices == V and body.faces.shape == (len(arrays["f"]), 3)
    assert body.faces.dtype == torch.long
    assert len(body.body_model_id) == 16 and body.meta["body_model_id"] == body.body_model_id
    assert list(body.parameters()) == [] and body.state_dict() == {}
    assert body.part_labels.shape == (V,) and int(body.part_labels.max()) == 23
    out = body(torch.zeros(2, 72), torch.zeros(2, 10))
    assert out.vertices.shape == (2, V, 3) and out.joints.shape == (2, 24, 3)
    assert out.joints_h36m.shape == (2, 17, 3)
    assert torch.allclose(out.vertices[0], torch.from_numpy(arrays["v_template"]).float(),
                          atol=1e-5)
    assert torch.allclose(out.joints_h36m, body.regress_h36m(out.vertices))
    moved = body(torch.zeros(1, 72), None, torch.tensor([[1.0, 2.0, 3.0]]))
    assert torch.allclose(moved.vertices[0] - out.vertices[0], torch.tensor([1.0, 2.0, 3.0]),
                          atol=1e-5)


def test_rotating_the_elbow_moves_the_wrist_only(body):
    pose = torch.zeros(1, 72)
    pose[0, 18 * 3:18 * 3 + 3] = _rotvec([0.0, 1.0, 0.0], np.pi / 2)  # left elbow
    rest, bent = body(torch.zeros(1, 72)), body(pose)
    j0, j1 = rest.joints[0], bent.joints[0]
    assert torch.linalg.norm(j1[20] - j0[20]) > 0.2         # left wrist swings
    assert torch.linalg.norm(j1[18] - j0[18]) < 1e-5        # the elbow itself stays
    assert torch.linalg.norm(j1[21] - j0[21]) < 1e-5        # right wrist unaffected
    expected = j0[18] + torch.tensor([0.0, 0.0, -1.0]) * torch.linalg.norm(j0[20] - j0[18])
    assert torch.linalg.norm(j1[20] - expected) < 0.02      # forearm now points to -z
    moved = torch.linalg.norm(bent.vertices[0] - rest.vertices[0], dim=1)
    assert moved[body.part_labels == 19].max() < 1e-5       # right forearm vertices stay


def test_betas_change_height_limbs_and_girth(body):
    def measure(betas):
        out = body(torch.zeros(1, 72), betas.unsqueeze(0))
        v, j = out.vertices[0], out.joints[0]
        waist = v[(v[:, 1] - j[3, 1]).abs() < 0.02]
        return {"height": float(v[:, 1].max() - v[:, 1].min()),
                "leg": float(torch.linalg.norm(j[7] - j[1])),
                "arm": float(torch.linalg.norm(j[20] - j[16])),
                "waist": float(torch.linalg.norm(waist[:, [0, 2]] - j[3, [0, 2]], dim=1).mean())}

    base = measure(torch.zeros(10))
    unit = lambda k: torch.nn.functional.one_hot(torch.tensor(k), 10).float() * 2.0  # noqa: E731
    tall, fat = measure(unit(0)), measure(unit(1))
    long_legs, long_arms = measure(unit(2)), measure(unit(3))
    assert tall["height"] - base["height"] > 0.1          # ~7 cm per unit beta
    assert fat["waist"] - base["waist"] > 0.02
    assert abs(fat["height"] - base["height"]) < 0.02
    assert long_legs["leg"] - base["leg"] > 0.05
    assert long_arms["arm"] - base["arm"] > 0.03
    assert abs(long_arms["leg"] - base["leg"]) < 1e-3
    shape = body.smpl.shapedirs.numpy()
    for k in range(10):  # every direction does something, a few cm per unit at most
        mag = np.linalg.norm(shape[:, :, k], axis=1)
        assert 0.005 < mag.max() < 0.08, k


def test_vertex_flip_perm_mirrors_meshes(body, arrays):
    perm = torch.from_numpy(body.flip_perms["vertices"])
    assert torch.equal(perm[perm], torch.arange(len(perm)))
    v = torch.from_numpy(arrays["v_template"])
    left, right = v[:, 0] > 0.01, v[:, 0] < -0.01
    assert bool(right[perm[left]].all()) and bool(left[perm[right]].all())
    assert torch.allclose(v[perm] * torch.tensor([-1.0, 1.0, 1.0], dtype=v.dtype), v,
                          atol=1e-6)
    # mirroring a posed mesh equals posing the mirrored pose (the body is symmetric)
    torch.manual_seed(0)
    pose, betas = 0.4 * torch.randn(3, 72), torch.randn(3, 10)
    flipped_pose = pose.reshape(3, 24, 3)[:, SMPL_FLIP_PERM] * torch.tensor([1.0, -1.0, -1.0])
    a = body.flip_vertices(body(pose, betas).vertices)
    b = body(flipped_pose.reshape(3, 72), betas).vertices
    assert (a - b).norm(dim=-1).max() < 3e-3


def test_body_dir_refuses_tampered_arrays(body_dir, tmp_path):
    import shutil

    copy = tmp_path / "body"
    shutil.copytree(body_dir, copy)
    arrays = load_npz(copy / "model.npz")
    arrays["v_template"] = arrays["v_template"] + 0.01
    np.savez(copy / "model.npz", **arrays)
    with pytest.raises(DataError, match="body_model_id"):
        BodyModel.from_dir(copy)
    with pytest.raises(DataError, match="meta.json"):
        BodyModel.from_dir(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------
# Mesh hierarchy


def test_hierarchy_levels_and_matrices(body, arrays):
    h = body.hierarchy
    V = len(arrays["v_template"])
    assert h.num_vertices == [V, 1723, 431]
    assert [len(f) for f in h.faces] == [len(arrays["f"]), 3442, 858]
    verts = arrays["v_template"]
    for level in range(2):
        D, U = h.down[level], h.up[level]
        n_f, n_c = h.num_vertices[level], h.num_vertices[level + 1]
        assert D.shape == (n_c, n_f) and U.shape == (n_f, n_c)
        assert np.all(np.diff(D.indptr) == 1) and np.all(D.data == 1.0)
        assert len(np.unique(D.indices)) == n_c  # distinct fine vertices
        assert np.all(np.diff(U.indptr) == 3) and np.all(U.data >= 0)
        assert np.allclose(np.asarray(U.sum(axis=1)).ravel(), 1.0)
        recon = np.linalg.norm(U @ (D @ verts) - verts, axis=1)
        assert recon.mean() < 0.006 and recon.max() < 0.1  # the max is at finger tips
        # each U row's 3 columns form a face of the coarse level
        coarse_faces = {tuple(sorted(f)) for f in h.faces[level + 1].tolist()}
        rows = U.indices.reshape(-1, 3)
        assert all(tuple(sorted(r)) in coarse_faces for r in rows[::97].tolist())
        verts = D @ verts
    for level, A in enumerate(h.adjacency):
        assert (A != A.T).nnz == 0 and A.diagonal().sum() == 0
        edges, _ = _edges(h.faces[level])
        assert A.nnz == 2 * len(edges)
    # BodyModel's composite maps agree with the matrices
    x = torch.from_numpy(arrays["v_template"]).float().unsqueeze(0)
    down2 = body.downsample(x, 2)
    expect = h.down[1] @ (h.down[0] @ arrays["v_template"])
    assert torch.allclose(down2[0], torch.from_numpy(expect).float(), atol=1e-6)
    assert body.upsample(down2, 2).shape == x.shape
    assert torch.allclose(body.template(2), down2[0]) and body.template(1).shape == (1723, 3)
    x = x.clone().requires_grad_(True)  # the model regresses through these maps
    body.upsample(body.downsample(x, 1), 1).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        body.downsample(x, 3)


def test_hierarchy_save_load_round_trip_and_determinism(arrays, body, tmp_path):
    h = body.hierarchy
    path = tmp_path / "h.npz"
    h.save(path)
    with np.load(path, allow_pickle=False) as z:
        assert "down_0_data" in z.files
    back = MeshHierarchy.load(path)
    for a, b in zip(h.to_arrays().items(), back.to_arrays().items()):
        assert a[0] == b[0] and np.array_equal(a[1], b[1])
    again = build_hierarchy(arrays["v_template"], arrays["f"], (4, 4))
    for (ka, a), (kb, b) in zip(h.to_arrays().items(), again.to_arrays().items()):
        assert ka == kb and np.array_equal(a, b), ka


def test_body_config_section():
    cfg = from_dict(BodyConfig, {}, source="params.yaml", prefix="body")
    assert cfg.source == "procedural" and cfg.downsample_factors == [4, 4]
    assert cfg.resolution == 6890
    with pytest.raises(DataError, match="body.resolutoin"):
        from_dict(BodyConfig, {"resolutoin": 3000}, source="params.yaml", prefix="body")
    with pytest.raises(DataError, match="downsample_factors"):
        from_dict(BodyConfig, {"downsample_factors": [4, 1]}, source="params.yaml",
                  prefix="body")
    with pytest.raises(DataError, match="h36m_regressor"):
        from_dict(BodyConfig, {"source": "/smpl/SMPL_NEUTRAL.pkl"}, source="params.yaml",
                  prefix="body")
