"""Evaluation: window merging, per-track metrics, the mean-pose baseline, smoothing and the
weak-perspective cameras of the overlays, on evalkit's hand-made data with exactly known ground
truth (conftest.py's `eval_data`). The outputs and the stage: test_evaluate_stage.py."""

import numpy as np
import pytest
import torch

from evalkit import noisy, perfect, regressor_of, run, valid_frames
from stdformer.scoring import BASELINE_NAME, gaussian_smooth
from stdformer.scoring.predict import WindowMerger, constant_predictor, merge_windows
from stdformer.evaluation.overlays import (fit_weak_perspective, project_weak_perspective,
                                           weak_perspective_view)
from stdformer.scoring.run import mean_pose_vertices
from stdformer.io import DataError
from stdformer.metrics import j14_from_h36m, root_align


# --------------------------------------------------------------------------------------------
# Merging windows


def test_window_merge_modes_give_one_value_per_covered_frame():
    windows = [(0, np.full((4, 2), 1.0)), (4, np.full((4, 2), 2.0)), (5, np.full((4, 2), 5.0))]
    mean, covered = merge_windows(windows, 10, "mean")
    assert covered.tolist() == [True] * 9 + [False]            # frame 9: no window
    np.testing.assert_allclose(mean[:, 0], [1, 1, 1, 1, 2, 3.5, 3.5, 3.5, 5, 0])
    first, _ = merge_windows(windows, 10, "first")
    np.testing.assert_allclose(first[:9, 0], [1, 1, 1, 1, 2, 2, 2, 2, 5])
    # centres: [4, 8) at 5.5, [5, 9) at 6.5; frame 6 is 0.5 from both: the earlier window wins
    center, _ = merge_windows(windows, 10, "center")
    np.testing.assert_allclose(center[:9, 0], [1, 1, 1, 1, 2, 2, 2, 5, 5])
    for mode in ("mean", "first", "center"):             # order of arrival does not matter
        backwards, _ = merge_windows(windows[::-1], 10, mode)
        forwards, _ = merge_windows(windows, 10, mode)
        np.testing.assert_array_equal(backwards, forwards)
    with pytest.raises(ValueError, match="outside"):
        WindowMerger(6).add(4, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="merge mode"):
        WindowMerger(6, "median")


def start_marker(batch):
    """Ground truth shifted by the clip start (metres): which window won is visible."""
    starts = torch.tensor([m["clip_start"] for m in batch["meta"]], dtype=torch.float32)
    return {"vertices": batch["targets"]["vertices"] + starts[:, None, None, None]}


@pytest.mark.parametrize("merge, shift", [("mean", 8.5), ("first", 8.0), ("center", 8.0)])
def test_predict_tracks_merges_the_overlapping_last_clip(eval_data, merge, shift):
    _, shards, body, truth = eval_data
    from stdformer.data.manifest import read_manifest
    from stdformer.data.shards import make_clip_loader
    from stdformer.scoring.predict import predict_tracks, track_layout, with_mesh

    layout = track_layout(read_manifest(shards), "test")
    assert layout[("seqA", 0)].clips == 4 and layout[("seqA", 0)].length == 13
    loader = with_mesh(make_clip_loader(shards, "test", batch_size=2, frames_dtype="uint8"), body)
    tracks = {(t.sequence, t.actor): t for t in
              predict_tracks(loader, {"m": start_marker}, layout, merge)}
    assert set(tracks) == {("seqA", 0), ("seqA", 1), ("seqB", 0)}
    track = tracks[("seqA", 0)]                     # windows start at 0, 4, 8, 9 (13 frames)
    np.testing.assert_array_equal(track.valid, truth[("test", "seqA", 0)]["valid"])
    offset = track.vertices["m"] - track.gt_vertices
    np.testing.assert_allclose(offset[9], shift, atol=1e-5)     # in windows 8 and 9
    np.testing.assert_allclose(offset[12], 9.0, atol=1e-5)      # only in window 9
    np.testing.assert_allclose(offset[5], 4.0, atol=1e-5)       # only in window 4


