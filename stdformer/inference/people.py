"""Person crops for the model, by the code that cuts the training crops:

    full-body box (x0, y0, x1, y1)
      -> square: centre = box centre, side = box_scale x the longer box side
         (box_scale 0.95 makes it preprocess's keypoint box: measured, see PredictConfig)
      -> crops.smooth_boxes: undetected frames interpolated, median then Gaussian over time
      -> stored_crops.stored_crop: the crop with context as the shards store it (JPEG)
      -> decoded, its centre crop_size square, as shards.decode_clip gives it to the model

so a box that equals preprocess's raw keypoint box gives the very crop `evaluate` feeds the model.
"""

from __future__ import annotations

import numpy as np

from stdformer.data import crops
from stdformer.data.preprocess_config import PreprocessConfig
from stdformer.data.stored_crops import stored_crop
from stdformer.data.shards import context_margin, decode_jpeg_rgb
from stdformer.inference.track import PersonTrack
from stdformer.io import DataError


def square_boxes(xyxy: np.ndarray, box_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """xyxy (T, 4) -> centres (T, 2), sides (T,); NaN rows stay NaN."""
    xyxy = np.asarray(xyxy, np.float64)
    centers = (xyxy[:, :2] + xyxy[:, 2:]) / 2
    sides = box_scale * (xyxy[:, 2:] - xyxy[:, :2]).max(axis=1)
    return centers, sides


def person_track_boxes(track: PersonTrack, box_scale: float, crop: PreprocessConfig
                ) -> tuple[crops.BoxTrack, np.ndarray]:
    """Smoothed square boxes of a track and the affines (T, 2, 3) from image pixels to the
    model's crop (as preprocess's `affine` target)."""
    centers, sides = square_boxes(track.xyxy, box_scale)
    boxes = crops.smooth_boxes(centers, sides, track.detected, crop.bbox_median_kernel,
                               crop.bbox_sigma)
    affines = np.stack([crops.crop_affine(c, s, crop.crop_scale, crop.crop_size)
                        for c, s in zip(boxes.centers, boxes.sides, strict=True)])
    return boxes, affines


def model_crop(image: np.ndarray | bytes, center, side: float, crop: PreprocessConfig,
               where: str = "<frame>") -> np.ndarray:
    """RGB uint8 (crop_size, crop_size, 3): what the model sees of the person in one frame
    ((H, W, 3) BGR or the frame's JPEG bytes)."""
    try:
        jpeg = stored_crop(image, center, side, crop)
    except crops.UnreadableImageError as e:
        raise DataError(where, f"not a readable JPEG (corrupt or truncated): {e}") from e
    stored = decode_jpeg_rgb(jpeg, where)
    m = context_margin({"crop_size": crop.crop_size, "context_size": crop.context_size})
    return stored[m:m + crop.crop_size, m:m + crop.crop_size]
