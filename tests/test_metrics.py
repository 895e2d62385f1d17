"""Metrics against hand-computed values (metres in, mm and mm/frame^2 out)."""

import math

import numpy as np
import pytest
import torch

from stdformer import metrics


def random_rotations(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 3, 3) proper rotations from QR of Gaussian matrices."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    det = torch.linalg.det(q)
    q[:, :, 0] *= det[:, None]  # flip one column where det = -1
    return q


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def test_j14_from_h36m_picks_the_published_indices():
    joints17 = torch.arange(17, dtype=torch.float64)[:, None].expand(17, 3)[None]   # (1, 17, 3)
    j14 = metrics.j14_from_h36m(joints17)
    assert j14.shape == (1, 14, 3)
    assert j14[0, :, 0].tolist() == [3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10]
    with pytest.raises(ValueError):
        metrics.j14_from_h36m(torch.zeros(1, 14, 3))


def test_root_align_puts_the_mid_hip_at_the_origin(gen):
    j14 = torch.randn(4, 14, 3, generator=gen, dtype=torch.float64)
    aligned = metrics.root_align(j14)
    torch.testing.assert_close(0.5 * (aligned[:, 2] + aligned[:, 3]), torch.zeros_like(j14[:, 0]))
    torch.testing.assert_close(aligned[:, 5] - aligned[:, 7], j14[:, 5] - j14[:, 7])


def test_mpjpe_of_translated_copy_after_root_alignment_is_zero(gen):
    gt = torch.randn(5, 14, 3, generator=gen, dtype=torch.float64)
    pred = gt + torch.tensor([0.3, -1.2, 4.0], dtype=torch.float64)
    raw = metrics.mpjpe(pred, gt)
    assert torch.all(raw > 100)                             # unaligned: metres off
    aligned = metrics.mpjpe(metrics.root_align(pred), metrics.root_align(gt))
    assert aligned.shape == (5,)
    assert torch.all(aligned.abs() < 1e-9)


def test_mpjpe_one_joint_off_by_10cm(gen):
    gt = torch.randn(3, 14, 3, generator=gen, dtype=torch.float64)
    pred = gt.clone()
    pred[:, 0] += torch.tensor([0.06, 0.0, 0.08], dtype=torch.float64)  # right ankle, 10 cm
    err = metrics.mpjpe(metrics.root_align(pred), metrics.root_align(gt))
    torch.testing.assert_close(err, torch.full((3,), 100.0 / 14, dtype=torch.float64))
    # float32 input is accepted and the result is float64 mm
    err32 = metrics.mpjpe(metrics.root_align(pred.float()), metrics.root_align(gt.float()))
    assert err32.dtype == torch.float64
    torch.testing.assert_close(err32, err, atol=1e-3, rtol=0)


def test_pa_mpjpe_removes_similarity_transform(gen):
    gt = torch.randn(6, 14, 3, generator=gen, dtype=torch.float64)
    rot = random_rotations(6, gen)
    scale = torch.tensor([0.5, 1.0, 1.7, 2.3, 0.9, 1.1], dtype=torch.float64)
    shift = torch.randn(6, 1, 3, generator=gen, dtype=torch.float64)
    pred = scale[:, None, None] * gt @ rot.transpose(-1, -2) + shift
    assert torch.all(metrics.mpjpe(pred, gt) > 10)
    err = metrics.pa_mpjpe(pred.float(), gt.float())      # float32 in, float64 inside
    assert err.shape == (6,)
    assert torch.all(err < 1e-3)                           # float32 input rounding, in mm
    err64 = metrics.pa_mpjpe(pred, gt)
    assert torch.all(err64 < 1e-6)
    s, r, t = metrics.procrustes_transform(pred, gt)
    torch.testing.assert_close(s, 1.0 / scale)
    torch.testing.assert_close(r, rot.transpose(-1, -2))


def test_pa_mpjpe_does_not_undo_a_reflection(gen):
    gt = torch.randn(4, 14, 3, generator=gen, dtype=torch.float64)
    mirrored = gt * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    err = metrics.pa_mpjpe(mirrored, gt)
    assert torch.all(err > 50)                              # a reflection-allowing fit gives 0
    _, rot, _ = metrics.procrustes_transform(mirrored, gt)
    assert torch.all(torch.linalg.det(rot) > 0.999)


