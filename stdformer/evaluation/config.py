"""The `evaluate` section of params.yaml."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from stdformer.scoring import BASELINE_NAME, MERGE_MODES, SmoothingConfig

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass
class DatasetSpec:
    """One scored dataset: the clips of `split` of a source under the shards directory
    (stdformer/data/sources.py), optionally only those of one camera (the manifest's `camera`,
    e.g. Human3.6M protocol 2: the frontal camera, cam_idx 4)."""

    source: str
    camera: int | None = None


@dataclass
class EvaluateConfig:
    """What `stages.evaluate` compares, on which frames, and which figures it draws.

    models: name -> model file, or a list of model files (named by their file stem). Every model
    is scored on the same frames, next to the mean-pose baseline when `baseline` is on.
    datasets: name -> what is scored under that name, one row per (model, dataset); empty: one
    dataset per source, named after it.
    """

    models: dict[str, str] | list[str] = field(
        default_factory=lambda: {"stdformer": "models/stdformer.pt"})
    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    split: str = "test"                # shards split that is evaluated
    merge: str = "mean"                # overlapping windows: mean | first | center
    baseline: bool = True              # training-set mean pose, predicted for every frame
    baseline_split: str = "train"      # split of the dataset's source the mean pose is over
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    overlays: int = 3                  # clips drawn as mesh overlays per dataset (0 = none)
    overlay_frames: int = 4            # frames of each overlay clip shown (evenly spaced)
    overlay_size: int = 160            # pixels of one overlay panel (crops are upscaled)
    worst_sequences: int = 3           # sequences in the error-over-time plot and csv
    batch_size: int = 8                # clips per forward pass
    num_workers: int = 0               # loader processes
    device: str = "auto"               # auto | cpu | cuda | cuda:N

    def model_files(self) -> dict[str, str]:
        """name -> model file, in the configured order."""
        if isinstance(self.models, dict):
            return dict(self.models)
        return {Path(p).stem: p for p in self.models}

    def validate(self) -> None:
        if self.merge not in MERGE_MODES:
            raise ValueError(f"merge must be one of {', '.join(MERGE_MODES)}, got {self.merge!r}")
        files = self.model_files()
        count = len(self.models)
        if count == 0 and not self.baseline:
            raise ValueError("nothing to evaluate: no models and baseline is off")
        if len(files) != count:
            raise ValueError(f"models: two model files share a file name stem: {self.models}")
        for name in files:
            if not _NAME.fullmatch(name) or name == BASELINE_NAME:
                raise ValueError(f"models: {name!r} is not a usable model name (letters, digits, "
                                 f"'_', '-', '.'; not {BASELINE_NAME!r})")
        for name, spec in self.datasets.items():
            if not _NAME.fullmatch(name):
                raise ValueError(f"datasets: {name!r} is not a usable dataset name (letters, "
                                 "digits, '_', '-', '.')")
            if spec.camera is not None and spec.camera < 0:
                raise ValueError(f"datasets.{name}.camera must be >= 0, got {spec.camera}")
        unknown = [m for m in (self.smoothing.models or []) if m not in files]
        if unknown:
            raise ValueError(f"smoothing.models: {unknown[0]!r} is not one of the models "
                             f"{sorted(files)}")
        for name in ("overlays", "worst_sequences", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("overlay_frames", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.overlay_size < 32:
            raise ValueError(f"overlay_size must be >= 32 pixels, got {self.overlay_size}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    def smoothed_models(self) -> list[str]:
        """Models that get a "_smooth" row (none when smoothing is off)."""
        if not self.smoothing.enabled:
            return []
        chosen = self.smoothing.models
        return [m for m in self.model_files() if chosen is None or m in chosen]
