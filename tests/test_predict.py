"""`stdformer predict`: video -> tracked people -> crops -> windows -> meshes and files.

The data is the session's small synthetic 3DPW (conftest `synth_root`, 320x240 frames, one
two-actor test sequence), preprocessed here with 4-frame clips; the model is a tiny random
STDFormer (the pipeline is checked by geometry and by agreement with evaluate, not pose quality).
"""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stdformer.body import PosingArrays
from stdformer.data import crops
from stdformer.data.manifest import read_manifest
from stdformer.data.preprocess import preprocess
from stdformer.data.datasets import ThreeDPWDataset
from stdformer.data.preprocess_config import PreprocessConfig
from stdformer.data.shards import list_shards, make_clip_loader
from stdformer.data.targets import body_targets, camera_mesh, project
from stdformer.data.threedpw import iter_tracks
from stdformer.evaluation.overlays import fit_weak_perspective, pixels_to_normalized
from stdformer.scoring.predict import model_predictor, predict_tracks, track_layout, with_mesh
from stdformer.inference import PredictConfig, load_inference_model, predict_video
from stdformer.inference import camera, export
from stdformer.inference.config import DetectorConfig
from stdformer.inference.detect import Detections, HOGPeopleDetector, read_boxes
from stdformer.inference.track import select_tracks, track_detections
from stdformer.inference.video import FrameSource, write_h264
from stdformer.io import DataError

REPO = Path(__file__).resolve().parents[1]
CLIP = 4
CROP_CFG = PreprocessConfig(crop_size=32, clip_len=CLIP, executor="serial", workers=0)
TINY_MODEL = {"profile": "cpu", "backbone_width": 8, "widths": [32], "ffn_dims": [32],
              "heads": 2, "clip_len": CLIP}
QUIET = {"overlay": False, "glb": False}


def write_tiny_model(path: Path, body_dir: Path, seed: int = 0,
                     crop: PreprocessConfig = CROP_CFG) -> Path:
    """A random tiny STDFormer in the model-file format, its input protocol `crop`'s."""
    from stdformer.losses import LossConfig
    from stdformer.model.stdformer import model_config_from_section
    from stdformer.train import TrainConfig
    from stdformer.model.assets import load_body_assets
    from stdformer.model.inputs import InputProtocol
    from stdformer.model.model_file import write_model_file
    from stdformer.train.loop import build_model

    assets = load_body_assets(body_dir)
    cfg = model_config_from_section(dict(TINY_MODEL))
    torch.manual_seed(seed)
    inputs = InputProtocol(crop.crop_size, crop.crop_scale, crop.context, CLIP)
    write_model_file(path, build_model(cfg, assets), cfg, assets.body_model_id,
                     dataclasses.asdict(TrainConfig()), dataclasses.asdict(LossConfig()), {},
                     inputs)
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, synth_body_dir):
    return write_tiny_model(tmp_path_factory.mktemp("predict_model") / "tiny.pt", synth_body_dir)


@pytest.fixture(scope="module")
def model(model_file, synth_body_dir):
    return load_inference_model(model_file, synth_body_dir)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, synth_root, synth_body_dir):
    out = tmp_path_factory.mktemp("predict_shards") / "shards"
    preprocess(ThreeDPWDataset(root=str(synth_root), splits=["test"]), synth_body_dir, out,
               CROP_CFG, progress=False)
    return out


def annotation_tracks(root: Path, sequence: str):
    return [t for t in iter_tracks(root, "test") if t.sequence == sequence]


def annotation_boxes(track, cfg: PreprocessConfig = CROP_CFG):
    """preprocess's square keypoint boxes of a track, missing frames interpolated as it does:
    centres (N, 2), sides (N,), detected (N,)."""
    centers, sides, detected = crops.keypoint_boxes(track.poses2d, cfg.keypoint_conf,
                                                    cfg.min_keypoints, cfg.bbox_extent_scale)
    filled = crops.interpolate_missing(np.column_stack([centers, sides]), detected)
    return filled[:, :2], filled[:, 2], detected


def boxes_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows))
    return path


