"""Frames in (a video file OpenCV reads, or a folder of images) and H.264 video out (PyAV).

A `FrameSource` can be iterated more than once: `predict` reads the video once to find people,
once to cut their crops and once to draw the overlay, so a long video never sits in memory.

Crops are cut from a JPEG frame's bytes (reduced-size decoding, as `preprocess` crops the
dataset's JPEGs), else from the decoded frame (`Frame.pixels`).
"""

from __future__ import annotations

import fractions
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from stdformer.io import DataError, atomic_output

# FFmpeg inside OpenCV prints a few lines per damaged packet ("Invalid NAL unit size", "partial
# file") straight to stderr; a truncated video is reported once, in one line (shortfall).
# Set OPENCV_FFMPEG_LOGLEVEL (FFmpeg's levels, 16 = errors) to see them again.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
JPEG_SUFFIXES = (".jpg", ".jpeg")
DEFAULT_FPS = 30.0


@dataclass
class Frame:
    """One frame: `image` (H, W, 3) uint8 BGR, decoded on first use; `path` for image folders."""

    index: int
    path: Path | None = None
    decoded: np.ndarray | None = None

    @cached_property
    def image(self) -> np.ndarray:
        if self.decoded is not None:
            return self.decoded
        image = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(self.path, "not a readable image")
        return image

    @property
    def pixels(self) -> np.ndarray | bytes:
        """What crops are cut from: a JPEG file's bytes (decoded at reduced size as preprocess
        decodes the dataset's frames), else the decoded image."""
        if self.path is not None and self.path.suffix.lower() in JPEG_SUFFIXES:
            return self.path.read_bytes()
        return self.image


