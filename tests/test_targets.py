"""Body-model targets of a track (`pose_track`, stdformer.body.track_posing): the fast track
path gives what the body model module gives, mapped through the camera, whichever matrix layout
(sparse or dense) it uses."""

import dataclasses

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from realfiles import smpl_body_dir
from stdformer.body import BodyModel, track_posing
from stdformer.data import targets


def _dense(m) -> np.ndarray:
    return m.toarray() if hasattr(m, "toarray") else np.asarray(m)


def official_format_body_dir(arrays, tmp_path):
    """A body directory made from an official-format SMPL pickle with what real SMPL has and
    the procedural body lacks: dense pose correctives, 300 shape components, an unsigned
    root parent (4294967295)."""
    rng = np.random.default_rng(0)
    arrays = dict(arrays)
    arrays["posedirs"] = arrays["posedirs"] + rng.normal(0, 1e-3, arrays["posedirs"].shape)
    extra = rng.normal(0, 1e-3, (*arrays["shapedirs"].shape[:2], 290))
    arrays["shapedirs"] = np.concatenate([arrays["shapedirs"], extra], axis=2)
    assert arrays["kintree_table"][0, 0] == 4294967295
    return smpl_body_dir(arrays, tmp_path, "SMPL_NEUTRAL")[0]


