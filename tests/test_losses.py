"""Loss terms on tiny hand-made meshes with hand-computed values."""

import dataclasses
import math

import pytest
import torch

from stdformer import losses
from stdformer.config import from_dict
from stdformer.io import DataError

B, S = 2, 3
N_COARSE, N_FINE = 3, 6

# Mid level: the unit square in the z = 0 plane, split along the diagonal 0-2.
SQUARE = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=torch.float64)
SQUARE_FACES = torch.tensor([[0, 1, 2], [0, 2, 3]])
SQUARE_MEAN_EDGE = (4 + math.sqrt(2)) / 5      # four unit sides and one diagonal


def only(**on) -> losses.LossConfig:
    """A config with every switch off except the named ones."""
    switches = {f.name: False for f in dataclasses.fields(losses.LossConfig)
                if isinstance(f.default, bool)}
    return losses.LossConfig(**{**switches, **on})


@pytest.fixture
def mesh_info():
    gen = torch.Generator().manual_seed(1)
    regressor = torch.rand(17, N_FINE, generator=gen, dtype=torch.float64)
    regressor = regressor / regressor.sum(1, keepdim=True)    # rows are convex combinations
    regressor[0] = 0.5 * (regressor[1] + regressor[4])        # pelvis = mid-hip, as in H36M
    return losses.MeshInfo(joint_regressor=regressor, mid_faces=SQUARE_FACES)


def make_target(mesh_info, seed=0):
    """A consistent target: J14 regressed from the fine mesh, 2D = projection through gt_cam."""
    gen = torch.Generator().manual_seed(seed)
    fine = torch.randn(B, S, N_FINE, 3, generator=gen, dtype=torch.float64)
    j14, _ = losses.regress_joints(fine, mesh_info.joint_regressor)
    cam = torch.tensor([1.5, 0.1, -0.2], dtype=torch.float64).expand(B, S, 3)
    centred = j14 - losses.mid_hip(j14)[..., None, :]
    mid = SQUARE + 0.1 * torch.randn(B, S, 4, 3, generator=gen, dtype=torch.float64)
    target = {
        "vertices_coarse": torch.randn(B, S, N_COARSE, 3, generator=gen, dtype=torch.float64),
        "vertices_mid": mid,
        "vertices_fine": fine,
        "joints3d": j14 + 5.0,                    # any translation: the loss centres it
        "joints2d": losses.project_weak_perspective(centred, cam),
        "joints2d_vis": torch.ones(B, S, 14, dtype=torch.float64),
        "valid": torch.ones(B, S, dtype=torch.bool),
    }
    return target, cam


def pred_from(target, cam):
    keys = ("vertices_coarse", "vertices_mid", "vertices_fine", "joints3d")
    pred = {k: target[k].clone().requires_grad_() for k in keys}
    pred["cam"] = cam.clone().requires_grad_()
    return pred


# --------------------------------------------------------------------------------------------


def test_defaults_are_the_published_recipe():
    cfg = losses.LossConfig()
    assert (cfg.weight_joints3d, cfg.weight_vertices, cfg.weight_edge_normal,
            cfg.weight_joints2d) == (1000.0, 100.0, 100.0, 100.0)
    assert tuple(cfg.level_weights) == (0.25, 0.5, 0.25)
    assert (cfg.edge_gt_weight, cfg.edge_self_weight, cfg.normal_weight) == (5.0, 1e-4, 0.1)
    assert all(getattr(cfg, f.name) for f in dataclasses.fields(cfg) if isinstance(f.default, bool))


def test_config_loads_through_from_dict_and_validates():
    cfg = from_dict(losses.LossConfig, {"normal": False, "level_weights": [0.2, 0.6, 0.2]},
                    source="params.yaml", prefix="loss")
    assert cfg.normal is False and cfg.level_weights == (0.2, 0.6, 0.2)
    with pytest.raises(DataError, match="level_weights"):
        from_dict(losses.LossConfig, {"level_weights": [1.0, 1.0]}, "params.yaml", "loss")
    with pytest.raises(DataError, match="weight_vertices"):
        from_dict(losses.LossConfig, {"weight_vertices": -1.0}, "params.yaml", "loss")


