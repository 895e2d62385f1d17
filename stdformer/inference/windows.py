"""The model over a track's crops: windows of the model's clip length at a stride, plus the last
window (`preprocess_config.clip_starts`), merged per frame by `evaluate`'s `WindowMerger`,
optionally smoothed by `evaluate`'s `gaussian_smooth`.

A track shorter than one clip is padded by repeating its last crop (the padded frames' outputs
are dropped), so short tracks get a prediction too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stdformer.data.preprocess_config import clip_starts
from stdformer.scoring.predict import Predictor, WindowMerger
from stdformer.scoring.smoothing import gaussian_smooth


@dataclass
class TrackOutput:
    """Merged per-frame model outputs of one track: vertices (T, V, 3), cam (T, 3)."""

    vertices: np.ndarray
    cam: np.ndarray


def window_starts(length: int, clip_len: int, stride: int) -> list[int]:
    """Window starts over a track of `length` frames; [0] (one padded window) when shorter."""
    return clip_starts(length, clip_len, stride) or [0]


def _windows(frames: np.ndarray, starts: Sequence[int], clip_len: int) -> Iterator[np.ndarray]:
    """frames (T, H, W, 3) -> (clip_len, 3, H, W) uint8 windows, padded with the last frame."""
    for start in starts:
        window = frames[start:start + clip_len]
        if len(window) < clip_len:
            pad = np.repeat(window[-1:], clip_len - len(window), axis=0)
            window = np.concatenate([window, pad])
        yield window.transpose(0, 3, 1, 2)


def predict_crop_windows(crops: Mapping[int, np.ndarray], predictor: Predictor, clip_len: int,
                   stride: int, merge: str = "mean", batch_size: int = 8,
                   on_window: Callable[[int], None] | None = None) -> dict[int, TrackOutput]:
    """{track id: RGB uint8 crops (T, H, W, 3)} -> {track id: TrackOutput}.

    Windows of all tracks are batched together; `on_window(n)` reports progress."""
    jobs = [(tid, start) for tid, frames in crops.items()
            for start in window_starts(len(frames), clip_len, stride)]
    mergers = {tid: {kind: WindowMerger(max(len(frames), clip_len), merge)
                     for kind in ("vertices", "cam")} for tid, frames in crops.items()}
    for lo in range(0, len(jobs), batch_size):
        batch = jobs[lo:lo + batch_size]
        frames = np.stack([next(_windows(crops[tid], [start], clip_len)) for tid, start in batch])
        out = predictor({"frames": torch.from_numpy(frames)})
        for i, (tid, start) in enumerate(batch):
            for kind in ("vertices", "cam"):
                mergers[tid][kind].add(start, torch.as_tensor(out[kind][i]).numpy())
        if on_window is not None:
            on_window(len(batch))
    results = {}
    for tid, frames in crops.items():
        t = len(frames)
        results[tid] = TrackOutput(mergers[tid]["vertices"].result()[:t].astype(np.float32),
                                   mergers[tid]["cam"].result()[:t].astype(np.float32))
    return results


def smooth_output(output: TrackOutput, sigma: float) -> TrackOutput:
    """Gaussian smoothing over time of the vertices and the camera (evaluate's smoothing)."""
    weights = np.ones(len(output.vertices), np.float32)
    return TrackOutput(gaussian_smooth(output.vertices, weights, sigma),
                       gaussian_smooth(output.cam, weights, sigma))
