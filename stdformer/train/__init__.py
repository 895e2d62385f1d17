"""Training: streamed, clip-consistently augmented shards -> STDFormer, with exact resume, DDP
and MLflow/DVC logging. Entry point: `train(cfg, model_cfg, loss_cfg, paths, tracking)`."""

from stdformer.train.augment import (AugmentParams, ClipAugmenter, FlipPerms, apply_augment,
                                     clip_rng, draw_params)
from stdformer.train.config import (AugmentConfig, TrainConfig, config_hash,
                                    model_config_from_section)
from stdformer.train.export import MODEL_FORMAT, load_model, read_model_file
from stdformer.train.loop import TrainPaths, TrainResult, Tracking, build_model, train
from stdformer.train.steps import normalize_frames
from stdformer.train.tracking import TrackingUnavailableError, default_tracking_uri

__all__ = [
    "AugmentConfig", "AugmentParams", "ClipAugmenter", "FlipPerms", "MODEL_FORMAT",
    "TrainConfig", "TrainPaths", "TrainResult", "Tracking", "TrackingUnavailableError",
    "apply_augment", "build_model", "clip_rng", "config_hash", "default_tracking_uri",
    "draw_params", "load_model", "model_config_from_section", "normalize_frames",
    "read_model_file", "train",
]