def test_edges_from_faces():
    edges = losses.edges_from_faces(SQUARE_FACES)
    assert edges.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [2, 3]]


def test_regressor_matrix_callable_and_14_rows_agree(mesh_info):
    verts = torch.randn(2, 3, N_FINE, 3, dtype=torch.float64)
    matrix = mesh_info.joint_regressor
    j14, pelvis = losses.regress_joints(verts, matrix)
    assert j14.shape == (2, 3, 14, 3) and pelvis.shape == (2, 3, 3)
    torch.testing.assert_close(pelvis, matrix[0] @ verts)                   # H36M pelvis
    torch.testing.assert_close(j14[..., 0, :], matrix[3] @ verts)           # R_Ankle = H36M 3
    j14_c, pelvis_c = losses.regress_joints(verts, lambda v: torch.einsum("jv,nvc->njc", matrix, v))
    torch.testing.assert_close(j14_c, j14)
    torch.testing.assert_close(pelvis_c, pelvis)
    matrix14 = matrix[[3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10]]
    j14_m, pelvis_m = losses.regress_joints(verts, matrix14)
    torch.testing.assert_close(j14_m, j14)
    torch.testing.assert_close(pelvis_m, 0.5 * (j14[..., 2, :] + j14[..., 3, :]))  # mid-hip


def test_weak_perspective_projection():
    points = torch.tensor([[[1.0, 2.0, 9.0]]])
    cam = torch.tensor([[2.0, 0.5, -1.0]])
    torch.testing.assert_close(losses.project_weak_perspective(points, cam),
                               torch.tensor([[[3.0, 2.0]]]))


def test_zero_when_prediction_equals_target(mesh_info):
    target, cam = make_target(mesh_info)
    total, terms = losses.compute_losses(pred_from(target, cam), target, losses.LossConfig(),
                                         mesh_info)
    # every term vanishes except the edge-length regulariser, which is not a comparison
    for name, value in terms.items():
        if name not in ("edge_self", "loss_edge_normal", "total"):
            assert abs(value) < 1e-9, name  # 1e-12-level rounding from the +5 m shift
    assert terms["edge_self"] > 0
    torch.testing.assert_close(float(total.detach()), 100 * 1e-4 * terms["edge_self"])
    expected_names = {
        "joints3d_tokens", "joints3d_tokens_vel", "joints3d_mesh", "joints3d_mesh_vel",
        "vertices_coarse", "vertices_coarse_vel", "vertices_mid", "vertices_mid_vel",
        "vertices_fine", "vertices_fine_vel", "edge_gt", "edge_self", "normal",
        "joints2d_tokens", "joints2d_tokens_vel", "joints2d_mesh", "joints2d_mesh_vel",
        "loss_joints3d", "loss_vertices", "loss_edge_normal", "loss_joints2d", "total"}
    assert set(terms) == expected_names


def test_joint_l1_and_velocity_hand_values(mesh_info):
    target, cam = make_target(mesh_info)
    pred = pred_from(target, cam)
    with torch.no_grad():
        # right ankle drifts 1 cm per frame along x: L1 averages 0, 1, 2 cm over 14 x 3 coords;
        # the velocity error is 1 cm on 1 of 14 joints for every frame pair
        t = torch.arange(S, dtype=torch.float64)
        pred["joints3d"][:, :, 0, 0] += 0.01 * t
    _, terms = losses.compute_losses(pred, target, only(joints3d_tokens=True,
                                                        joints3d_velocity=True), mesh_info)
    assert terms["joints3d_tokens"] == pytest.approx(0.01 * (0 + 1 + 2) / 3 / 42)
    assert terms["joints3d_tokens_vel"] == pytest.approx(0.01 / 14)
    assert terms["loss_joints3d"] == pytest.approx(1000 * (0.01 / 42 + 0.01 / 14))
    assert "joints3d_mesh" not in terms


