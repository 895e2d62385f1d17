"""Evaluation: window merging, per-track metrics, baseline, smoothing, outputs and the stage.

The data is hand-made: a 500-vertex procedural body posed with smooth random motion, cut into
4-frame clips at stride 4 plus the last 4 frames (as preprocess does), written with the real
shard writer. Ground truth is therefore known exactly, so predictors built from it (perfect,
noisy, per-track constant) have known scores.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from stdformer.config import from_dict
from stdformer.data.preprocess import clip_starts
from stdformer.data.manifest import write_manifest
from stdformer.data.shards import clip_key, encode_clip, write_shards
from stdformer.evaluation import (BASELINE_NAME, EvaluateConfig, EvaluatePaths, WindowMerger,
                                  constant_predictor, evaluate_predictors, gaussian_smooth,
                                  merge_windows, write_outputs)
from stdformer.evaluation.overlays import LEGEND_HEIGHT as LEGEND_BAND
from stdformer.evaluation.overlays import (fit_weak_perspective, project_weak_perspective,
                                           weak_perspective_view)
from stdformer.evaluation.report import PER_FRAME_SCHEMA
from stdformer.evaluation.run import mean_pose_vertices
from stdformer.io import DataError
from stdformer.metrics import j14_from_h36m, root_align

REPO = Path(__file__).resolve().parents[1]
S = 4                 # clip length
CROP = 32
F_PIX = 45.0          # crop intrinsics focal length (pixels); body 3 m away
ROOT_CAM = np.array([0.0, 0.1, 3.0], np.float32)
# split -> [(sequence, actor, frames, invalid frame indices)]
TRACKS = {
    "test": [("seqA", 0, 13, (5,)), ("seqA", 1, 10, ()), ("seqB", 0, 9, (0, 7))],
    "train": [("trainA", 0, 8, ()), ("trainB", 0, 8, (3,))],
}


# --------------------------------------------------------------------------------------------
# Data


def _track_targets(body, frames: int, seed: int) -> dict[str, np.ndarray]:
    """Smooth random motion in the camera frame (y down, facing the camera), root-relative."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None]
    amplitude, phase = rng.uniform(0.1, 0.4, (1, 69)), rng.uniform(0, 2 * np.pi, (1, 69))
    pose = np.zeros((frames, 72))
    pose[:, 0] = np.pi                                         # SMPL y-up -> camera y-down
    pose[:, 3:] = amplitude * np.sin(0.12 * t + phase)      # ~0.6 Hz at 30 fps
    betas = np.tile(rng.normal(0, 0.5, (1, 10)), (frames, 1))
    with torch.no_grad():
        out = body(torch.tensor(pose, dtype=torch.float32),
                   torch.tensor(betas, dtype=torch.float32))
    root = out.joints[:, :1]
    vertices = (out.vertices - root).numpy()
    h36m = (out.joints_h36m - root).numpy()
    K = np.array([[F_PIX, 0, (CROP - 1) / 2], [0, F_PIX, (CROP - 1) / 2], [0, 0, 1]])
    cam_points = h36m + ROOT_CAM
    uv = cam_points @ K.T
    joints2d = np.concatenate([uv[..., :2] / uv[..., 2:], np.ones((frames, 17, 1))], -1)
    return {"vertices": vertices, "joints3d": (out.joints[:, :24] - root).numpy(),
            "joints_h36m": h36m, "joints2d": joints2d, "keypoints2d": np.zeros((frames, 18, 3)),
            "pose": pose, "betas": betas,
            "affine": np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (frames, 1, 1)),
            "root_cam": np.tile(ROOT_CAM, (frames, 1)), "intrinsics": K.astype(np.float32)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """(body_dir, shards_dir, body, ground truth {(split, seq, actor): targets + valid})."""
    import cv2

    from stdformer.body.files import write_body_dir
    from stdformer.body.model import BodyModel

    root = tmp_path_factory.mktemp("evaldata")
    body_dir, shards = root / "body", root / "shards"
    write_body_dir(body_dir, resolution=500)
    body = BodyModel.from_dir(body_dir)
    truth, rows = {}, []
    for split, tracks in TRACKS.items():
        samples = []
        for k, (seq, actor, n, invalid) in enumerate(tracks):
            targets = _track_targets(body, n, seed=100 * len(split) + k)
            valid = np.ones(n, bool)
            valid[list(invalid)] = False
            targets["valid"] = valid
            truth[(split, seq, actor)] = targets
            rng = np.random.default_rng(k)
            for start in clip_starts(n, S, S):
                sl = slice(start, start + S)
                jpegs = [cv2.imencode(".jpg", rng.integers(0, 255, (CROP, CROP, 3), np.uint8))[1]
                         .tobytes() for _ in range(S)]
                clip = {name: (a if name == "intrinsics" else a[sl]) for name, a in
                        targets.items() if name != "vertices"}   # posed by evaluate
                key = clip_key(seq, actor, start)
                samples.append(encode_clip(key, jpegs, clip, {
                    "sequence": seq, "actor": actor, "split": split, "source": "test",
                    "clip_start": start, "frame_ids": list(range(100 + start, 100 + start + S)),
                    "crop_size": CROP, "context_size": CROP,
                    "body_model_id": body.body_model_id}))
                rows.append({"key": key, "split": split, "sequence": seq, "actor": actor,
                             "frame_start": start, "frame_end": start + S, "num_frames": S,
                             "num_valid": int(valid[sl].sum()), "valid": valid[sl].tolist(),
                             "source": "test", "crop_size": CROP, "context_size": CROP})
        placed = write_shards(shards / split, samples, samples_per_shard=3)
        shard_of = dict(placed)
        for row in rows:
            if row["split"] == split:
                row["shard"] = f"{split}/{shard_of[row['key']]}"
    write_manifest(shards, rows)
    return body_dir, shards, body, truth