def annotation_boxes_file(root: Path, sequence: str, path: Path, id_offset: int = 0) -> Path:
    """A `--boxes` JSON of `sequence`'s annotation boxes (preprocess's), one id per actor."""
    rows = []
    for track in annotation_tracks(root, sequence):
        centers, sides, detected = annotation_boxes(track)
        rows += [{"frame": int(i) + 1, "id": track.actor + id_offset,
                  "x": centers[i, 0] - sides[i] / 2, "y": centers[i, 1] - sides[i] / 2,
                  "w": sides[i], "h": sides[i]} for i in np.flatnonzero(detected)]
    return boxes_json(path, rows)


def test_predict_with_annotation_boxes_equals_evaluate(synth_root, shards, model, tmp_path,
                                                      synth_body):
    """The consistency invariant: with preprocess's boxes, predict cuts the crops preprocess
    cut and merges the windows evaluate merges, so its per-frame outputs are evaluate's."""
    layout = track_layout(read_manifest(shards), "test")
    loader = make_clip_loader(list_shards(shards, "test"), batch_size=3, frames_dtype="uint8",
                              num_workers=0)
    merged = {(p.sequence, p.actor): p for p in predict_tracks(
        with_mesh(loader, synth_body), {"m": model_predictor(model.model, torch.device("cpu"))},
        layout, "mean")}
    compared = 0
    for sequence in sorted({s for s, _ in merged}):
        rows = []
        tracks = [t for t in annotation_tracks(synth_root, sequence)
                  if annotation_boxes(t)[2].any()]
        for track in tracks:
            centers, sides, _ = annotation_boxes(track)
            rows += [{"frame": i + 1, "id": track.actor, "x": c[0] - s / 2, "y": c[1] - s / 2,
                      "w": s, "h": s} for i, (c, s) in enumerate(zip(centers, sides))]
        cfg = PredictConfig(box_scale=1.0, stride=CLIP, min_track_frames=1, **QUIET)
        predict_video(synth_root / "imageFiles" / sequence, model, tmp_path, cfg, CROP_CFG,
                      boxes=boxes_json(tmp_path / f"{sequence}.json", rows),
                      show_progress=False)
        with np.load(tmp_path / f"{sequence}.npz") as z:
            out = {k: z[k] for k in z.files}
        assert sorted(set(out["track_id"].tolist())) == [t.actor for t in tracks]
        for track in tracks:
            mine = out["track_id"] == track.actor
            theirs = merged[(sequence, track.actor)]
            frames = out["frame"][mine]
            assert np.array_equal(frames, np.arange(len(track)))
            np.testing.assert_allclose(out["vertices"][mine], theirs.vertices["m"][frames],
                                       atol=1e-5, rtol=0)
            np.testing.assert_allclose(out["cam"][mine], theirs.cam["m"][frames], atol=1e-5,
                                       rtol=0)
            compared += int(mine.sum())
    assert compared >= 20


def test_two_actor_sequence_gives_two_tracks(synth_root, tmp_path):
    """ByteTrack over per-frame detections (no ids; some frames missed) of the two-actor test
    sequence: two tracks, each following one actor."""
    sequence = sorted({t.sequence for t in iter_tracks(synth_root, "test") if t.num_actors == 2})[0]
    actors = annotation_tracks(synth_root, sequence)
    rows = []
    for track in actors:
        centers, sides, detected = annotation_boxes(track)
        for i in np.flatnonzero(detected):
            if (i + track.actor) % 5 == 3:                      # the detector missed it
                continue
            c, s = centers[i], sides[i] / 0.95                  # full-body box
            rows.append({"frame": int(i) + 1, "x": c[0] - s / 2, "y": c[1] - s / 2, "w": s,
                         "h": s, "score": 0.9})
    table = read_boxes(boxes_json(tmp_path / "dets.json", rows))
    assert not table.has_ids
    tracks = select_tracks(track_detections(table.per_frame(len(actors[0])), 30.0,
                                            PredictConfig().tracker), min_frames=3)
    assert len(tracks) == 2
    for t in tracks:            # each track's boxes are one actor's boxes
        centre = (t.xyxy[:, :2] + t.xyxy[:, 2:]) / 2
        errors = [np.nanmax(np.abs(centre - annotation_boxes(a)[0][t.frames]))
                  for a in actors]
        assert min(errors) < 1e-3 and max(errors) > 5.0