def test_velocity_uses_frame_differences(mesh_info):
    target, cam = make_target(mesh_info)
    pred = pred_from(target, cam)
    with torch.no_grad():
        pred["joints3d"][:, :, 0] += torch.tensor([0.03, 0.0, 0.04], dtype=torch.float64)
    _, terms = losses.compute_losses(pred, target, only(joints3d_tokens=True,
                                                        joints3d_velocity=True), mesh_info)
    assert terms["joints3d_tokens"] == pytest.approx(0.07 / 42)   # constant offset: L1 > 0
    assert terms["joints3d_tokens_vel"] == pytest.approx(0.0, abs=1e-12)  # but no velocity error
    # and velocity is an L2 norm per point: a 3-4-5 jump between frames 0 and 1 only
    with torch.no_grad():
        pred["joints3d"][:, 0, 0] -= torch.tensor([0.03, 0.0, 0.04], dtype=torch.float64)
    _, terms = losses.compute_losses(pred, target, only(joints3d_tokens=True,
                                                        joints3d_velocity=True), mesh_info)
    assert terms["joints3d_tokens_vel"] == pytest.approx(0.05 / 14 / 2)   # 1 of 2 pairs


def test_mesh_joints_are_regressed_from_the_fine_mesh(mesh_info):
    target, cam = make_target(mesh_info)
    pred = pred_from(target, cam)
    with torch.no_grad():
        pred["vertices_fine"] *= 1.1            # a bigger body: regressed joints move
    _, terms = losses.compute_losses(pred, target, only(joints3d_mesh=True), mesh_info)
    j14, _ = losses.regress_joints(target["vertices_fine"], mesh_info.joint_regressor)
    centred = j14 - losses.mid_hip(j14)[..., None, :]
    assert terms["joints3d_mesh"] == pytest.approx(float((0.1 * centred).abs().mean()))


def test_vertex_terms_per_level_weighted(mesh_info):
    target, cam = make_target(mesh_info)
    pred = pred_from(target, cam)
    with torch.no_grad():
        pred["vertices_coarse"][:, :, 1, 2] += 0.02     # one coarse vertex, 2 cm in z
        pred["vertices_mid"] += 0.5                     # whole mid mesh shifted: counts too,
        #                                                 since all levels centre on the fine pelvis
    _, terms = losses.compute_losses(pred, target, only(vertices=True), mesh_info)
    assert terms["vertices_coarse"] == pytest.approx(0.02 / (N_COARSE * 3))
    assert terms["vertices_mid"] == pytest.approx(0.5)
    assert terms["vertices_fine"] == pytest.approx(0.0, abs=1e-12)
    assert terms["loss_vertices"] == pytest.approx(100 * (0.25 * 0.02 / 9 + 0.5 * 0.5))
    # translating the whole predicted body changes nothing (meshes are pelvis-centred)
    with torch.no_grad():
        for k in ("vertices_coarse", "vertices_mid", "vertices_fine"):
            pred[k] += torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)
    _, moved = losses.compute_losses(pred, target, only(vertices=True), mesh_info)
    assert moved["loss_vertices"] == pytest.approx(terms["loss_vertices"])


def test_vertex_velocity_hand_value(mesh_info):
    target, cam = make_target(mesh_info)
    pred = pred_from(target, cam)
    with torch.no_grad():
        pred["vertices_coarse"][:, 2, 0] += torch.tensor([0.0, 0.06, 0.08], dtype=torch.float64)
    _, terms = losses.compute_losses(pred, target, only(vertices=True, vertices_velocity=True),
                                     mesh_info)
    # 10 cm jump of 1 of 3 vertices in the second of two frame pairs
    assert terms["vertices_coarse_vel"] == pytest.approx(0.1 / 3 / 2)


def square_batch():
    gt = SQUARE.expand(B, S, 4, 3).clone()
    return gt


