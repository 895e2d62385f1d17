"""The files users bring, built like the real ones (tests/realfiles.py): the official SMPL
pickle, mesh_downsampling.npz, J_regressor_h36m_correct.npy; the consistency checks between
them and the body, and the left/right mirror correspondence."""

from __future__ import annotations

import dataclasses
import pickle
import sys

import numpy as np
import pytest
import scipy.sparse
import torch

from realfiles import (Evil, npy_object_member, object_array, official_like_hierarchy,
                       official_smpl_pickle, smpl_body_dir, write_mesh_downsampling)
from stdformer.body import (H36M_FLIP_PERM, SMPL_FLIP_PERM, BodyModel, build_hierarchy,
                            convert_smpl, derive_h36m_regressor,
                            load_mesh_downsampling, load_smpl_file, make_procedural_body,
                            write_body_dir, write_smpl_pkl)
from stdformer.body.smpl_files import SMPL_KEYS
from stdformer.io import DataError
from stdformer.safe_loading import UnsafePickleError


@pytest.fixture(scope="module")
def body(synth_body):
    return synth_body


# ---------------------------------------------------------------------------------------------
# mesh_downsampling.npz


def test_standard_mesh_downsampling_file_loads_without_unpickling_m(body, tmp_path):
    """The file as GraphCMR / METRO / FastMETRO distribute it: csc matrices pickled by old
    SciPy (scipy.sparse.csc paths) and an `M` member naming __main__.MyMesh, which nothing
    needs and nothing may unpickle (np.load itself cannot: the class does not exist)."""
    h = body.hierarchy
    path = tmp_path / "mesh_downsampling.npz"
    write_mesh_downsampling(path, h, body.smpl.v_template.numpy())
    with pytest.raises(AttributeError, match="MyMesh"):
        np.load(path, allow_pickle=True, encoding="latin1")["M"]
    loaded = load_mesh_downsampling(path)
    assert loaded.num_vertices == h.num_vertices
    for a, b in zip(loaded.up + loaded.down + loaded.adjacency, h.up + h.down + h.adjacency):
        assert a.shape == b.shape and abs(a - b).max() < 1e-6
    for a, b in zip(loaded.faces, h.faces):
        assert np.array_equal(a, b)

    # M is never unpickled: one that would run code is ignored, not run
    write_mesh_downsampling(path, h, body.smpl.v_template.numpy(),
                            m_member=npy_object_member([Evil(tmp_path / "pwned")]))
    assert load_mesh_downsampling(path).num_vertices == h.num_vertices
    assert not (tmp_path / "pwned").exists()

    evil = tmp_path / "evil.npz"
    np.savez(evil, A=object_array([Evil(tmp_path / "pwned")]), U=object_array([]),
             D=object_array([]), F=object_array([]))
    with pytest.raises(UnsafePickleError, match="evil.npz"):
        load_mesh_downsampling(evil)
    assert not (tmp_path / "pwned").exists()
    np.savez(tmp_path / "partial.npz", A=object_array([]), U=object_array([]))
    with pytest.raises(DataError, match="D"):
        load_mesh_downsampling(tmp_path / "partial.npz")


# ---------------------------------------------------------------------------------------------
# SMPL files


@pytest.fixture(scope="session")
def official_pkl(arrays, tmp_path_factory):
    path = tmp_path_factory.mktemp("smpl") / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    path.write_bytes(official_smpl_pickle(arrays, protocol=2))
    return path