def test_short_tracks_are_dropped_and_max_people_keeps_the_longest():
    from stdformer.inference.track import PersonTrack

    def track(tid, first, detected):
        xyxy = np.tile([0.0, 0.0, 10.0, 20.0], (len(detected), 1))
        xyxy[~np.asarray(detected, bool)] = np.nan
        return PersonTrack(tid, first, xyxy, np.ones(len(detected)))

    tracks = [track(0, 0, [1] * 5 + [0] * 20 + [1] * 4), track(1, 3, [1] * 12),
              track(2, 1, [1] * 20), track(3, 0, [1] * 7)]
    assert [t.track_id for t in select_tracks(tracks, min_frames=8)] == [0, 1, 2]
    assert [t.track_id for t in select_tracks(tracks, min_frames=8, max_people=2)] == [1, 2]
    assert len(tracks[0]) == 29 and tracks[0].detected.sum() == 9     # gaps are part of it


def test_hog_finds_the_people_of_the_two_actor_sequence(synth_root, synth_body_dir, synth_body):
    """The default detector on the synthetic 320x240 frames: both actors detected (IoU >= 0.5
    with the box of the projected body) in most frames where they are visible."""
    sequence = sorted({t.sequence for t in iter_tracks(synth_root, "test") if t.num_actors == 2})[0]
    people, body = {}, PosingArrays.load(synth_body_dir)
    for actor in annotation_tracks(synth_root, sequence):
        targets = body_targets(actor, body, "x")
        uv, _ = project(camera_mesh(synth_body, targets), actor.intrinsics)
        people[actor.actor] = (np.concatenate([uv.min(1), uv.max(1)], 1),
                               annotation_boxes(actor)[2])
    detector = HOGPeopleDetector()
    found = total = 0
    for frame in FrameSource(synth_root / "imageFiles" / sequence):
        boxes = detector(frame.image).xyxy
        for body_boxes, visible in people.values():
            if visible[frame.index]:
                total += 1
                found += bool(len(boxes)) and _iou(body_boxes[frame.index], boxes).max() >= 0.5
    assert total >= 10 and found / total >= 0.6, f"{found}/{total}"


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], axis=-1)  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


# --------------------------------------------------------------------------------------------
# Geometry


def test_translation_from_weak_perspective_recovers_the_camera_position(synth_root,
                                                                         synth_body_dir,
                                                                         synth_body):
    """Ground truth through the chain: mesh in the camera -> crop of preprocess's box -> the
    weak-perspective camera that best fits it -> translation. The recovered position of the
    mid-hip is the true one to within the weak-perspective approximation (a body ~0.3 m deep
    at 3-6 m: a few percent of the depth)."""
    from stdformer.model.assets import load_body_assets

    regressor = load_body_assets(synth_body_dir).regressor_h36m
    body = PosingArrays.load(synth_body_dir)
    checked = 0
    for track in iter_tracks(synth_root, "test"):
        centers, sides, detected = annotation_boxes(track)
        if not detected.any():
            continue
        targets = body_targets(track, body, "x")
        mesh_cam = camera_mesh(synth_body, targets)
        vertices = mesh_cam - targets["root_cam"][:, None]               # root-relative
        anchor = camera.camera_anchor(vertices, regressor)               # (N, 3)
        affines = np.stack([crops.crop_affine(c, s, 1.2, 64) for c, s in zip(centers, sides)])
        uv, _ = project(mesh_cam, track.intrinsics)
        crop_uv = crops.apply_affine(uv, affines)
        cams = np.stack([fit_weak_perspective(vertices[i] - anchor[i],
                                              pixels_to_normalized(crop_uv[i], 64),
                                              np.ones(len(uv[i])))
                         for i in range(len(uv))])
        got = camera.anchor_translation(cams, affines, 64, track.intrinsics)
        truth = anchor + targets["root_cam"]
        depth_error = np.abs(got[:, 2] - truth[:, 2]) / truth[:, 2]
        assert depth_error.max() < 0.05, depth_error.max()
        assert np.abs(got[:, :2] - truth[:, :2]).max() < 0.05 * truth[:, 2].max()
        # and the full-frame assumption is what the docs say
        k = camera.full_frame_intrinsics(320, 240)
        assert k[0, 0] == 400.0 and k[0, 2] == 159.5 and k[1, 2] == 119.5
        checked += 1
    assert checked >= 2