def test_procrustes_never_returns_a_reflection(gen):
    # random pairs (half of the unconstrained optima are reflections) and mirrored pairs
    pred = torch.randn(64, 14, 3, generator=gen, dtype=torch.float64)
    gt = torch.randn(64, 14, 3, generator=gen, dtype=torch.float64)
    gt[32:] = pred[32:] * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    scale, rot, _ = metrics.procrustes_transform(pred, gt)
    det = torch.linalg.det(rot)
    torch.testing.assert_close(det, torch.ones(64, dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64).expand(64, 3, 3)
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), eye)
    assert torch.all(scale > 0)
    # least squares over proper similarity transforms: never worse than the feasible
    # identity fit (R = I, s = 1, centroids matched)
    centred = (pred - pred.mean(1, keepdim=True)) + gt.mean(1, keepdim=True)
    sse_pa = ((metrics.procrustes_align(pred, gt) - gt) ** 2).sum(dim=(1, 2))
    sse_id = ((centred - gt) ** 2).sum(dim=(1, 2))
    assert torch.all(sse_pa <= sse_id + 1e-9)


def test_procrustes_align_matches_transform(gen):
    pred = torch.randn(2, 14, 3, generator=gen, dtype=torch.float64)
    gt = torch.randn(2, 14, 3, generator=gen, dtype=torch.float64)
    s, r, t = metrics.procrustes_transform(pred, gt)
    aligned = metrics.procrustes_align(pred, gt)
    manual = torch.einsum("n,nij,nkj->nki", s, r, pred) + t[:, None]
    torch.testing.assert_close(aligned, manual)
    # aligned centroid coincides with the gt centroid
    torch.testing.assert_close(aligned.mean(1), gt.mean(1))


def test_mpvpe_centres_each_mesh_on_its_own_pelvis(gen):
    gt = torch.randn(3, 50, 3, generator=gen, dtype=torch.float64)
    gt_pelvis = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    shift = torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64)
    # same body elsewhere: zero error
    err = metrics.mpvpe(gt + shift, gt, gt_pelvis + shift, gt_pelvis)
    assert torch.all(err.abs() < 1e-9)
    # every vertex 5 mm off (3-4-5), pelvis unchanged: 5 mm
    off = torch.tensor([0.003, 0.004, 0.0], dtype=torch.float64)
    err = metrics.mpvpe(gt + off, gt, gt_pelvis, gt_pelvis)
    torch.testing.assert_close(err, torch.full((3,), 5.0, dtype=torch.float64))


def test_mpvpe_of_the_protocol_centres_on_h36m_joint_0_of_each_mesh(gen):
    """FastMETRO / STDFormer evaluation: each mesh minus its own H36M joint 0 regressed from
    it, not the J14 mid-hip. A prediction equal to the ground truth except for the one vertex
    the right hip is regressed from: with the pelvis on vertex 0, only that vertex is off."""
    from stdformer.scoring.frames import frame_errors

    n, v = 2, 40
    gt = torch.randn(n, v, 3, generator=gen, dtype=torch.float64)
    regressor = torch.zeros(17, v, dtype=torch.float64)
    regressor[torch.arange(17), torch.arange(17) + 1] = 1.0    # joint j sits on vertex j + 1
    regressor[0] = 0.0
    regressor[0, 0] = 1.0                                      # the pelvis on vertex 0
    pred = gt.clone()
    pred[:, 2, 0] += 0.1                 # vertex 2 (R_Hip, H36M 1) 10 cm off: mid-hip 5 cm off
    torch.testing.assert_close(metrics.mesh_pelvis(pred, regressor), pred[:, 0])
    errors = frame_errors(pred, gt, regressor @ gt, regressor)
    torch.testing.assert_close(errors["mpvpe"], torch.full((n,), 100.0 / v, dtype=torch.float64))
    # the same mesh anywhere else: zero
    shifted = frame_errors(gt + torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64), gt,
                           regressor @ gt, regressor)
    assert shifted["mpvpe"].abs().max() < 1e-9


# --------------------------------------------------------------------------------------------
# Acceleration


def linear_motion(t: int, gen) -> torch.Tensor:
    """(t, 14, 3): constant velocity per joint."""
    start = torch.randn(1, 14, 3, generator=gen, dtype=torch.float64)
    vel = 0.01 * torch.randn(1, 14, 3, generator=gen, dtype=torch.float64)
    return start + torch.arange(t, dtype=torch.float64)[:, None, None] * vel


def test_accel_zero_for_constant_velocity(gen):
    pred, gt = linear_motion(9, gen), linear_motion(9, gen)
    values, mask = metrics.accel_error(pred, gt, torch.ones(9, dtype=torch.bool))
    assert values.shape == mask.shape == (7,)
    assert mask.all()
    assert torch.all(values.abs() < 1e-9)


def test_accel_quadratic_case_exact(gen):
    t = torch.arange(6, dtype=torch.float64)
    gt = linear_motion(6, gen)
    pred = gt.clone()
    # half of the joints accelerate: x += 0.002 t^2 -> second difference 0.004 m = 4 mm
    pred[:, :7, 0] += 0.002 * t[:, None] ** 2
    values, mask = metrics.accel_error(pred, gt, torch.ones(6, dtype=torch.bool))
    torch.testing.assert_close(values, torch.full((4,), 4.0 * 7 / 14, dtype=torch.float64))