def regressor_of(body) -> torch.Tensor:
    return body.J_regressor_h36m.double()


def valid_frames(truth, split="test") -> int:
    return sum(int(v["valid"].sum()) for (s, *_), v in truth.items() if s == split)


def perfect(batch):
    b, s = batch["frames"].shape[:2]
    cam = torch.tensor([0.5, 0.0, 0.0]).expand(b, s, 3)
    return {"vertices": batch["targets"]["vertices"], "cam": cam}


def noisy(batch, sigma=0.02):
    """Ground truth with i.i.d. per-frame jitter that root alignment does not remove: a random
    scale and per-vertex noise (seeded by the clip: deterministic)."""
    out = []
    for verts, meta in zip(batch["targets"]["vertices"], batch["meta"]):
        gen = torch.Generator().manual_seed(1000 * meta["actor"] + meta["clip_start"])
        scale = 1 + torch.randn(verts.shape[0], 1, 1, generator=gen) * 0.03   # per frame
        wobble = torch.randn(verts.shape, generator=gen) * sigma
        out.append(verts * scale + wobble)
    return {"vertices": torch.stack(out)}


def run(predictors, dataset, **kw):
    body_dir, shards, body, _ = dataset
    return evaluate_predictors(predictors, shards, "test", body, batch_size=3, **kw)


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
def test_predict_tracks_merges_the_overlapping_last_clip(dataset, merge, shift):
    _, shards, body, truth = dataset
    from stdformer.data.manifest import read_manifest
    from stdformer.data.shards import make_clip_loader
    from stdformer.evaluation import predict_tracks, track_layout, with_mesh

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


def test_shards_that_disagree_with_the_manifest_or_body_are_refused(dataset):
    _, shards, body, _ = dataset
    from stdformer.data.manifest import read_manifest
    from stdformer.data.shards import make_clip_loader
    from stdformer.evaluation import TrackLayout, predict_tracks, track_layout, with_mesh

    layout = track_layout(read_manifest(shards), "test")
    layout[("seqB", 0)] = TrackLayout(length=9, clips=4)            # one clip more than stored
    loader = with_mesh(make_clip_loader(shards, "test", batch_size=2, frames_dtype="uint8"), body)
    with pytest.raises(DataError, match=r"manifest: the manifest lists 4 clips of \('seqB', 0\)"):
        list(predict_tracks(loader, {"p": perfect}, layout))
    with pytest.raises(DataError, match=r"seqA__a0__00000\]: body_model_id: clip made with"):
        run({"p": perfect}, dataset, body_model_id="another-body")