def test_shards_that_disagree_with_the_manifest_or_body_are_refused(eval_data):
    _, shards, body, _ = eval_data
    from stdformer.data.manifest import read_manifest
    from stdformer.data.shards import make_clip_loader
    from stdformer.scoring.predict import TrackLayout, predict_tracks, track_layout, with_mesh

    layout = track_layout(read_manifest(shards), "test")
    layout[("seqB", 0)] = TrackLayout(length=9, clips=4)            # one clip more than stored
    loader = with_mesh(make_clip_loader(shards, "test", batch_size=2, frames_dtype="uint8"), body)
    with pytest.raises(DataError, match=r"manifest: the manifest lists 4 clips of \('seqB', 0\)"):
        list(predict_tracks(loader, {"p": perfect}, layout))
    with pytest.raises(DataError, match=r"seqA__a0__00000\]: body_model_id: clip made with"):
        run({"p": perfect}, eval_data, body_model_id="another-body")


def test_every_valid_frame_gets_exactly_one_row(eval_data):
    _, _, _, truth = eval_data
    result = run({"marker": start_marker}, eval_data)
    rows = result.rows
    keys = list(zip(rows["model"], rows["sequence"], rows["actor"], rows["frame"]))
    assert len(keys) == len(set(keys)) == valid_frames(truth)
    for (split, seq, actor), t in truth.items():
        if split != "test":
            continue
        mine = (rows["sequence"] == seq) & (rows["actor"] == actor)
        assert sorted(rows["frame"][mine].tolist()) == np.flatnonzero(t["valid"]).tolist()
        assert rows["image_frame"][mine].tolist() == (rows["frame"][mine] + 100).tolist()
    assert result.overall["marker"]["mpjpe"] < 1.0   # a translation: root alignment removes it


def test_track_errors_do_not_depend_on_the_chunk_size():
    from stdformer.scoring.track_scores import track_errors

    rng = np.random.default_rng(0)
    gt, pred = rng.normal(0, 0.3, (2, 7, 40, 3))
    reg = torch.as_tensor(rng.dirichlet(np.ones(40), 17))
    h36m = (reg.numpy() @ gt).astype(np.float64)
    valid = np.array([1, 1, 0, 1, 1, 1, 1], bool)
    whole = track_errors(pred, gt, h36m, valid, reg)
    pieces = track_errors(pred, gt, h36m, valid, reg, chunk=2)
    for metric, values in whole.items():
        np.testing.assert_allclose(pieces[metric], values, rtol=1e-12)
        assert np.isnan(values[2])
    assert np.isnan(whole["accel"][[0, 1, 3, 6]]).all() and not np.isnan(whole["accel"][4])


# --------------------------------------------------------------------------------------------
# Metrics on the tracks


def test_perfect_predictor_scores_zero_and_mean_pose_is_worse(eval_data):
    body_dir, shards, body, truth = eval_data
    baseline = constant_predictor(mean_pose_vertices(shards, "train", body))
    result = run({"perfect": perfect, BASELINE_NAME: baseline}, eval_data)
    assert result.models == ["perfect", BASELINE_NAME]
    good, base = result.overall["perfect"], result.overall[BASELINE_NAME]
    for metric in ("mpjpe", "pa_mpjpe", "mpvpe", "accel"):
        assert good[metric] < 0.01, metric                    # float32 rounding only
        # accel of a constant = the ground truth's own acceleration (slow motion: a few mm)
        assert base[metric] > good[metric] + (1.0 if metric == "accel" else 5.0), metric
    assert good["frames"] == base["frames"] == valid_frames(truth)
    assert set(result.per_sequence["perfect"]) == {"seqA", "seqB"}
    assert result.per_sequence["perfect"]["seqA"]["frames"] == 12 + 10