def test_edge_and_normal_terms_hand_values(mesh_info):
    target, cam = make_target(mesh_info)
    target["vertices_mid"] = square_batch()
    pred = pred_from(target, cam)
    with torch.no_grad():
        pred["vertices_mid"] *= 2.0                      # every edge twice as long
    _, terms = losses.compute_losses(pred, target, only(edge_gt=True, edge_self=True),
                                     mesh_info)
    assert terms["edge_gt"] == pytest.approx(SQUARE_MEAN_EDGE)
    assert terms["edge_self"] == pytest.approx(2 * SQUARE_MEAN_EDGE)
    assert terms["loss_edge_normal"] == pytest.approx(
        100 * (5 * SQUARE_MEAN_EDGE + 1e-4 * 2 * SQUARE_MEAN_EDGE))

    # lifting vertex 2 to z = 1 tilts both faces out of the GT plane (normal = z axis):
    # face (0,1,2): edges (1,0,0), (1,1,1), (0,1,1) -> |cos| 0, 1/sqrt3, 1/sqrt2
    # face (0,2,3): edges (1,1,1), (0,1,0), (-1,0,-1) -> |cos| 1/sqrt3, 0, 1/sqrt2
    pred = pred_from(target, cam)
    with torch.no_grad():
        pred["vertices_mid"][:, :, 2, 2] = 1.0
    _, terms = losses.compute_losses(pred, target, only(normal=True), mesh_info)
    assert terms["normal"] == pytest.approx((2 / math.sqrt(3) + 2 / math.sqrt(2)) / 6)
    assert terms["loss_edge_normal"] == pytest.approx(100 * 0.1 * terms["normal"])
    # an in-plane deformation keeps normals consistent
    pred = pred_from(target, cam)
    with torch.no_grad():
        pred["vertices_mid"][..., :2] *= torch.tensor([1.5, 0.7], dtype=torch.float64)
    _, terms = losses.compute_losses(pred, target, only(normal=True), mesh_info)
    assert terms["normal"] == pytest.approx(0.0, abs=1e-12)


def test_2d_terms_hand_values_and_visibility(mesh_info):
    target, cam = make_target(mesh_info)
    pred = pred_from(target, cam)
    target["joints2d"] = target["joints2d"].clone()
    target["joints2d"][:, 1, 4, 0] += 0.05                # left knee off by 0.05 in frame 1
    _, terms = losses.compute_losses(
        pred, target, only(joints2d_tokens=True, joints2d_mesh=True, joints2d_velocity=True),
        mesh_info)
    # L1: 0.05 on 1 of 28 coords in 1 of 3 frames; velocity: 0.05 on 1 of 14 in both pairs
    for s in ("tokens", "mesh"):
        assert terms[f"joints2d_{s}"] == pytest.approx(0.05 / 28 / 3)
        assert terms[f"joints2d_{s}_vel"] == pytest.approx(0.05 / 14)
    assert terms["loss_joints2d"] == pytest.approx(100 * 2 * (0.05 / 84 + 0.05 / 14))
    # an invisible joint does not count, whatever its coordinates
    target["joints2d_vis"] = target["joints2d_vis"].clone()
    target["joints2d_vis"][:, 1, 4] = 0.0
    target["joints2d"][:, 1, 4] = float("nan")
    _, terms = losses.compute_losses(pred, target, only(joints2d_tokens=True,
                                                        joints2d_velocity=True), mesh_info)
    assert terms["joints2d_tokens"] == pytest.approx(0.0, abs=1e-12)
    assert terms["joints2d_tokens_vel"] == pytest.approx(0.0, abs=1e-12)