@pytest.mark.parametrize("protocol", [0, 2])
def test_load_official_pickle_with_chumpy_stub(small_arrays, tmp_path, protocol):
    arrays = small_arrays
    data = official_smpl_pickle(arrays, protocol)
    assert b"chumpy" in data and "chumpy" not in sys.modules
    path = tmp_path / f"SMPL_p{protocol}.pkl"
    path.write_bytes(data)
    loaded = load_smpl_file(path)
    assert set(loaded) == set(SMPL_KEYS)
    assert np.array_equal(loaded["shapedirs"], arrays["shapedirs"])
    assert np.array_equal(loaded["v_template"], arrays["v_template"])
    assert scipy.sparse.issparse(loaded["J_regressor"])
    assert np.array_equal(loaded["J_regressor"].toarray(), arrays["J_regressor"].toarray())
    assert np.array_equal(loaded["weights"], arrays["weights"])  # from a chumpy Reshape
    assert loaded["f"].dtype == np.uint32 and loaded["kintree_table"][0, 0] == 4294967295
    # a chumpy expression is not evaluated: a clear error naming file and key
    path.write_bytes(official_smpl_pickle(arrays, protocol, unsupported=True))
    with pytest.raises(DataError, match="chumpy.ch_ops.add") as err:
        load_smpl_file(path)
    assert err.value.field == "posedirs" and str(path) in str(err.value)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil(marker)}, protocol=2))
    with pytest.raises(UnsafePickleError) as err:
        load_smpl_file(path)
    assert str(path) in str(err.value) and "system" in str(err.value)
    assert not marker.exists()


def test_truncated_or_incomplete_smpl_file_names_file_and_key(official_pkl, arrays, tmp_path):
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(official_pkl.read_bytes()[: 200_000])
    with pytest.raises(DataError, match="cut.pkl"):
        load_smpl_file(cut)
    partial = {k: v for k, v in arrays.items() if k != "weights"}
    (tmp_path / "partial.pkl").write_bytes(pickle.dumps(partial))
    with pytest.raises(DataError) as err:
        load_smpl_file(tmp_path / "partial.pkl")
    assert err.value.field == "weights" and "partial.pkl" in str(err.value)
    bad = dict(arrays, posedirs=np.zeros((5, 3, 207)))
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError) as err:
        load_smpl_file(tmp_path / "bad.pkl")
    assert err.value.field == "posedirs"


def test_convert_round_trip_and_smpl_pickle_writer(official_pkl, arrays, tmp_path):
    import smplx

    npz = tmp_path / "smpl.npz"
    convert_smpl(official_pkl, npz)
    with np.load(npz, allow_pickle=False) as z:  # plain arrays only
        assert set(z.files) == set(SMPL_KEYS)
        struct = smplx.utils.Struct(**{k: z[k] for k in z.files})
    back = load_smpl_file(npz)
    orig = load_smpl_file(official_pkl)
    for key in SMPL_KEYS:
        a, b = back[key], orig[key]
        if scipy.sparse.issparse(a):
            a, b = a.toarray(), b.toarray()
        assert np.array_equal(a, b) and a.dtype == b.dtype, key
    smpl_from_npz = smplx.SMPL(model_path=str(npz), data_struct=struct)
    assert np.allclose(smpl_from_npz.v_template.numpy(), arrays["v_template"], atol=1e-6)

    pkl = tmp_path / "smpl" / "SMPL_NEUTRAL.pkl"
    pkl.parent.mkdir()
    write_smpl_pkl(back, pkl)
    model = smplx.create(str(tmp_path), "smpl")
    assert np.allclose(model.J_regressor.numpy(), arrays["J_regressor"].toarray(), atol=1e-6)
    assert np.array_equal(load_smpl_file(pkl)["posedirs"], arrays["posedirs"])


def test_real_smpl_body_dir_needs_h36m_regressor(official_pkl, arrays, body, tmp_path):
    with pytest.raises(DataError) as err:
        write_body_dir(tmp_path / "b0", source=str(official_pkl))
    assert err.value.field == "h36m_regressor" and "body.h36m_regressor" in str(err.value)
    V = len(arrays["v_template"])
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((17, V - 1)))
    with pytest.raises(DataError, match="wrong.npy"):
        write_body_dir(tmp_path / "b1", source=str(official_pkl), h36m_regressor=wrong)
    assert not (tmp_path / "b1").exists()

    reg = tmp_path / "J_regressor_h36m_correct.npy"
    np.save(reg, derive_h36m_regressor(arrays).toarray())
    ds = tmp_path / "mesh_downsampling.npz"
    h = official_like_hierarchy(body.hierarchy, arrays["v_template"])
    write_mesh_downsampling(ds, h, arrays["v_template"])
    meta = write_body_dir(tmp_path / "real", source=str(official_pkl), h36m_regressor=reg,
                          mesh_downsampling=ds)
    assert meta["source"] == "smpl" and meta["source_file"] == official_pkl.name
    assert meta["levels"] == h.num_vertices
    real = BodyModel.from_dir(tmp_path / "real")
    assert real.body_model_id == meta["body_model_id"]
    out = real(torch.zeros(1, 72), torch.zeros(1, 10))
    ref = body(torch.zeros(1, 72), torch.zeros(1, 10))
    assert torch.allclose(out.vertices, ref.vertices, atol=1e-5)
    assert torch.allclose(out.joints_h36m, ref.joints_h36m, atol=1e-5)