def test_accel_invalid_frame_drops_exactly_its_three_terms(gen):
    gt = linear_motion(10, gen)
    pred = gt + 0.001 * torch.randn(10, 14, 3, generator=gen, dtype=torch.float64)
    valid = torch.ones(10, dtype=torch.bool)
    full, _ = metrics.accel_error(pred, gt, valid)
    valid[5] = False
    values, mask = metrics.accel_error(pred, gt, valid)
    # term k is centred on frame k+1: frame 5 is in the windows centred on 4, 5, 6
    assert (~mask).nonzero().flatten().tolist() == [3, 4, 5]
    assert torch.isnan(values[~mask]).all()
    torch.testing.assert_close(values[mask], full[mask])
    # the per-sequence function agrees, aligned on centre frames
    per_frame, fmask = metrics.accel_error_per_sequence(pred, gt, valid, np.zeros(10, int))
    assert (~fmask).nonzero().flatten().tolist() == [0, 4, 5, 6, 9]
    torch.testing.assert_close(per_frame[fmask], values[mask])


def test_accel_per_sequence_never_crosses_a_boundary(gen):
    gt_a, gt_b = linear_motion(6, gen), linear_motion(5, gen)
    # each prediction is its ground truth plus a constant offset: zero accel within a sequence
    pred_a = gt_a + 0.05
    pred_b = gt_b - 0.2
    pred, gt = torch.cat([pred_a, pred_b]), torch.cat([gt_a, gt_b])
    valid = torch.ones(11, dtype=torch.bool)
    seq_ids = [7] * 6 + [3] * 5
    # concatenating as one sequence adds error at the boundary
    joined, _ = metrics.accel_error(pred, gt, valid)
    assert joined.max() > 100
    values, mask = metrics.accel_error_per_sequence(pred, gt, valid, seq_ids)
    assert values.shape == mask.shape == (11,)
    assert (~mask).nonzero().flatten().tolist() == [0, 5, 6, 10]   # ends of both sequences
    assert torch.all(values[mask].abs() < 1e-9)
    assert int(mask.sum()) == (6 - 2) + (5 - 2)


def test_accel_per_sequence_matches_single_sequence_values(gen):
    pred = torch.randn(12, 14, 3, generator=gen, dtype=torch.float64)
    gt = torch.randn(12, 14, 3, generator=gen, dtype=torch.float64)
    valid = torch.ones(12, dtype=torch.bool)
    seq_ids = [0] * 7 + [1] * 5
    values, mask = metrics.accel_error_per_sequence(pred, gt, valid, seq_ids)
    a, _ = metrics.accel_error(pred[:7], gt[:7], valid[:7])
    b, _ = metrics.accel_error(pred[7:], gt[7:], valid[7:])
    torch.testing.assert_close(values[mask], torch.cat([a, b]))


def test_accel_per_sequence_refuses_interleaved_ids(gen):
    x = torch.zeros(6, 14, 3)
    with pytest.raises(ValueError, match="contiguous"):
        metrics.accel_error_per_sequence(x, x, torch.ones(6, dtype=torch.bool), [0, 0, 1, 1, 0, 0])


def test_accel_short_sequence():
    x = torch.zeros(2, 14, 3)
    values, mask = metrics.accel_error(x, x, torch.ones(2, dtype=torch.bool))
    assert values.numel() == 0 and mask.numel() == 0


# --------------------------------------------------------------------------------------------
# Averaging


def test_summarize_averages_over_frames_not_sequences():
    # sequence A: 2 frames at 10 mm; sequence B: 8 frames at 0 mm.
    # Per-sequence averaging would give 5.0; over frames it is 2.0.
    per_frame = torch.tensor([10.0, 10.0] + [0.0] * 8)
    accel = torch.tensor([float("nan"), 3.0, 5.0, float("nan")])
    accel_mask = torch.tensor([False, True, True, False])
    out = metrics.summarize({"mpjpe": per_frame, "accel": (accel, accel_mask)})
    assert out == {"accel": 4.0, "mpjpe": 2.0}
    assert list(out) == ["accel", "mpjpe"]


def test_summarize_rejects_nan_in_counted_frames_and_handles_empty():
    with pytest.raises(ValueError, match="NaN"):
        metrics.summarize({"m": torch.tensor([1.0, float("nan")])})
    out = metrics.summarize({"m": (torch.tensor([1.0]), torch.tensor([False]))})
    assert math.isnan(out["m"])