def test_mesh_joints_are_projected_centred_on_the_mesh_pelvis_as_in_fastmetro(mesh_info):
    """FastMETRO projects the J14 regressed from the mesh centred on the mesh's pelvis (H36M
    joint 0), the token joints centred on their mid-hip: with a pelvis away from the mid-hip,
    targets made that way give zero 2D loss on both."""
    regressor = mesh_info.joint_regressor.clone()
    regressor[0] = regressor[7]                     # the pelvis row somewhere else (the torso)
    info = losses.MeshInfo(joint_regressor=regressor, mid_faces=SQUARE_FACES)
    target, cam = make_target(info)
    pred = pred_from(target, cam)
    j14, pelvis = losses.regress_joints(target["vertices_fine"], regressor)
    assert (pelvis - losses.mid_hip(j14)).norm(dim=-1).min() > 1e-3
    mesh_target = dict(target, joints2d=losses.project_weak_perspective(
        j14 - pelvis[..., None, :], cam))
    _, terms = losses.compute_losses(pred, mesh_target, only(joints2d_mesh=True), info)
    assert terms["joints2d_mesh"] == pytest.approx(0.0, abs=1e-12)
    _, terms = losses.compute_losses(pred, target, only(joints2d_tokens=True), info)
    assert terms["joints2d_tokens"] == pytest.approx(0.0, abs=1e-12)
    # the 3D mesh-joint term still compares mid-hip-centred joints
    _, terms = losses.compute_losses(pred, target, only(joints3d_mesh=True), info)
    assert terms["joints3d_mesh"] == pytest.approx(0.0, abs=1e-12)


def test_2d_projection_uses_the_predicted_camera(mesh_info):
    target, cam = make_target(mesh_info)
    pred = pred_from(target, cam)
    with torch.no_grad():
        pred["cam"][..., 1] += 0.1              # tx off by 0.1 -> x off by s * 0.1 = 0.15
    _, terms = losses.compute_losses(pred, target, only(joints2d_tokens=True), mesh_info)
    assert terms["joints2d_tokens"] == pytest.approx(0.15 / 2)


def test_invalid_frame_garbage_changes_nothing(mesh_info):
    target, cam = make_target(mesh_info)
    pred = pred_from(target, cam)
    with torch.no_grad():
        for k in ("vertices_coarse", "vertices_mid", "vertices_fine", "joints3d"):
            pred[k] += 0.01 * torch.randn_like(pred[k])
    target["valid"] = torch.tensor([[True, False, True], [True, True, True]])
    total, terms = losses.compute_losses(pred, target, losses.LossConfig(), mesh_info)
    total.backward()
    grads = {k: v.grad.clone() for k, v in pred.items()}

    garbage_pred = {k: v.detach().clone() for k, v in pred.items()}
    garbage_target = {k: v.clone() for k, v in target.items()}
    for d in (garbage_pred, garbage_target):
        for k, v in d.items():
            if k != "valid":
                v[0, 1] = float("nan") if d is garbage_target else 1e6
    garbage_pred = {k: v.requires_grad_() for k, v in garbage_pred.items()}
    total2, terms2 = losses.compute_losses(garbage_pred, garbage_target, losses.LossConfig(),
                                           mesh_info)
    total2.backward()
    assert terms2 == pytest.approx(terms)
    for k, v in garbage_pred.items():
        assert torch.isfinite(v.grad).all(), k
        torch.testing.assert_close(v.grad, grads[k])
        assert torch.all(v.grad[0, 1] == 0), k


MESH_TERMS = ("vertices_coarse", "vertices_mid", "vertices_fine", "vertices_coarse_vel",
              "vertices_mid_vel", "vertices_fine_vel", "edge_gt", "normal")