class FrameSource:
    """The frames of a video file or of a folder of images (sorted by name, numbers compared as
    numbers). `width`, `height` come from the first frame; `frame_count` is exact for a folder and
    the container's (possibly wrong) count for a video: use it for progress only.
    `declared_frames` is the count the container itself records (None when it records none, and
    for a folder): more than can be decoded means a truncated or damaged file (`shortfall`)."""

    def __init__(self, path: str | Path, fps: float | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(self.path, "video file or frame folder not found")
        self.images: list[Path] | None = None
        self.declared_frames: int | None = None
        if self.path.is_dir():
            self.images = sorted((p for p in self.path.iterdir()
                                  if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
            if not self.images:
                raise DataError(self.path, f"folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            self.fps = float(fps or DEFAULT_FPS)
            self.frame_count = len(self.images)
            first = Frame(0, self.images[0]).image
        else:
            capture = self._open()
            native = capture.get(cv2.CAP_PROP_FPS)
            self.frame_count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
            ok, first = capture.read()
            capture.release()
            if not ok:
                raise DataError(self.path, "no frame could be decoded (not a video, or empty)")
            self.declared_frames = declared_frame_count(self.path)
            self.fps = float(fps or (native if native and np.isfinite(native) and native > 0
                                     else DEFAULT_FPS))
        self.height, self.width = first.shape[:2]

    def shortfall(self, decoded: int) -> str | None:
        """What is wrong when fewer than the declared frames were decoded (a truncated or
        damaged video), else None."""
        if self.declared_frames is None or decoded >= self.declared_frames:
            return None
        return (f"only {decoded} of the {self.declared_frames} frames its container declares "
                "could be decoded (truncated or damaged file?)")

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name

    def __iter__(self) -> Iterator[Frame]:
        """Frames in order; every frame has this source's size (else DataError)."""
        if self.images is not None:
            frames: Iterable[Frame] = (Frame(i, p) for i, p in enumerate(self.images))
        else:
            frames = self._read_video()
        for frame in frames:
            if frame.image.shape[:2] != (self.height, self.width):
                where = frame.path or f"{self.path}[frame {frame.index}]"
                raise DataError(where, f"frame size {frame.image.shape[1]}x"
                                f"{frame.image.shape[0]} differs from the first frame's "
                                f"{self.width}x{self.height}")
            yield frame

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise DataError(self.path, "not a video OpenCV can read (unknown format or corrupt)")
        return capture

    def _read_video(self) -> Iterator[Frame]:
        capture = self._open()
        try:
            index = 0
            while True:
                ok, image = capture.read()
                if not ok:
                    return
                yield Frame(index, decoded=image)
                index += 1
        finally:
            capture.release()


def declared_frame_count(path: Path) -> int | None:
    """The frame count a video's container records for its first video stream (MP4's sample
    table, ...), or None when it records none. OpenCV's CAP_PROP_FRAME_COUNT cannot serve: it
    falls back to duration x frame rate, an estimate that is often off by a frame."""
    import av  # imported where used, as in write_h264: it loads FFmpeg's shared libraries

    try:
        with av.open(str(path)) as container:
            frames = container.streams.video[0].frames if container.streams.video else 0
    except Exception:  # noqa: BLE001 - PyAV cannot read what OpenCV can: nothing is declared
        return None
    return int(frames) if frames > 0 else None


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


# --------------------------------------------------------------------------------------------
# Writing


# BT.601 limited range ("TV"): what an H.264 decoder assumes for yuv420p and what the x264
# VUI flags declare. mbtree off: with it, the same frames encoded in the same process gave
# different bytes after unrelated work (loading a model); with it off they never did.
_X264_PARAMS = "mbtree=0:colorprim=smpte170m:transfer=smpte170m:colormatrix=smpte170m"


def bgr_to_i420(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) BGR uint8, H and W even -> (H * 3 / 2, W) planar yuv420p: Y, then Cb and Cr
    as 2x2 means (integer BT.601). Sharper than letting FFmpeg's swscale convert: on overlay
    frames the decoded video is 1.6 grey levels off on average instead of 3.8."""
    h, w = image.shape[:2]
    b, g, r = (image[..., c].astype(np.int32) for c in range(3))
    y = (66 * r + 129 * g + 25 * b + 128 >> 8) + 16
    cb = -38 * r - 74 * g + 112 * b                     # x 256, before the 2x2 mean
    cr = 112 * r - 94 * g - 18 * b

    def half(c: np.ndarray) -> np.ndarray:
        return (c.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3)) + 512 >> 10) + 128

    planes = (y, half(cb), half(cr))
    return np.concatenate([np.clip(p, 0, 255).astype(np.uint8).reshape(-1)
                           for p in planes]).reshape(h * 3 // 2, w)


def write_h264(path: str | Path, frames: Iterable[np.ndarray], fps: float, crf: int = 20) -> int:
    """Encode BGR uint8 frames (all one size) as an H.264 MP4 that browsers play (yuv420p, BT.601,
    faststart); odd sizes are padded by one pixel. Single-threaded x264 without mbtree,
    bit-exact muxing and an integer colour conversion, so the same frames give the same bytes.
    Written atomically; returns the number of frames."""
    import av

    rate = fractions.Fraction(fps).limit_denominator(1001)
    count = 0
    with atomic_output(path) as tmp:
        container = av.open(str(tmp), mode="w", format="mp4",
                            options={"movflags": "+faststart", "fflags": "+bitexact"})
        try:
            stream = None
            for image in frames:
                if stream is None:
                    height, width = image.shape[:2]
                    stream = container.add_stream("libx264", rate=rate)
                    stream.width, stream.height = width + width % 2, height + height % 2
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(crf), "preset": "medium", "threads": "1",
                                      "x264-params": _X264_PARAMS}
                padded = np.pad(image, ((0, stream.height - image.shape[0]),
                                        (0, stream.width - image.shape[1]), (0, 0)), mode="edge")
                frame = av.VideoFrame.from_ndarray(bgr_to_i420(padded), format="yuv420p")
                frame.pts, frame.time_base = count, 1 / rate
                for packet in stream.encode(frame):
                    container.mux(packet)
                count += 1
            if stream is None:
                raise ValueError(f"{path}: no frames to encode")
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    return count