def test_every_valid_frame_gets_exactly_one_row(dataset):
    _, _, _, truth = dataset
    result = run({"marker": start_marker}, dataset)
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
    from stdformer.evaluation import track_errors

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


def test_perfect_predictor_scores_zero_and_mean_pose_is_worse(dataset):
    body_dir, shards, body, truth = dataset
    baseline = constant_predictor(mean_pose_vertices(shards, "train", body))
    result = run({"perfect": perfect, BASELINE_NAME: baseline}, dataset)
    assert result.models == ["perfect", BASELINE_NAME]
    good, base = result.overall["perfect"], result.overall[BASELINE_NAME]
    for metric in ("mpjpe", "pa_mpjpe", "mpvpe", "accel"):
        assert good[metric] < 0.01, metric                    # float32 rounding only
        # accel of a constant = the ground truth's own acceleration (slow motion: a few mm)
        assert base[metric] > good[metric] + (1.0 if metric == "accel" else 5.0), metric
    assert good["frames"] == base["frames"] == valid_frames(truth)
    assert set(result.per_sequence["perfect"]) == {"seqA", "seqB"}
    assert result.per_sequence["perfect"]["seqA"]["frames"] == 12 + 10


def test_accel_is_per_track_and_skips_invalid_frames(dataset):
    """A per-track constant mesh has zero acceleration, so its error is the ground truth's own
    acceleration magnitude, term by term; a term across two tracks would differ."""
    _, _, body, truth = dataset
    reg = regressor_of(body)
    meshes = {}

    def per_track_constant(batch):
        out = []
        for meta in batch["meta"]:
            key = (meta["sequence"], meta["actor"])
            mesh = meshes.setdefault(key, torch.randn(500, 3) * 0.1 + len(meshes))
            out.append(mesh.expand(batch["frames"].shape[1], 500, 3))
        return {"vertices": torch.stack(out)}

    rows = run({"const": per_track_constant}, dataset).rows
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


def test_smoothing_adds_rows_and_lowers_accel_of_a_noisy_predictor(dataset):
    plain = run({"noisy": noisy}, dataset)
    assert plain.models == ["noisy"]
    smooth = run({"noisy": noisy}, dataset, smoothed=["noisy"], sigma=1.5)
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


# --------------------------------------------------------------------------------------------
# Outputs and the stage