# ---------------------------------------------------------------------------------------------
# Consistency checks


def shuffled_hierarchy(arrays):
    """A hierarchy of the same surface made for another vertex order (like SMPL's file next to
    a procedural body: equal counts, other vertices)."""
    v, f = arrays["v_template"], arrays["f"].astype(np.int64)
    order = np.random.default_rng(0).permutation(len(v))
    return build_hierarchy(v[order], np.argsort(order)[f])


def test_hierarchy_that_does_not_fit_the_body_is_refused_naming_both_files(small_arrays,
                                                                          tmp_path):
    ds = tmp_path / "mesh_downsampling.npz"
    write_mesh_downsampling(ds, shuffled_hierarchy(small_arrays), small_arrays["v_template"])
    with pytest.raises(DataError) as err:
        write_body_dir(tmp_path / "body", seed=1, resolution=1200, mesh_downsampling=ds)
    message = str(err.value)
    assert str(ds) in message and "procedural body (seed 1" in message
    assert "median edge" in message and err.value.field.startswith(("F[", "A["))
    assert not (tmp_path / "body").exists()

    # the hierarchy made for this body passes, and meta.json records what was measured
    good = build_hierarchy(small_arrays["v_template"], small_arrays["f"].astype(np.int64))
    write_mesh_downsampling(ds, good, small_arrays["v_template"])
    meta = write_body_dir(tmp_path / "body", seed=1, resolution=1200, mesh_downsampling=ds)
    fit = meta["checks"]["hierarchy_fit"]
    assert fit["levels"] == good.num_vertices
    for got, expected in zip(fit["median_edge_mm"], fit["expected_edge_mm"]):
        assert 0.5 * expected < got < 1.5 * expected
    assert meta["hierarchy_file"] == "mesh_downsampling.npz"
    assert meta["standard_smpl_hierarchy"]["ok"] is False  # procedural, and not 6890 vertices


def test_official_upsampling_weights_that_are_not_a_partition_of_unity_are_accepted(
        small_arrays, tmp_path):
    """The official file's U holds projected barycentric weights (COMA's construction): some
    negative, rows summing to 0.8 .. 1.2 rather than 1. A hierarchy is judged by its structure
    and geometry, so such a file is accepted; the same kind of file made for another vertex
    order is still refused."""
    v, f = small_arrays["v_template"], small_arrays["f"].astype(np.int64)
    official = official_like_hierarchy(build_hierarchy(v, f), v)
    sums = np.concatenate([np.asarray(u.sum(axis=1)).ravel() for u in official.up])
    assert np.abs(sums - 1).max() > 0.02                       # the real file's quirks
    assert min(u.data.min() for u in official.up) < 0
    assert all(np.all(np.diff(scipy.sparse.csr_matrix(u).indptr) == 3) for u in official.up)
    ds = tmp_path / "mesh_downsampling.npz"
    write_mesh_downsampling(ds, official, v)
    meta = write_body_dir(tmp_path / "body", seed=1, resolution=1200, mesh_downsampling=ds)
    fit = meta["checks"]["hierarchy_fit"]
    assert fit["levels"] == official.num_vertices and max(fit["upsampling_error_mm"]) < 10

    foreign = shuffled_hierarchy(small_arrays)
    write_mesh_downsampling(ds, official_like_hierarchy(foreign, v[np.random.default_rng(0)
                                                                 .permutation(len(v))]), v)
    with pytest.raises(DataError, match="does not fit the body template"):
        write_body_dir(tmp_path / "other", seed=1, resolution=1200, mesh_downsampling=ds)
    assert not (tmp_path / "other").exists()


