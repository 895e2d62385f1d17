"""People in frames: a small detector interface, OpenCV's HOG people detector, and boxes from a
file (the user's own detector or tracker).

Boxes file (`--boxes FILE`), MOTChallenge style, one row a box, frames counted from 1:

    CSV   frame,id,x,y,w,h,score[,...]      (x, y) top-left corner, pixels; extra columns ignored;
                                            a first line that is not numbers is a header
    JSON  [{"frame": 1, "id": 3, "x": 10.0, "y": 20.0, "w": 50.0, "h": 120.0, "score": 0.9}, ...]
          ("id" and "score" optional)

id >= 0 on every row: the ids are the tracks (tracking is skipped). id -1 (or absent) on every
row: plain detections, tracked like the detector's. A file mixing both is refused.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from stdformer.inference.config import HOGConfig
from stdformer.io import DataError


@dataclass(frozen=True)
class Detections:
    """People found in one frame: xyxy (N, 4) float64 image pixels (full-body boxes),
    score (N,) float64 in [0, 1]."""

    xyxy: np.ndarray
    score: np.ndarray

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4)), np.zeros(0))

    def __len__(self) -> int:
        return len(self.score)


class Detector(Protocol):
    def __call__(self, image_bgr: np.ndarray) -> Detections: ...


class HOGPeopleDetector:
    """cv2.HOGDescriptor with the default people SVM, on an upscaled frame; the window is shrunk
    to a full-body box and its SVM margin m mapped to a score 1 - exp(-m)."""

    def __init__(self, cfg: HOGConfig | None = None):
        self.cfg = cfg or HOGConfig()
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        cfg = self.cfg
        image = image_bgr if cfg.upscale == 1 else cv2.resize(
            image_bgr, None, fx=cfg.upscale, fy=cfg.upscale, interpolation=cv2.INTER_LINEAR)
        rects, margins = self.hog.detectMultiScale(
            image, hitThreshold=cfg.hit_threshold, winStride=(cfg.win_stride, cfg.win_stride),
            padding=(8, 8), scale=cfg.scale)
        if len(rects) == 0:
            return Detections.empty()
        rects = np.asarray(rects, np.float64).reshape(-1, 4) / cfg.upscale       # x, y, w, h
        center = rects[:, :2] + rects[:, 2:] / 2
        half = rects[:, 2:] * np.asarray(cfg.box_shrink, np.float64) / 2
        score = 1.0 - np.exp(-np.maximum(np.asarray(margins, np.float64).reshape(-1), 0.0))
        return Detections(np.concatenate([center - half, center + half], axis=1), score)


# --------------------------------------------------------------------------------------------
# Boxes from a file


@dataclass(frozen=True)
class BoxTable:
    """Rows of a boxes file: frame (N,) 0-based, track_id (N,) int (-1: none), xyxy (N, 4),
    score (N,)."""

    frame: np.ndarray
    track_id: np.ndarray
    xyxy: np.ndarray
    score: np.ndarray

    @property
    def has_ids(self) -> bool:
        return len(self.track_id) > 0 and bool((self.track_id >= 0).all())

    def per_frame(self, num_frames: int) -> list[Detections]:
        """Detections of every frame (ids ignored)."""
        out = []
        for f in range(num_frames):
            rows = self.frame == f
            out.append(Detections(self.xyxy[rows], self.score[rows]))
        return out


FIELDS = ("frame", "id", "x", "y", "w", "h", "score")


def read_boxes(path: str | Path) -> BoxTable:
    """Read a boxes file (CSV or JSON, see the module docstring); DataError naming the file,
    the row and the field on anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "boxes file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(path, f"not a readable text file: {e}") from e
    rows = _json_rows(path, text) if path.suffix.lower() == ".json" else _csv_rows(path, text)
    if not rows:
        raise DataError(path, "holds no boxes")
    values = np.array(rows, np.float64)                                   # (N, 7)
    frame, ids, x, y, w, h, score = values.T
    for name, column in (("frame", frame), ("id", ids)):
        bad = np.flatnonzero(column != np.round(column))
        if len(bad):
            raise DataError(path, f"row {bad[0] + 1}: must be a whole number, got "
                            f"{column[bad[0]]}", field=name)
    checks = (("frame", frame < 1, "frames are counted from 1"),
              ("w", w <= 0, "must be > 0"), ("h", h <= 0, "must be > 0"),
              ("score", (score < 0) | (score > 1), "must be in [0, 1]"),
              ("id", ids < -1, "must be >= 0, or -1 for none"))
    for name, bad, problem in checks:
        if bad.any():
            raise DataError(path, f"row {np.flatnonzero(bad)[0] + 1}: {problem}", field=name)
    ids = ids.astype(np.int64)
    if (ids >= 0).any() and (ids < 0).any():
        raise DataError(path, "some rows have a track id and some have none (-1): give ids on "
                        "every row (tracks) or on none (detections)", field="id")
    table = BoxTable(frame.astype(np.int64) - 1, ids, np.stack([x, y, x + w, y + h], axis=1),
                     score)
    if table.has_ids:
        keys = table.track_id * (int(table.frame.max()) + 1) + table.frame
        if len(np.unique(keys)) != len(keys):
            raise DataError(path, "a track has two boxes in one frame", field="id")
    return table


def _csv_rows(path: Path, text: str) -> list[list[float]]:
    rows = []
    for number, line in enumerate(csv.reader(text.splitlines()), start=1):
        if not line or not "".join(line).strip():
            continue
        try:
            values = [float(v) for v in line[:7]]
        except ValueError:
            if number == 1:                                               # a header line
                continue
            raise DataError(path, f"line {number}: expected numbers "
                            f"{','.join(FIELDS)}, got {','.join(line[:7])!r}") from None
        if len(values) < 6:
            raise DataError(path, f"line {number}: expected at least 6 columns "
                            f"({','.join(FIELDS[:6])}), got {len(values)}")
        if len(values) == 6:
            values.append(1.0)
        if not np.isfinite(values).all():
            raise DataError(path, f"line {number}: NaN or inf")
        rows.append(values)
    return rows


def _json_rows(path: Path, text: str) -> list[list[float]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON: {e}") from e
    if not isinstance(data, list):
        raise DataError(path, "expected a list of boxes at the top level")
    rows = []
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise DataError(path, f"item {number}: expected an object with "
                            f"{', '.join(FIELDS)}")
        missing = [k for k in ("frame", "x", "y", "w", "h") if k not in item]
        if missing:
            raise DataError(path, f"item {number}: missing key", field=missing[0])
        item = {"id": -1, "score": 1.0, **item}
        if item["id"] is None:
            item["id"] = -1
        values = []
        for key in FIELDS:
            value = item[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not np.isfinite(value):
                raise DataError(path, f"item {number}: expected a finite number, got {value!r}",
                                field=key)
            values.append(float(value))
        rows.append(values)
    return rows