def test_outputs_have_the_documented_schema(dataset, tmp_path):
    body_dir, shards, body, truth = dataset
    result = run({"perfect": perfect, "noisy": noisy}, dataset, smoothed=["noisy"],
                 overlay_keys=["seqA__a0__00004", "seqB__a0__00000"],
                 part_labels=body.part_labels.numpy())
    paths = EvaluatePaths(shards=shards, body=body_dir,
                          metrics=tmp_path / "metrics/eval.json",
                          model_metrics=tmp_path / "metrics/eval",
                          diagnostics=tmp_path / "metrics/eval_diagnostics.json",
                          per_frame=tmp_path / "metrics/per_frame.parquet",
                          per_sequence_csv=tmp_path / "metrics/eval_per_sequence.csv",
                          over_time_csv=tmp_path / "metrics/eval_error_over_time.csv",
                          plots=tmp_path / "plots/eval")
    worst = write_outputs(result, paths, body.faces.numpy(), "noisy", worst=1, overlay_size=64,
                          overlay_frames=2)
    assert len(worst) == 1
    # eval.json: the headline numbers only (`dvc metrics show`), no per-sequence table
    doc = json.loads(paths.metrics.read_text())
    assert list(doc) == ["overall"]
    assert list(doc["overall"]) == ["perfect", "noisy", "noisy_smooth"]
    assert set(doc["overall"]["noisy"]) == {"mpjpe", "pa_mpjpe", "mpvpe", "accel",
                                            "yaw_median", "frames"}
    assert doc["overall"]["perfect"]["yaw_median"] == 0.0
    # one small file per model: `dvc metrics show` lists models as rows of five columns
    assert sorted(p.name for p in (tmp_path / "metrics/eval").iterdir()) == [
        "noisy.json", "noisy_smooth.json", "perfect.json"]
    headline = json.loads((tmp_path / "metrics/eval/noisy.json").read_text())
    assert list(headline) == ["mpjpe", "pa_mpjpe", "mpvpe", "accel", "yaw_median"]
    assert headline["mpjpe"] == pytest.approx(doc["overall"]["noisy"]["mpjpe"], abs=0.01)
    diagnostics = json.loads(paths.diagnostics.read_text())
    assert diagnostics["perfect"]["width_ratio"] == pytest.approx(1.0)
    assert diagnostics["perfect"]["part_head"] < 0.01       # mm (float32 rounding)
    assert diagnostics["noisy"]["part_hands"] > 0
    table = pq.read_table(paths.per_frame)
    assert table.schema.equals(PER_FRAME_SCHEMA)
    assert table.num_rows == 3 * valid_frames(truth)
    assert table.column("accel").null_count > 0               # track ends carry no term
    assert table.column("yaw").null_count == 0
    per_seq = paths.per_sequence_csv.read_text().splitlines()
    assert per_seq[0] == "sequence,model,mpjpe,pa_mpjpe,mpvpe,accel,frames"
    assert len(per_seq) == 1 + 2 * 3
    over_time = paths.over_time_csv.read_text().splitlines()
    assert over_time[0] == "sequence,actor,model,frame,mpjpe,accel"
    assert {line.split(",")[0] for line in over_time[1:]} == set(worst)
    pngs = sorted(p.relative_to(paths.plots).as_posix() for p in paths.plots.rglob("*.png"))
    assert pngs == ["error_over_time.png", "overlays/seqA__a0__00004.png",
                    "overlays/seqB__a0__00000.png", "per_sequence.png", "yaw_error.png"]
    import cv2

    grid = cv2.imread(str(paths.plots / "overlays/seqA__a0__00004.png"))
    # a colour legend (its lines wrap on a grid this narrow), then rows: input, perfect (it has
    # a camera; noisy has none, so no row), ground truth
    legend = grid.shape[0] - 3 * 64
    assert grid.shape[1:] == (2 * 64, 3) and legend >= LEGEND_BAND and legend % LEGEND_BAND == 0
    # the clip's image frame numbers travel with it (printed on the input row)
    clip = next(c for c in result.overlay_clips if c.key == "seqA__a0__00004")
    assert clip.frame_ids == list(range(104, 104 + S))


def test_config_validation_names_the_field():
    cfg = from_dict(EvaluateConfig, {"models": ["models/a.pt", "x/b.pt"],
                                     "smoothing": {"enabled": True, "models": ["b"]}})
    assert cfg.model_files() == {"a": "models/a.pt", "b": "x/b.pt"}
    assert cfg.smoothed_models() == ["b"]
    with pytest.raises(DataError, match=r"params.yaml: evaluate: merge must be one of"):
        from_dict(EvaluateConfig, {"merge": "median"}, source="params.yaml", prefix="evaluate")
    with pytest.raises(DataError, match="smoothing.models"):
        from_dict(EvaluateConfig, {"smoothing": {"models": ["nope"]}})
    with pytest.raises(DataError, match="sigma"):
        from_dict(EvaluateConfig, {"smoothing": {"sigma": 0}})
    with pytest.raises(DataError, match=r"evaluate.smothing: unknown key"):
        from_dict(EvaluateConfig, {"smothing": {}}, prefix="evaluate")
    with pytest.raises(DataError, match="mean_pose"):
        from_dict(EvaluateConfig, {"models": {"mean_pose": "m.pt"}})


def write_random_model(path: Path, body_dir: Path, clip_len: int) -> None:
    """A models/*.pt file (stdformer/train/export.py format) with random weights."""
    from stdformer.model.stdformer import STDFormer
    from stdformer.train import MODEL_FORMAT, model_config_from_section
    from stdformer.train.assets import load_body_assets

    cfg = model_config_from_section({"profile": "cpu", "backbone_width": 8, "widths": [32, 16],
                                     "ffn_dims": [32, 16], "heads": 2, "clip_len": clip_len})
    assets = load_body_assets(body_dir)
    torch.manual_seed(0)
    model = STDFormer.from_hierarchy(cfg, assets.hierarchy)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": MODEL_FORMAT, "weights": model.state_dict(),
                "model_config": dataclasses.asdict(cfg), "body_model_id": assets.body_model_id,
                "train_config": {}, "loss_config": {}, "metrics": {}}, path)