def test_hierarchy_matrices_are_checked_for_structure(small_arrays, tmp_path):
    """A U row must interpolate one face of the coarser level; a D row must select one vertex."""
    v, f = small_arrays["v_template"], small_arrays["f"].astype(np.int64)
    good = build_hierarchy(v, f)
    ds = tmp_path / "mesh_downsampling.npz"

    up = good.up[0].tolil()
    row = next(r for r in range(up.shape[0]) if np.count_nonzero(up.data[r]) == 3)
    corners = list(up.rows[row])
    coarse_faces = good.faces[1]
    used = set(coarse_faces[np.isin(coarse_faces, corners).any(axis=1)].ravel())
    far = next(c for c in range(good.num_vertices[1]) if c not in used)
    weight = up[row, corners[0]]
    up[row, corners[0]] = 0
    up[row, far] = weight           # a vertex of no face around this row's corners
    bad_up = dataclasses.replace(good, up=[up.tocsr(), good.up[1]])
    write_mesh_downsampling(ds, bad_up, v)
    with pytest.raises(DataError) as err:
        write_body_dir(tmp_path / "body", seed=1, resolution=1200, mesh_downsampling=ds)
    assert err.value.field == "U[0]" and f"row {row} " in str(err.value)
    assert "not one face of the coarser level" in str(err.value)

    down = good.down[1].tolil()
    down[3, (down.rows[3][0] + 1) % down.shape[1]] = 1.0     # selects two vertices
    write_mesh_downsampling(ds, dataclasses.replace(good, down=[good.down[0], down.tocsr()]), v)
    with pytest.raises(DataError) as err:
        write_body_dir(tmp_path / "body", seed=1, resolution=1200, mesh_downsampling=ds)
    assert err.value.field == "D[1]" and "row 3 has 2 entries" in str(err.value)
    assert not (tmp_path / "body").exists()


def test_h36m_regressor_that_does_not_fit_the_body_is_refused(small_arrays, tmp_path):
    V = len(small_arrays["v_template"])
    good = derive_h36m_regressor(small_arrays).toarray()
    cases = {
        "scaled.npy": (2.0 * good, "sums to 2.000"),
        "outside.npy": (None, "outside the template"),
        "swapped.npy": (good[[0, 4, 5, 6, 1, 2, 3, *range(7, 17)]], "left and right swapped"),
        "reordered.npy": (good[[0, 1, 3, 2, *range(4, 17)]], "mirrors to"),
    }
    far = np.zeros((17, V))   # rows sum to 1, but +2 / -1 weights throw joints off the body
    far[:, int(np.argmax(small_arrays["v_template"][:, 1]))] = 2.0
    far[:, int(np.argmin(small_arrays["v_template"][:, 1]))] = -1.0
    cases["outside.npy"] = (far, "outside the template")
    for name, (reg, expected) in cases.items():
        np.save(tmp_path / name, reg)
        with pytest.raises(DataError) as err:
            write_body_dir(tmp_path / "body", seed=1, resolution=1200,
                           h36m_regressor=tmp_path / name)
        assert expected in str(err.value) and name in str(err.value), name
        assert "procedural body" in str(err.value) or "swapped" in expected or \
            "mirrors" in expected
        assert err.value.field == "J_regressor_h36m"
    assert not (tmp_path / "body").exists()


def test_body_info_prints_what_was_checked(synth_body_dir, capsys):
    from stdformer.cli import main

    assert main(["body", "info", str(synth_body_dir)]) == 0
    out = capsys.readouterr().out
    assert "6890 -> 1723 -> 431" in out
    for text in ("fits the template: median edge", "H36M regressor: rows sum to",
                 "mirror (flip augmentation): one-to-one, involution",
                 "standard SMPL hierarchy (needed by FastMETRO / STDFormer checkpoints): no"):
        assert text in out, text