def test_accel_is_per_track_and_skips_invalid_frames(eval_data):
    """A per-track constant mesh has zero acceleration, so its error is the ground truth's own
    acceleration magnitude, term by term; a term across two tracks would differ."""
    _, _, body, truth = eval_data
    reg = regressor_of(body)
    meshes = {}

    def per_track_constant(batch):
        out = []
        for meta in batch["meta"]:
            key = (meta["sequence"], meta["actor"])
            mesh = meshes.setdefault(key, torch.randn(500, 3) * 0.1 + len(meshes))
            out.append(mesh.expand(batch["frames"].shape[1], 500, 3))
        return {"vertices": torch.stack(out)}

    rows = run({"const": per_track_constant}, eval_data).rows
    expected_terms = 0
    for (split, seq, actor), t in truth.items():
        if split != "test":
            continue
        gt = root_align(j14_from_h36m(torch.as_tensor(t["joints_h36m"]).double()))
        acc = (gt[:-2] - 2 * gt[1:-1] + gt[2:]).norm(dim=-1).mean(dim=-1).numpy() * 1000
        mine = (rows["sequence"] == seq) & (rows["actor"] == actor)
        got = dict(zip(rows["frame"][mine].tolist(), rows["accel"][mine].tolist()))
        v = t["valid"]
        for frame in range(len(v)):
            if not v[frame]:
                assert frame not in got
                continue
            ok = 0 < frame < len(v) - 1 and v[frame - 1] and v[frame + 1]
            if ok:
                expected_terms += 1
                assert got[frame] == pytest.approx(float(acc[frame - 1]), abs=0.05)
            else:
                assert np.isnan(got[frame])                   # track end or invalid neighbour
    assert int((~np.isnan(rows["accel"])).sum()) == expected_terms


def test_smoothing_adds_rows_and_lowers_accel_of_a_noisy_predictor(eval_data):
    plain = run({"noisy": noisy}, eval_data)
    assert plain.models == ["noisy"]
    smooth = run({"noisy": noisy}, eval_data, smoothed=["noisy"], sigma=1.5)
    assert smooth.models == ["noisy", "noisy_smooth"]
    assert smooth.overall["noisy"] == plain.overall["noisy"]
    assert smooth.overall["noisy_smooth"]["accel"] < 0.5 * smooth.overall["noisy"]["accel"]
    assert smooth.overall["noisy_smooth"]["frames"] == smooth.overall["noisy"]["frames"]


def test_gaussian_smooth_ignores_invalid_frames():
    values = np.zeros((9, 2, 3), np.float32)
    values[4] = 1000.0                                        # garbage on an invalid frame
    valid = np.ones(9, bool)
    valid[4] = False
    out = gaussian_smooth(values, valid, sigma=2.0)
    assert np.abs(out[valid]).max() == 0.0
    ramp = np.arange(21, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    np.testing.assert_allclose(gaussian_smooth(ramp, np.ones(21, bool), 1.0)[4:17], ramp[4:17],
                               atol=1e-4)        # a linear motion is kept (away from the ends)


# --------------------------------------------------------------------------------------------
# Cameras for overlays


def test_weak_perspective_as_far_pinhole_and_camera_fit():
    from stdformer.data.render import project_points

    rng = np.random.default_rng(0)
    points = rng.normal(0, 0.3, (20, 3))
    cam = np.array([0.8, 0.1, -0.2])
    size = 64
    translation, K = weak_perspective_view(cam, size)
    pixels = project_points(points + translation, K)
    expected = project_weak_perspective(points, cam) * size / 2 + (size - 1) / 2
    np.testing.assert_allclose(pixels, expected, atol=0.05)  # sub-pixel
    assert weak_perspective_view(np.array([-0.5, 0, 0]), size) is None
    fitted = fit_weak_perspective(points, project_weak_perspective(points, cam), np.ones(20))
    np.testing.assert_allclose(fitted, cam, atol=1e-9)


