"""Training: streamed, clip-consistently augmented shards -> STDFormer, with exact resume, DDP
and MLflow/DVC logging. Entry point: `train(cfg, model_cfg, loss_cfg, paths, tracking)`."""

from stdformer.train.augment import (
    AugmentParams,
    ClipAugmenter,
    apply_augment,
    clip_rng,
    draw_params,
)
from stdformer.train.config import AugmentConfig, TrainConfig, config_hash
from stdformer.train.loop import Tracking, TrainPaths, TrainResult, build_model, train

__all__ = [
    "AugmentConfig", "AugmentParams", "ClipAugmenter", "TrainConfig", "TrainPaths",
    "TrainResult", "Tracking", "apply_augment", "build_model", "clip_rng", "config_hash",
    "draw_params", "train",
]