def test_stage_compares_models_baseline_and_smoothing_on_the_same_frames(dataset, tmp_path):
    body_dir, shards, _, truth = dataset
    write_random_model(tmp_path / "models/stdformer.pt", body_dir, S)
    params = {"evaluate": {"models": {"stdformer": str(tmp_path / "models/stdformer.pt")},
                           "smoothing": {"enabled": True, "sigma": 1.0}, "overlays": 1,
                           "overlay_size": 64, "batch_size": 4, "device": "cpu"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "stages.evaluate", "--params", str(tmp_path / "params.yaml"),
         "--shards", str(shards), "--body", str(body_dir), "--no-progress",
         "--metrics", str(tmp_path / "m/eval.json"), "--per-frame", str(tmp_path / "m/pf.parquet"),
         "--diagnostics", str(tmp_path / "m/diagnostics.json"),
         "--model-metrics", str(tmp_path / "m/eval"),
         "--per-sequence-csv", str(tmp_path / "m/seq.csv"),
         "--over-time-csv", str(tmp_path / "m/time.csv"), "--plots", str(tmp_path / "plots")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| stdformer |" in done.stdout and "| mean_pose |" in done.stdout
    overall = json.loads((tmp_path / "m/eval.json").read_text())["overall"]
    assert list(overall) == ["stdformer", "stdformer_smooth", "mean_pose"]
    assert {o["frames"] for o in overall.values()} == {valid_frames(truth)}
    assert set(json.loads((tmp_path / "m/diagnostics.json").read_text())) == set(overall)
    assert len(list((tmp_path / "plots/overlays").glob("*.png"))) == 1

    # a model trained for another clip length is refused, naming the file and the field
    write_random_model(tmp_path / "models/stdformer.pt", body_dir, 8)
    done = subprocess.run(done.args, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    assert "stdformer.pt: model_config.clip_len" in done.stderr

    # a truncated test shard (issue 10 item 7): one line naming it and exit 2, as train does
    write_random_model(tmp_path / "models/stdformer.pt", body_dir, S)
    cut = tmp_path / "shards"
    shutil.copytree(shards, cut)
    shard = cut / "test" / "shard-000000.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    args = [str(cut) if a == str(shards) else a for a in done.args]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert f"error: {shard}: " in done.stderr


@pytest.mark.slow
def test_stage_on_a_preprocessed_tiny_project(tiny_project_factory):
    """The stage as the pipeline will run it: real preprocess shards (8-frame clips with the
    camera extras), a model file in models/, outputs at their default paths."""
    from conftest import project_env

    project = tiny_project_factory({"evaluate": {
        "models": ["models/stdformer.pt"], "smoothing": {"enabled": True},
        "overlays": 2, "overlay_size": 64, "worst_sequences": 1, "device": "cpu"}})
    env = project_env()
    done = subprocess.run(["dvc", "repro", "preprocess"], cwd=project, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    write_random_model(project / "models/stdformer.pt", project / "data/body", 8)
    done = subprocess.run([sys.executable, "-m", "stages.evaluate", "--no-progress"],
                          cwd=project, env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    doc = json.loads((project / "metrics/eval.json").read_text())
    report = json.loads((project / "data/shards/report.json").read_text())
    frames = {o["frames"] for o in doc["overall"].values()}
    assert frames == {report["splits"]["test"]["valid_frames"]}
    assert list(doc["overall"]) == ["stdformer", "stdformer_smooth", "mean_pose"]
    for name in ("per_frame.parquet", "eval_per_sequence.csv", "eval_error_over_time.csv"):
        assert (project / "metrics" / name).stat().st_size > 0
    assert len(list((project / "plots/eval/overlays").glob("*.png"))) == 2