@pytest.mark.parametrize("kind", ["procedural", "official SMPL format"])
def test_posing_arrays_are_bit_for_bit_the_body_models_own(kind, synth_body_dir, small_arrays,
                                                           tmp_path):
    """PosingArrays.load reads the files without building the torch module (preprocess's
    start-up); its arrays must be exactly the rows BodyModel's smplx.SMPL holds for the
    vertices the H36M regressor reads, and its rest joints the SMPL regressor's."""
    body_dir = synth_body_dir if kind == "procedural" else \
        official_format_body_dir(small_arrays, tmp_path)
    arrays, body = track_posing.PosingArrays.load(body_dir), BodyModel.from_dir(body_dir)
    smpl = body.smpl
    assert isinstance(arrays.pose_basis, torch.Tensor) == (kind != "procedural")  # dense: BLAS
    assert arrays.body_model_id == body.body_model_id
    h36m = body.J_regressor_h36m.double().numpy()
    ids = np.flatnonzero((h36m != 0).any(axis=0))
    assert arrays.vertex_ids.tolist() == ids.tolist() and 0 < len(ids) < body.num_vertices
    num_vertices = body.num_vertices
    pose_basis = smpl.posedirs.t().numpy().reshape(num_vertices, 3, -1)[ids].reshape(
        3 * len(ids), -1)
    expected = {
        "v_template": smpl.v_template.numpy()[ids], "shapedirs": smpl.shapedirs.numpy()[ids],
        "pose_basis": pose_basis, "weights": smpl.lbs_weights.numpy()[ids],
        "parents": smpl.parents.numpy(), "h36m": h36m[:, ids], "h36m_rowsum": h36m.sum(axis=1)}
    assert expected["shapedirs"].shape[2] == 10
    for name, want in expected.items():
        if name in ("pose_basis", "weights", "h36m"):                     # laid out by _matrix
            want = _dense(track_posing._matrix(want))                    # (sparse: no -0.0)
        got = _dense(getattr(arrays, name))
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert got.tobytes() == want.tobytes(), name
    regressor = smpl.J_regressor.double().numpy()
    np.testing.assert_allclose(arrays.rest_joints, regressor @ smpl.v_template.double().numpy(),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(arrays.rest_joint_shapedirs, np.einsum(
        "jv,vcb->jcb", regressor, smpl.shapedirs.double().numpy()), rtol=0, atol=1e-12)


def _reference(body, poses, betas, trans, cam_poses, h36m=None):
    """BodyModel.forward in world coordinates, then the camera (float64), as preprocess did."""
    n = len(poses)
    with torch.no_grad():
        out = body(torch.as_tensor(poses, dtype=torch.float32),
                   torch.as_tensor(np.tile(betas, (n, 1)), dtype=torch.float32),
                   torch.as_tensor(trans, dtype=torch.float32))
    world = out.vertices.double().numpy()
    h36m_world = world.transpose(1, 0, 2).reshape(len(world[0]), -1)
    h36m_world = (h36m @ h36m_world).reshape(len(h36m), n, 3).transpose(1, 0, 2) \
        if h36m is not None else out.joints_h36m.double().numpy()

    def to_camera(points):
        return points @ cam_poses[:, :3, :3].transpose(0, 2, 1) + cam_poses[:, None, :3, 3]

    return to_camera(world), to_camera(out.joints.double().numpy()), to_camera(h36m_world)


@pytest.fixture(scope="module")
def track():
    rng = np.random.default_rng(0)
    n = 21  # not a multiple of the chunk
    cam_poses = np.tile(np.eye(4), (n, 1, 1))
    cam_poses[:, :3, :3] = Rotation.random(n, random_state=1).as_matrix()
    cam_poses[:, :3, 3] = rng.normal(0, 1, (n, 3)) + [0, 0, 6]
    return (rng.normal(0, 0.4, (n, 72)), rng.normal(0, 1, 10), rng.normal(0, 2, (n, 3)),
            cam_poses)


@pytest.mark.parametrize("sparse_below", [track_posing.SPARSE_BELOW, 0.0])
def test_pose_track_matches_the_body_model_through_the_camera(synth_body, synth_body_dir, track,
                                                              monkeypatch, sparse_below):
    monkeypatch.setattr(track_posing, "SPARSE_BELOW", sparse_below)
    arrays = track_posing.PosingArrays.load(synth_body_dir)
    assert isinstance(arrays.pose_basis, torch.Tensor) == (sparse_below == 0.0)
    out = track_posing.pose_track(arrays, *track, chunk=8)
    vertices, joints, h36m = _reference(synth_body, *track)
    assert out["vertices"].dtype == np.float32
    np.testing.assert_allclose(out["vertices"], vertices[:, arrays.vertex_ids], atol=2e-5)
    np.testing.assert_allclose(out["joints"], joints, atol=2e-5)
    np.testing.assert_allclose(out["joints_h36m"], h36m, atol=2e-5)


def test_h36m_regressor_rows_not_summing_to_one_are_regressed_before_the_camera(
        synth_body, synth_body_dir, track):
    """A regressor row's weights need not sum to 1: the joint is regressed from the world
    mesh (as the body model does), then moved into the camera."""
    arrays = track_posing.PosingArrays.load(synth_body_dir)
    h36m = synth_body.J_regressor_h36m.double().numpy() * np.linspace(0.9, 1.1, 17)[:, None]
    arrays = dataclasses.replace(arrays, h36m=track_posing._matrix(h36m[:, arrays.vertex_ids]),
                                 h36m_rowsum=h36m.sum(axis=1))
    _, _, expected = _reference(synth_body, *track, h36m=h36m)
    np.testing.assert_allclose(track_posing.pose_track(arrays, *track)["joints_h36m"], expected,
                               atol=2e-5)


@pytest.mark.parametrize("sparse_below", [track_posing.SPARSE_BELOW, 0.0])
def test_pose_track_chunk_size_is_only_a_speed_setting(synth_body_dir, track, monkeypatch,
                                                       sparse_below):
    """The chunk sets how many frames a skinning pass takes. With sparse posing matrices (a
    procedural body: scipy sums each output in a fixed order) every output is bit for bit the
    same whatever the chunk; dense ones (real SMPL's pose correctives) go through BLAS, whose
    kernels differ with the product's width, so there it is the same to float32 rounding."""
    monkeypatch.setattr(track_posing, "SPARSE_BELOW", sparse_below)
    arrays = track_posing.PosingArrays.load(synth_body_dir)
    whole = track_posing.pose_track(arrays, *track, chunk=len(track[0]))
    for chunk in (1, 5, 8, track_posing.CHUNK):
        out = track_posing.pose_track(arrays, *track, chunk=chunk)
        for name, array in whole.items():
            if sparse_below > 0:
                assert out[name].tobytes() == array.tobytes(), (chunk, name)
            else:
                np.testing.assert_allclose(out[name], array, rtol=0, atol=2e-6)


def test_the_shard_mesh_is_the_world_mesh_seen_from_the_camera_relative_to_the_pelvis(
        synth_body, track):
    """Shards store the camera-frame pose, not the mesh: posing that pose (no translation)
    gives the body's world mesh mapped through the camera, relative to the SMPL pelvis (what
    preprocess stored per frame before): the camera's rotation rides on the global
    orientation, its translation and the body's cancel on the pelvis."""
    poses, betas, _, cam_poses = track
    vertices, joints, _ = _reference(synth_body, *track)
    expected = vertices - joints[:, :1]
    pose_cam = torch.as_tensor(targets.camera_pose(poses, cam_poses))
    betas_cam = torch.as_tensor(np.tile(betas, (1, len(poses), 1)))
    mesh = synth_body.shard_mesh(pose_cam[None], betas_cam)
    assert mesh.shape == (1, len(poses), synth_body.num_vertices, 3)
    assert mesh.dtype == torch.float32 and not mesh.requires_grad
    np.testing.assert_allclose(mesh[0].numpy(), expected, atol=2e-5)
