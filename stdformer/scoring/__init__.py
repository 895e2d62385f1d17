"""What training's validation and evaluation share: per-frame errors, predictors, window
merging per track, per-track scores and diagnostics, smoothing, and `evaluate_predictors`,
which scores predictors on a split. Below `train/` and `evaluation/`; imports neither."""

MERGE_MODES = ("mean", "first", "center")   # overlapping windows: how predictions combine
BASELINE_NAME = "mean_pose"                 # the training-set mean pose's row
SMOOTH_SUFFIX = "_smooth"                   # a smoothed model's row: <model>_smooth

from stdformer.scoring.smoothing import SmoothingConfig, gaussian_smooth  # noqa: E402

__all__ = ["BASELINE_NAME", "MERGE_MODES", "SMOOTH_SUFFIX", "SmoothingConfig", "gaussian_smooth"]