# ---------------------------------------------------------------------------------------------
# Mirror correspondence


def reordered_body(arrays, drift: float, jitter: float = 0.0005, seed: int = 0) -> dict:
    """The body with SMPL-like asymmetries: its left side drifts up and forward by up to
    `drift` (growing towards the hand), every vertex is jittered, and the vertex order is
    shuffled (no mirrored order to rely on)."""
    rng = np.random.default_rng(seed)
    v = arrays["v_template"]
    weight = np.clip(v[:, 0] / 0.3, 0.0, 1.0)[:, None]
    v = v + rng.normal(0.0, jitter, v.shape) + weight * np.array([0.0, drift, drift / 2])
    order = rng.permutation(len(v))
    out = dict(arrays, v_template=v[order], f=np.argsort(order)[arrays["f"]].astype(np.uint32),
               shapedirs=arrays["shapedirs"][order], posedirs=arrays["posedirs"][order],
               weights=arrays["weights"][order],
               J_regressor=scipy.sparse.csc_matrix(arrays["J_regressor"])[:, order])
    out["J"] = out["J_regressor"] @ out["v_template"]
    return out


def _edges(faces):
    return np.unique(np.sort(np.asarray(faces, np.int64)[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2),
                             axis=1), axis=0)


def test_flip_is_a_true_mirror_on_an_smpl_like_asymmetric_mesh(arrays, tmp_path):
    """Like the real SMPL template (nearly symmetric, order not mirrored), where a greedy
    nearest-neighbour pairing left 213 off-centre vertices on themselves and made 1.75 m edges:
    the flipped template keeps its edge lengths, and flipping twice is the identity."""
    asym = reordered_body(arrays, drift=0.008)
    body = BodyModel.from_dir(smpl_body_dir(asym, tmp_path, "asym")[0])
    template = torch.from_numpy(asym["v_template"]).float()
    flipped = body.flip_vertices(template[None])[0]
    e = torch.from_numpy(_edges(asym["f"]))
    before = (template[e[:, 0]] - template[e[:, 1]]).norm(dim=-1)
    after = (flipped[e[:, 0]] - flipped[e[:, 1]]).norm(dim=-1)
    assert (after - before).abs().max() < 0.5 * before.median()   # no torn edge
    assert (flipped - template).norm(dim=-1).max() < 2 * before.median()  # lands on the body
    assert torch.allclose(body.flip_vertices(flipped[None])[0], template, atol=1e-6)
    perm = body.flip_perms["vertices"]
    fixed = perm == np.arange(len(perm))
    assert np.abs(asym["v_template"][fixed, 0]).max() < 0.5 * float(before.median())
    # joints: geometry agrees with the names
    assert list(body.flip_perms["smpl"]) == SMPL_FLIP_PERM
    assert list(body.flip_perms["h36m"]) == H36M_FLIP_PERM


def test_body_not_symmetric_enough_cannot_be_flipped(small_arrays, tmp_path):
    from stdformer.model.assets import load_body_assets
    from stdformer.train.config import AugmentConfig

    lopsided = dict(small_arrays)
    v = small_arrays["v_template"].copy()
    v[v[:, 0] > 0.5, 1] += 0.05                   # the left hand 5 cm higher than the right
    lopsided["v_template"] = v
    body_dir, meta = smpl_body_dir(lopsided, tmp_path, "lopsided")
    mirror = meta["checks"]["mirror"]
    assert mirror["ok"] is False and "not mirror-symmetric enough" in mirror["reason"]
    assert not (body_dir / "mirror.npz").exists()
    body = BodyModel.from_dir(body_dir)
    with pytest.raises(DataError, match="cannot flip this body"):
        body.flip_vertices(body.template()[None])
    perms = load_body_assets(body_dir).perms
    perms.check(AugmentConfig(enabled=True, flip_prob=0.0).may_flip)      # no flips: fine
    with pytest.raises(DataError, match="flip_prob: 0") as err:
        perms.check(AugmentConfig(enabled=True, flip_prob=0.5).may_flip)
    assert str(body_dir) in str(err.value)
