"""Evaluation on the test split: sliding-window prediction merged per frame, the published
metrics (MPJPE, PA-MPJPE, MPVPE, Accel) for several models, the mean-pose baseline and
smoothed variants, and the reports (json, parquet, csv, charts, mesh overlays)."""

from stdformer.evaluation.config import (BASELINE_NAME, MERGE_MODES, SMOOTH_SUFFIX,
                                         EvaluateConfig, SmoothingConfig)
from stdformer.evaluation.predict import (TrackLayout, TrackPrediction, WindowMerger,
                                          constant_predictor, merge_windows, model_predictor,
                                          normalize_frames, predict_tracks, track_layout,
                                          with_mesh)
from stdformer.evaluation.run import (EvaluatePaths, EvaluationResult, evaluate,
                                      evaluate_predictors, write_outputs)
from stdformer.evaluation.scoring import METRICS, FrameTable, score_track, track_errors
from stdformer.evaluation.smoothing import gaussian_smooth

__all__ = [
    "BASELINE_NAME", "EvaluateConfig", "EvaluatePaths", "EvaluationResult", "FrameTable",
    "MERGE_MODES", "METRICS", "SMOOTH_SUFFIX", "SmoothingConfig", "TrackLayout",
    "TrackPrediction", "WindowMerger", "constant_predictor", "evaluate", "evaluate_predictors",
    "gaussian_smooth", "merge_windows", "model_predictor", "normalize_frames", "predict_tracks",
    "score_track", "track_errors", "track_layout", "with_mesh", "write_outputs",
]