def test_frames_without_a_mesh_feed_no_mesh_term_but_every_joint_term(mesh_info):
    """mesh_valid False (a joints-only source): the ground-truth mesh of those frames, even NaN,
    reaches no term; the mesh terms average over the frames with a mesh, the joint terms
    (tokens and joints regressed from the predicted mesh) and edge_self over every valid
    frame."""
    target, cam = make_target(mesh_info)
    pred = pred_from(target, cam)
    with torch.no_grad():
        for k in ("vertices_coarse", "vertices_mid", "vertices_fine", "joints3d"):
            pred[k] += 0.01 * torch.randn(pred[k].shape, generator=torch.Generator()
                                          .manual_seed(7), dtype=pred[k].dtype)
    _, full = losses.compute_losses(pred, target, losses.LossConfig(), mesh_info)

    joints_only = {**target, "mesh_valid": torch.tensor([[True, True, True],
                                                         [False, False, False]])}
    for level in ("coarse", "mid", "fine"):
        joints_only[f"vertices_{level}"] = target[f"vertices_{level}"].clone()
        joints_only[f"vertices_{level}"][1] = float("nan")    # clip 1 has no mesh
    total, terms = losses.compute_losses(pred, joints_only, losses.LossConfig(), mesh_info)
    total.backward()
    assert math.isfinite(float(total.detach()))
    for v in pred.values():
        assert torch.isfinite(v.grad).all()
    # the mesh terms are clip 0's alone
    first = {k: v[:1] for k, v in target.items()}
    _, clip0 = losses.compute_losses({k: v[:1] for k, v in pred.items()}, first,
                                     losses.LossConfig(), mesh_info)
    for name in MESH_TERMS:
        assert terms[name] == pytest.approx(clip0[name]), name
    # the joint terms and edge_self still see both clips
    for name in set(full) - set(MESH_TERMS) - {"loss_vertices", "loss_edge_normal", "total"}:
        assert terms[name] == pytest.approx(full[name]), name
    assert terms["joints3d_mesh"] > 0 and terms["joints2d_mesh"] > 0

    # no frame with a mesh: every mesh term an exact zero
    joints_only["mesh_valid"] = torch.zeros(B, S, dtype=torch.bool)
    for level in ("coarse", "mid", "fine"):
        joints_only[f"vertices_{level}"][:] = float("nan")
    _, terms = losses.compute_losses(pred, joints_only, losses.LossConfig(), mesh_info)
    assert all(terms[name] == 0.0 for name in MESH_TERMS)
    assert terms["loss_joints3d"] > 0 and math.isfinite(terms["total"])


def test_average_is_over_valid_frames_only(mesh_info):
    target, cam = make_target(mesh_info)
    pred = pred_from(target, cam)
    with torch.no_grad():
        pred["joints3d"][0, 0, 0, 0] += 0.042          # error in one valid frame only
    target["valid"] = torch.tensor([[True, False, False], [False, False, False]])
    _, terms = losses.compute_losses(pred, target, only(joints3d_tokens=True,
                                                        joints3d_velocity=True), mesh_info)
    assert terms["joints3d_tokens"] == pytest.approx(0.042 / 42)   # 1 valid frame, not 6
    assert terms["joints3d_tokens_vel"] == 0.0                      # no pair with both valid

    # frames 1, 2 valid: only the pair (1, 2) counts, not (0, 1)
    pred = pred_from(target, cam)
    with torch.no_grad():
        pred["joints3d"][0, 2, 0, 0] += 0.042
    target["valid"] = torch.tensor([[False, True, True], [False, False, False]])
    _, terms = losses.compute_losses(pred, target, only(joints3d_tokens=True,
                                                        joints3d_velocity=True), mesh_info)
    assert terms["joints3d_tokens"] == pytest.approx(0.042 / 42 / 2)
    assert terms["joints3d_tokens_vel"] == pytest.approx(0.042 / 14)


def test_no_valid_frame_gives_zero_loss_that_backprops(mesh_info):
    target, cam = make_target(mesh_info)
    pred = pred_from(target, cam)
    with torch.no_grad():
        pred["joints3d"] += 1.0
        pred["vertices_mid"] *= 3.0
    target["valid"] = torch.zeros(B, S, dtype=torch.bool)
    total, terms = losses.compute_losses(pred, target, losses.LossConfig(), mesh_info)
    assert total.requires_grad and float(total.detach()) == 0.0
    total.backward()
    for v in pred.values():
        assert v.grad is not None and torch.all(v.grad == 0)


