"""The preprocessing settings (params.yaml section `preprocess`: the crop settings every
dataset shares; the datasets themselves are section `datasets`, datasets.py) and the clip
windows they define: what preprocess, evaluation and `stdformer predict` share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stdformer.io import DataError


@dataclass
class PreprocessConfig:
    """params.yaml section `preprocess`."""

    crop_size: int = 64  # the model's input size; 224 for the full profile
    crop_scale: float = 1.2  # crop side = crop_scale x box side
    context: float = 1.25  # stored crops show context x the crop side (for scale/rotation aug.)
    clip_len: int = 8
    min_keypoints: int = 6  # a frame needs more than this many confident keypoints
    keypoint_conf: float = 0.3
    bbox_extent_scale: float = 1.1
    bbox_median_kernel: int = 11
    bbox_sigma: float = 8.0
    samples_per_shard: int = 64
    workers: int = 2
    executor: Literal["local", "serial", "dask"] = "local"
    executor_address: str = ""  # Dask scheduler address (executor: dask)
    on_error: Literal["fail", "skip"] = "fail"
    jpeg_quality: int = 90

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.on_error not in ("fail", "skip"):
            out.append(("on_error", f"must be 'fail' or 'skip', got {self.on_error!r}"))
        if self.executor not in ("local", "serial", "dask"):
            out.append(("executor", f"must be 'local', 'serial' or 'dask', got "
                                    f"{self.executor!r}"))
        for name, value, low in (("crop_size", self.crop_size, 8), ("clip_len", self.clip_len, 1),
                                 ("samples_per_shard", self.samples_per_shard, 1),
                                 ("workers", self.workers, 0),
                                 ("min_keypoints", self.min_keypoints, 0),
                                 ("bbox_median_kernel", self.bbox_median_kernel, 1)):
            if value < low:
                out.append((name, f"must be >= {low}, got {value}"))
        if self.crop_scale <= 0 or self.bbox_extent_scale <= 0:
            out.append(("crop_scale", "scales must be > 0"))
        if not 1.0 <= self.context <= 2.0:
            out.append(("context", f"must be in [1, 2], got {self.context}"))
        if self.bbox_sigma < 0:
            out.append(("bbox_sigma", f"must be >= 0, got {self.bbox_sigma}"))
        if not 1 <= self.jpeg_quality <= 100:
            out.append(("jpeg_quality", f"must be in 1..100, got {self.jpeg_quality}"))
        return out

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            name, problem = problems[0]
            raise ValueError(f"{name}: {problem}")

    @property
    def context_size(self) -> int:
        """Side of the stored crops: crop_size plus the same whole number of context pixels on
        each side (so the centre crop is a plain slice)."""
        return self.crop_size + 2 * int(round(self.crop_size * (self.context - 1.0) / 2.0))


def check_config(cfg: PreprocessConfig, source: str = "PreprocessConfig") -> None:
    """DataError naming the first bad field (for configs built in code, not from_dict)."""
    problems = cfg.problems()
    if problems:
        name, problem = problems[0]
        raise DataError(source, problem, field=name)


def clip_starts(num_frames: int, clip_len: int, stride: int) -> list[int]:
    """Windows [start, start + clip_len) every `stride` frames, plus the last clip_len frames
    (so every frame is in some clip). [] for a track shorter than one clip."""
    if num_frames < clip_len:
        return []
    starts = list(range(0, num_frames - clip_len + 1, stride))
    if starts[-1] + clip_len < num_frames:
        starts.append(num_frames - clip_len)
    return starts

