"""Evaluation diagnostics: yaw error from the hip/shoulder axes, principal spreads (a collapsed
"sliver" mesh), per-part errors."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from stdformer.body.constants import H36M_JOINT_NAMES, SMPL_JOINT_NAMES
from stdformer.scoring.diagnostics import (DIAGNOSTICS, frame_diagnostics, part_vertex_groups,
                                              principal_spreads, summarize_diagnostics, yaw_error)

J = {name: i for i, name in enumerate(H36M_JOINT_NAMES)}


def standing_h36m() -> torch.Tensor:
    """(17, 3) a person standing upright facing the camera, camera axes (y down): the body's
    left at +x, shoulders wider than hips, a little forward lean of nothing."""
    j = torch.zeros(17, 3, dtype=torch.float64)
    j[J["L_Hip"]], j[J["R_Hip"]] = torch.tensor([0.1, 0.0, 0.0]), torch.tensor([-0.1, 0.0, 0.0])
    j[J["L_Shoulder"]] = torch.tensor([0.18, -0.5, 0.02])
    j[J["R_Shoulder"]] = torch.tensor([-0.18, -0.5, 0.02])
    j[J["Neck"]], j[J["Head"]] = torch.tensor([0.0, -0.55, 0.0]), torch.tensor([0.0, -0.75, 0.0])
    j[J["L_Knee"]], j[J["R_Knee"]] = torch.tensor([0.1, 0.45, 0.0]), torch.tensor([-0.1, 0.45, 0])
    return j


def turn(points: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate about the vertical (camera y) axis."""
    R = torch.as_tensor(Rotation.from_euler("y", degrees, degrees=True).as_matrix())
    return points @ R.T


@pytest.mark.parametrize("degrees", [0.0, 30.0, 90.0, 150.0, 180.0, -60.0])
def test_yaw_error_is_the_turn_about_the_spine(degrees):
    gt = standing_h36m()[None]
    pred = turn(gt, degrees)
    assert float(yaw_error(pred, gt)[0]) == pytest.approx(abs(degrees), abs=1e-6)


def test_yaw_error_ignores_a_tilt_and_is_symmetric_in_left_right():
    gt = standing_h36m()[None]
    tilted = gt @ torch.as_tensor(Rotation.from_euler("x", 20, degrees=True).as_matrix()).T
    assert float(yaw_error(tilted, gt)[0]) == pytest.approx(0.0, abs=1e-6)
    mirrored = gt.clone()                       # left and right labels swapped: facing away
    for side in ("Hip", "Shoulder"):
        mirrored[0, J[f"L_{side}"]], mirrored[0, J[f"R_{side}"]] = gt[0, J[f"R_{side}"]], \
            gt[0, J[f"L_{side}"]]
    assert float(yaw_error(mirrored, gt)[0]) == pytest.approx(180.0, abs=1e-6)


def test_principal_spreads_see_a_sliver_whichever_way_it_faces():
    rng = np.random.default_rng(0)
    body = torch.as_tensor(rng.normal(size=(500, 3)) * [0.2, 0.8, 0.1])   # wide, tall, thin
    sliver = body * torch.tensor([0.05, 1.0, 1.0])
    spreads = principal_spreads(torch.stack([body, turn(body, 70.0), sliver]))
    assert spreads[0].tolist() == pytest.approx(spreads[1].tolist())     # orientation-free
    assert spreads[0, 0] > spreads[0, 1] > spreads[0, 2]                   # height, width, depth
    assert float(spreads[2, 1] / spreads[0, 1]) < 0.6                     # the width collapses


def test_frame_diagnostics_split_the_error_by_body_part():
    from stdformer.body.files import write_body_dir
    from stdformer.body.model import BodyModel
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        write_body_dir(Path(tmp) / "body", resolution=500)
        body = BodyModel.from_dir(Path(tmp) / "body")
    with torch.no_grad():
        out = body(torch.zeros(2, 72))
    gt = out.vertices.double()
    groups = part_vertex_groups(body.part_labels)
    assert set(groups) == {"head", "torso", "arms", "hands", "legs", "feet"}
    assert sum(len(v) for v in groups.values()) == body.num_vertices      # a partition
    head = np.isin(body.part_labels.numpy(), [SMPL_JOINT_NAMES.index("Head")])
    pred = gt.clone()
    pred[:, head, 2] += 0.05                                               # head 5 cm off
    reg = body.J_regressor_h36m.double()
    diag = frame_diagnostics(pred, gt, reg @ gt, reg, groups)
    assert set(diag) == set(DIAGNOSTICS)
    assert 0.0 < float(diag["part_head"][0]) <= 50.0 + 1e-6
    for group in ("torso", "legs", "feet"):
        assert float(diag[f"part_{group}"][0]) == pytest.approx(0.0, abs=1e-6)
    summary = summarize_diagnostics({k: v.numpy() for k, v in diag.items()})
    assert summary["yaw_median"] == pytest.approx(0.0, abs=1e-6)
    assert summary["yaw_over_90"] == 0.0
    assert summary["height_ratio"] == pytest.approx(1.0, abs=1e-3)