def test_crops_follow_the_boxes():
    """Geometry of the crop path: a full-body box of known size gives crops whose image-space
    square is box_scale x the box, centred on it, smoothed over time."""
    from stdformer.inference.people import person_track_boxes
    from stdformer.inference.track import PersonTrack

    xyxy = np.tile([100.0, 40.0, 140.0, 200.0], (12, 1))
    xyxy[5] = np.nan                                         # a missed frame is interpolated
    boxes, affines = person_track_boxes(PersonTrack(0, 3, xyxy, np.ones(12)), 0.95, CROP_CFG)
    assert np.allclose(boxes.centers, [120.0, 120.0]) and np.allclose(boxes.sides, 152.0)
    centers, sides = camera.crop_in_image(affines, CROP_CFG.crop_size)
    assert np.allclose(centers, [120.0, 120.0]) and np.allclose(sides, 152.0 * 1.2)


# --------------------------------------------------------------------------------------------
# Files


def test_outputs_load_back(synth_root, model, tmp_path):
    """npz keys are those of docs/predict.md; the glb (pygltflib: base + morph target per frame;
    trimesh: the base mesh) gives back the predicted camera-frame vertices; OBJ frames too; the
    overlay is H.264 that OpenCV reads frame for frame; a second run writes the same bytes."""
    import av
    import pygltflib
    import trimesh

    sequence = sorted({t.sequence for t in iter_tracks(synth_root, "test")})[0]
    boxes = annotation_boxes_file(synth_root, sequence, tmp_path / "boxes.json", id_offset=7)
    cfg = PredictConfig(min_track_frames=1, obj_every=5, sheet_frames=4)
    result = predict_video(synth_root / "imageFiles" / sequence, model, tmp_path / "a", cfg,
                           CROP_CFG, boxes=boxes, show_progress=False)
    with np.load(result.files["npz"], allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    assert tuple(out) == export.NPZ_KEYS == documented_npz_keys()
    assert json.loads(str(out["meta"]))["model"] == model.spec
    n = len(out["track_id"])
    assert out["vertices"].shape == (n, model.regressor.shape[1], 3)
    assert out["joints14"].shape == (n, 14, 3) and out["image_size"].tolist() == [320, 240]

    for tid in result.track_ids:
        mine = out["track_id"] == tid
        placed = out["vertices"][mine] + out["translation"][mine][:, None]
        gltf = pygltflib.GLTF2().load(result.files[f"glb{tid}"])
        frames = glb_frames(gltf) * export.CAMERA_TO_GLTF
        np.testing.assert_allclose(frames, placed, atol=1e-5)
        mesh = trimesh.load(result.files[f"glb{tid}"], force="mesh", process=False)
        np.testing.assert_allclose(mesh.vertices * export.CAMERA_TO_GLTF, placed[0], atol=1e-5)
        assert len(mesh.faces) == len(out["faces"])
        first = int(out["frame"][mine][0])
        obj = trimesh.load(result.files["obj"] / f"track{tid}_frame{first:05d}.obj",
                           process=False)
        np.testing.assert_allclose(obj.vertices * export.CAMERA_TO_GLTF, placed[0], atol=2e-6)

    with av.open(str(result.files["overlay"])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in container.decode(stream)) == result.num_frames
    again = predict_video(synth_root / "imageFiles" / sequence, model, tmp_path / "b", cfg,
                          CROP_CFG, boxes=boxes, show_progress=False)
    for kind, path in result.files.items():
        if path.is_file():
            assert path.read_bytes() == again.files[kind].read_bytes(), kind


def glb_frames(gltf) -> np.ndarray:
    """(T, V, 3) vertex positions of every animation frame of a one-mesh glb: base + target k."""
    blob = gltf.binary_blob()

    def read(index: int) -> np.ndarray:
        accessor = gltf.accessors[index]
        view = gltf.bufferViews[accessor.bufferView]
        data = blob[view.byteOffset + (accessor.byteOffset or 0):][:view.byteLength]
        return np.frombuffer(data, np.float32).reshape(accessor.count, -1)

    primitive = gltf.meshes[0].primitives[0]
    base = read(primitive.attributes.POSITION)
    weights = read(gltf.animations[0].samplers[0].output).reshape(len(primitive.targets), -1)
    deltas = np.stack([read(t["POSITION"]) for t in primitive.targets])
    return base + np.einsum("ft,tvc->fvc", weights, deltas)


def documented_npz_keys() -> tuple[str, ...]:
    """The keys of the .npz table in docs/predict.md, in order."""
    text = (REPO / "docs" / "predict.md").read_text()
    section = text.split("<!-- npz-keys -->")[1]
    return tuple(re.findall(r"^\| `(\w+)` \|", section, flags=re.M))


def test_h264_writer_is_deterministic(tmp_path):
    frames = [np.full((31, 45, 3), 10 * i, np.uint8) for i in range(6)]
    for i, f in enumerate(frames):
        f[5:15, 5 + i:15 + i] = 255
    write_h264(tmp_path / "a.mp4", frames, 30.0)
    write_h264(tmp_path / "b.mp4", frames, 30.0)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    source = FrameSource(tmp_path / "a.mp4")
    assert (source.width, source.height, source.fps) == (46, 32, 30.0)      # padded to even
    assert sum(1 for _ in source) == 6


# --------------------------------------------------------------------------------------------
# Bad input


def test_video_errors_name_the_file(tmp_path, model):
    with pytest.raises(DataError, match="not found"):
        predict_video(tmp_path / "nope.mp4", model, tmp_path / "out", PredictConfig(**QUIET))
    (tmp_path / "bad.mp4").write_text("not a video")
    with pytest.raises(DataError, match="bad.mp4.*not a video OpenCV can read"):
        FrameSource(tmp_path / "bad.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        FrameSource(tmp_path / "empty")


def test_the_detector_runs_on_every_kth_frame_and_the_track_bridges_the_rest(tmp_path, model):
    """detector.every = 3: the detector sees frames 0, 3, ..., 18 of 20; one track from frame 0
    to 18 with boxes where it ran (NaN between), kept although it has fewer than
    min_track_frames detections (8 frames / 3 -> 3 needed, 7 there)."""
    write_h264(tmp_path / "v.mp4", [np.full((96, 128, 3), 100, np.uint8)] * 20, 30.0)
    seen = []

    def detector(image):
        f = 3 * len(seen)
        seen.append(f)
        return Detections(np.array([[20.0 + f, 10.0, 50.0 + f, 90.0]]), np.array([0.9]))

    cfg = PredictConfig(detector=DetectorConfig(every=3), min_track_frames=8, **QUIET)
    result = predict_video(tmp_path / "v.mp4", model, tmp_path / "out", cfg, CROP_CFG,
                           detector=detector, show_progress=False)
    assert seen == list(range(0, 20, 3)) and result.track_ids == [0]
    with np.load(result.files["npz"]) as z:
        assert z["frame"].tolist() == list(range(19))
        assert np.flatnonzero(z["detected"]).tolist() == seen
        np.testing.assert_allclose(z["box"][seen][:, 0], 20.0 + np.array(seen))
        assert np.isnan(z["box"][1]).all() and np.isfinite(z["bbox_center"]).all()


def test_a_video_without_people_gives_an_empty_result(tmp_path, model):
    rng = np.random.default_rng(0)
    frames = [np.clip(120 + rng.normal(0, 3, (96, 128, 3)), 0, 255).astype(np.uint8)
              for _ in range(10)]
    write_h264(tmp_path / "empty.mp4", frames, 25.0)
    result = predict_video(tmp_path / "empty.mp4", model, tmp_path / "out",
                           PredictConfig(glb=True), CROP_CFG, show_progress=False)
    assert result.track_ids == [] and "no person found" in result.message
    with np.load(result.files["npz"]) as z:
        assert z["vertices"].shape == (0, model.regressor.shape[1], 3)
        assert float(z["fps"]) == 25.0 and int(z["num_frames"]) == 10
    assert result.files["overlay"].is_file() and result.files["sheet"].is_file()


@pytest.mark.parametrize("text, problem", [
    ("1,1,10,10,20,40,0.9\n2,-1,10,10,20,40,0.9\n", "some rows have a track id"),
    ("0,1,10,10,20,40,0.9\n", "frames are counted from 1"),
    ("1,1,10,10,0,40,0.9\n", "w: row 1: must be > 0"),
    ("frame,id,x,y,w,h,score\n1,1,10,10,20\n", "line 2: expected at least 6 columns"),
    ("1,1,10,10,20,40,0.9\n1,1,12,10,20,40,0.9\n", "two boxes in one frame"),
])
def test_boxes_file_errors(tmp_path, text, problem):
    (tmp_path / "b.csv").write_text(text)
    with pytest.raises(DataError, match=re.escape(problem)):
        read_boxes(tmp_path / "b.csv")


def test_mot_csv_with_header_and_extra_columns(tmp_path):
    (tmp_path / "b.csv").write_text("frame,id,x,y,w,h,score,a,b,c\n"
                                    "3,-1,10,20,30,60,0.5,-1,-1,-1\n1,-1,1,2,3,4,1,-1,-1,-1\n")
    table = read_boxes(tmp_path / "b.csv")
    assert table.frame.tolist() == [2, 0] and not table.has_ids
    assert table.xyxy[0].tolist() == [10, 20, 40, 80]


def test_a_model_for_another_body_is_refused(tmp_path, model_file):
    from stdformer.body import write_body_dir

    other = tmp_path / "body800"
    write_body_dir(other, source="procedural", resolution=800)
    with pytest.raises(DataError, match="body_model_id: body model .* differs"):
        load_inference_model(model_file, other)


def test_cli_reports_a_missing_video_in_one_line(tmp_path, model_file, synth_body_dir):
    done = subprocess.run([sys.executable, "-m", "stdformer.cli", "predict",
                           str(tmp_path / "missing.mp4"), "--model", str(model_file),
                           "--body", str(synth_body_dir), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing.mp4'}: video file or frame folder not found"]


def test_cli_without_the_detector_files_says_how_to_get_them(tmp_path, model_file,
                                                            synth_body_dir):
    """BlazePose's files missing: one line naming the folder, the make target and the HOG
    alternative, exit status 2; `--detector hog` runs without them."""
    import os

    write_h264(tmp_path / "v.mp4", [np.full((96, 128, 3), 100, np.uint8)] * 4, 30.0)
    command = [sys.executable, "-m", "stdformer.cli", "predict", str(tmp_path / "v.mp4"),
               "--model", str(model_file), "--body", str(synth_body_dir), "--out",
               str(tmp_path / "o"), "--no-glb", "--no-overlay", "--quiet"]
    env = {**os.environ, "STDFORMER_DETECTORS": str(tmp_path / "none")}
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'none'}: BlazePose model file pose_detection.tflite not found: run "
        "`make setup (or: python -m stdformer.inference.detector_files)`, or use the HOG "
        "detector (--detector hog, detector.kind: hog)"]
    done = subprocess.run([*command, "--detector", "hog"], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "no person found" in done.stderr


# --------------------------------------------------------------------------------------------
# A registered model


def test_registered_model_uri_gives_the_model_files_outputs(tmp_path, model_file,
                                                             synth_body_dir, model, monkeypatch):
    """models:/NAME@champion: the pyfunc's artifacts (model file + body files) rebuild the same
    model."""
    import mlflow

    from stdformer.registry.store import ModelRegistry, fluent_tracking_uri
    from stdformer.serving import log_pyfunc_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)          # as the register stage runs
    with fluent_tracking_uri(uri):
        experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "a").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            info = log_pyfunc_model(model_file, synth_body_dir)
    registry = ModelRegistry(uri, "tiny")
    version = registry.create_version(info.model_uri, run_id=run.info.run_id,
                                      model_id=info.model_id, tags={})
    registry.make_champion(version.version)
    served = load_inference_model("models:/tiny@champion", tracking_uri=uri)
    assert served.body_model_id == model.body_model_id and served.clip_len == CLIP
    assert served.inputs == model.inputs and served.inputs.crop_size == CROP_CFG.crop_size
    for name, value in model.model.state_dict().items():
        assert torch.equal(served.model.state_dict()[name], value), name
    with pytest.raises(DataError, match="models:/tiny@nobody: cannot fetch the model"):
        load_inference_model("models:/tiny@nobody", tracking_uri=uri)


@pytest.mark.slow
def test_demo_stage_writes_plots_with_the_registered_champion(tmp_path, synth_root, model_file,
                                                              synth_body_dir):
    """`python -m stages.demo` as dvc.yaml runs it: the champion from the MLflow store, one test
    sequence (the one with the most visible people) written as a video, plots/demo/ complete."""
    import mlflow
    import yaml

    from conftest import project_env, stage_command
    from stdformer.registry.store import ModelRegistry, fluent_tracking_uri
    from stdformer.serving import log_pyfunc_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**project_env(), "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        with fluent_tracking_uri(uri):
            experiment = mlflow.create_experiment("d", artifact_location=(tmp_path / "a").as_uri())
            with mlflow.start_run(experiment_id=experiment) as run:
                info = log_pyfunc_model(model_file, synth_body_dir)
        registry = ModelRegistry(uri, "stdformer")
        registry.make_champion(registry.create_version(
            info.model_uri, run_id=run.info.run_id, model_id=info.model_id, tags={}).version)
    params = {"preprocess": {"crop_size": 32, "clip_len": CLIP},
              "datasets": {"3dpw": {"layout": "3dpw", "root": str(synth_root)}},
              "demo": {"predict": {"glb": False, "min_track_frames": 4}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run([*stage_command("demo"), "--no-progress"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    sequence = sorted({t.sequence for t in iter_tracks(synth_root, "test") if t.num_actors == 2})[0]
    demo = tmp_path / "plots" / "demo"
    assert sorted(p.name for p in demo.iterdir()) == sorted(
        f"{sequence}{suffix}" for suffix in (".mp4", ".npz", "_overlay.mp4", "_sheet.png"))
    assert "models:/stdformer@champion" in done.stdout
    with np.load(demo / f"{sequence}.npz") as z:
        assert json.loads(str(z["meta"]))["model"] == "models:/stdformer@champion"
    first = {p.name: p.read_bytes() for p in demo.iterdir()}
    done = subprocess.run([*stage_command("demo"), "--no-progress"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert {p.name: p.read_bytes() for p in demo.iterdir()} == first     # stable DVC hashes


# --------------------------------------------------------------------------------------------
# The model file's input protocol


def test_the_model_file_brings_its_crop_protocol(synth_root, synth_body_dir, tmp_path,
                                                  monkeypatch):
    """A model trained on 48 px crops at scale 1.3 (not the defaults, 64 and 1.2) predicts from
    an empty directory, with no params.yaml, exactly as when told its protocol; a project whose
    preprocess section says otherwise gets a warning and the model file's crops."""
    from stdformer.cli import main

    crop48 = dataclasses.replace(CROP_CFG, crop_size=48, crop_scale=1.3)
    model_file = write_tiny_model(tmp_path / "m48.pt", synth_body_dir, crop=crop48)
    model48 = load_inference_model(model_file, synth_body_dir)
    assert model48.inputs.crop_size == 48 and model48.inputs.crop_scale == 1.3
    sequence = sorted({t.sequence for t in iter_tracks(synth_root, "test")})[0]
    boxes = annotation_boxes_file(synth_root, sequence, tmp_path / "boxes.json")
    video = synth_root / "imageFiles" / sequence
    told = predict_video(video, model48, tmp_path / "told", PredictConfig(**QUIET), crop48,
                         boxes=boxes, show_progress=False)

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert main(["predict", str(video), "--model", str(model_file), "--body",
                 str(synth_body_dir), "--out", str(tmp_path / "bare"), "--boxes", str(boxes),
                 "--no-glb", "--no-overlay", "--quiet"]) == 0
    with np.load(told.files["npz"]) as a, np.load(tmp_path / "bare" / f"{sequence}.npz") as b:
        meta = json.loads(str(b["meta"]))
        assert (meta["crop_size"], meta["crop_scale"]) == (48, 1.3)
        assert np.array_equal(a["vertices"], b["vertices"]) and len(b["vertices"])

    other = predict_video(video, model48, tmp_path / "other", PredictConfig(**QUIET), CROP_CFG,
                          boxes=boxes, show_progress=False)
    assert any("crop_size 32 -> 48" in w and "model file's are used" in w
               for w in other.warnings)
    with np.load(other.files["npz"]) as c, np.load(told.files["npz"]) as a:
        assert np.array_equal(a["vertices"], c["vertices"])
