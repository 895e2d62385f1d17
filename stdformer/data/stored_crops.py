"""The crops a shard stores: each frame's person crop with context, JPEG-encoded
(`stored_crop` for one image, `crop_frames` for every frame of a sequence's tracks)."""

from __future__ import annotations

import cv2
import numpy as np

from stdformer.data import crops
from stdformer.data.preprocess_config import PreprocessConfig
from stdformer.io import DataError


def _encode_stored(crop: np.ndarray, cfg: PreprocessConfig) -> bytes:
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(cfg.jpeg_quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise RuntimeError("JPEG encoding of a crop failed")
    return buf.tobytes()


def _context_scale(cfg: PreprocessConfig) -> float:
    """crop_affine scale of the stored crop: the same image pixels per crop pixel as the
    model's crop, context_size pixels wide."""
    return cfg.crop_scale * cfg.context_size / cfg.crop_size


def stored_crop(image: np.ndarray | bytes | None, center, side: float, cfg: PreprocessConfig
                ) -> bytes:
    """The JPEG a shard stores for one frame: the person crop with context (context_size pixels,
    the same image pixels per crop pixel as the model's crop) of `image` ((H, W, 3) BGR or JPEG
    bytes; None: black). Decoded, its centre crop_size square is the model's input
    (shards.decode_clip); `stdformer predict` cuts its crops with this function too (preprocess
    cuts the same crops in `crop_frames`, several people from one decode)."""
    size = cfg.context_size
    if image is None:
        crop = np.zeros((size, size, 3), dtype=np.uint8)
    else:
        crop, _ = crops.crop_person(image, center, side, size, scale=_context_scale(cfg))
    return _encode_stored(crop, cfg)


def crop_frames(image_paths: list[list], centers: list[np.ndarray], sides: list[np.ndarray],
                cfg: PreprocessConfig) -> tuple[list[list[bytes]], list[np.ndarray],
                                                list[dict[str, np.ndarray]]]:
    """Crop (with context) and JPEG-encode every frame of several tracks. Track k has frames
    image_paths[k] and boxes centers[k] (N_k, 2), sides[k] (N_k,); an image that several tracks
    show is read and decoded once, at the cheapest reduction all their crops allow.

    Returns per track: jpeg bytes per frame, image_ok (N_k,) bool, {reason: (N_k,) bool}. A
    missing/corrupt image raises DataError with on_error='fail'; with 'skip' its crops are black
    and the frames are flagged.
    """
    size, scale = cfg.context_size, _context_scale(cfg)
    blank = np.zeros((size, size, 3), dtype=np.uint8)
    affines = [crops.crop_affine(c, s, scale, size) for c, s in zip(centers, sides, strict=True)]
    jpegs: list[list[bytes]] = [[] for _ in image_paths]
    flags = [{"missing_image": np.zeros(len(p), bool), "corrupt_image": np.zeros(len(p), bool)}
             for p in image_paths]
    for i in range(max(map(len, image_paths), default=0)):
        showing: dict[str, list[int]] = {}  # image -> the tracks it is frame i of
        for k, paths in enumerate(image_paths):
            if i < len(paths):
                showing.setdefault(str(paths[i]), []).append(k)
        for path, ks in showing.items():
            images = [blank] * len(ks)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
                if cfg.on_error == "fail":
                    raise DataError(path, f"image file cannot be read ({type(e).__name__})") \
                        from e
                for k in ks:
                    flags[k]["missing_image"][i] = True
            else:
                try:
                    images = crops.crop_people(data, [affines[k][i] for k in ks], size)
                except crops.UnreadableImageError as e:
                    if cfg.on_error == "fail":
                        raise DataError(path, f"not a readable JPEG (corrupt or truncated): "
                                        f"{e}") from e
                    for k in ks:
                        flags[k]["corrupt_image"][i] = True
            for k, image in zip(ks, images, strict=True):
                jpegs[k].append(_encode_stored(image, cfg))
    image_ok = [~(f["missing_image"] | f["corrupt_image"]) for f in flags]
    return jpegs, image_ok, flags