def test_switches_remove_exactly_their_term(mesh_info):
    target, cam = make_target(mesh_info, seed=3)
    pred = pred_from(target, cam)
    with torch.no_grad():
        for k, v in pred.items():
            v += 0.05 * torch.randn_like(v)
    full_total, full = losses.compute_losses(pred, target, losses.LossConfig(), mesh_info)
    cases = {
        "joints3d_tokens": (["joints3d_tokens", "joints3d_tokens_vel"], "loss_joints3d"),
        "joints3d_mesh": (["joints3d_mesh", "joints3d_mesh_vel"], "loss_joints3d"),
        "joints3d_velocity": (["joints3d_tokens_vel", "joints3d_mesh_vel"], "loss_joints3d"),
        "vertices_velocity": (["vertices_coarse_vel", "vertices_mid_vel", "vertices_fine_vel"],
                              "loss_vertices"),
        "edge_gt": (["edge_gt"], "loss_edge_normal"),
        "edge_self": (["edge_self"], "loss_edge_normal"),
        "normal": (["normal"], "loss_edge_normal"),
        "joints2d_mesh": (["joints2d_mesh", "joints2d_mesh_vel"], "loss_joints2d"),
        "joints2d_velocity": (["joints2d_tokens_vel", "joints2d_mesh_vel"], "loss_joints2d"),
    }
    for switch, (names, group) in cases.items():
        cfg = dataclasses.replace(losses.LossConfig(), **{switch: False})
        total, terms = losses.compute_losses(pred, target, cfg, mesh_info)
        assert set(full) - set(terms) == set(names), switch
        assert full["total"] - terms["total"] == pytest.approx(
            full[group] - terms[group], rel=1e-9), switch
        assert terms[group] < full[group], switch
        for other in set(terms) - {group, "total"}:
            assert terms[other] == pytest.approx(full[other]), (switch, other)
    # all off: zero, still differentiable
    total, terms = losses.compute_losses(pred, target, only(), mesh_info)
    assert float(total.detach()) == 0.0 and total.requires_grad
    assert set(terms) == {"loss_joints3d", "loss_vertices", "loss_edge_normal", "loss_joints2d",
                          "total"}


def test_total_is_weighted_sum_of_groups_and_gradients_flow(mesh_info):
    target, cam = make_target(mesh_info, seed=5)
    pred = pred_from(target, cam)
    with torch.no_grad():
        for v in pred.values():
            v += 0.05 * torch.randn_like(v)
    total, terms = losses.compute_losses(pred, target, losses.LossConfig(), mesh_info)
    groups = ("loss_joints3d", "loss_vertices", "loss_edge_normal", "loss_joints2d")
    assert terms["total"] == pytest.approx(sum(terms[g] for g in groups))
    assert terms["loss_joints3d"] == pytest.approx(1000 * sum(
        terms[n] for n in ("joints3d_tokens", "joints3d_tokens_vel",
                           "joints3d_mesh", "joints3d_mesh_vel")))
    assert terms["loss_vertices"] == pytest.approx(100 * sum(
        w * (terms[f"vertices_{lvl}"] + terms[f"vertices_{lvl}_vel"])
        for lvl, w in zip(losses.LEVELS, (0.25, 0.5, 0.25))))
    assert isinstance(terms["total"], float)
    total.backward()
    for k, v in pred.items():
        assert v.grad is not None and torch.isfinite(v.grad).all(), k
        assert v.grad.abs().sum() > 0, k
    # a small gradient step lowers the loss
    with torch.no_grad():
        stepped = {k: v - 1e-6 * v.grad for k, v in pred.items()}
    total2, _ = losses.compute_losses(stepped, target, losses.LossConfig(), mesh_info)
    assert float(total2.detach()) < float(total.detach())


def test_missing_input_names_the_key(mesh_info):
    target, cam = make_target(mesh_info)
    pred = pred_from(target, cam)
    del pred["cam"]
    with pytest.raises(KeyError, match="cam"):
        losses.compute_losses(pred, target, losses.LossConfig(), mesh_info)
    # not needed when the 2D terms are off
    losses.compute_losses(pred, target, only(joints3d_tokens=True), mesh_info)
