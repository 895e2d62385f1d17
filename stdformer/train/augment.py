"""Clip-consistent augmentation (reference section 2).

One set of parameters is drawn per clip and applied to every frame, so the motion inside a clip
stays physically plausible. The draw is a pure function of (seed, epoch, clip key): it does not
depend on loader workers, ranks or where a resumed run picked up.

Transform order (images and targets alike): horizontal flip -> rotation/scale about the crop
centre -> per-channel colour scaling -> temporal reversal.

Real surroundings: the shards store each crop with context around it (`context_size` >
`crop_size`, the model's crop in the centre; see stdformer.data.shards). The flip, rotation and
scale are one affine warp from the stored image to the final crop (`cut_crops`), so a zoomed-out
or turned crop shows what was around the person, as re-cropping the full frame would (black only
beyond the stored context). Without a geometric change the crop is a plain slice.

Coordinate conventions (the shard contract): crops are W x H pixels, pixel centres at integer
coordinates (OpenCV's convention), so the crop centre is ((W-1)/2, (H-1)/2) and a horizontal
mirror maps x to W-1-x. 3D targets live in the camera frame (x right, y down, z forward), so an
image rotation about the crop centre is a rotation of 3D points about the camera z axis by the
same angle, and a mirror negates x.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from stdformer.body.mirror import FlipPerms
from stdformer.data.shards import context_margin
from stdformer.train.config import AugmentConfig

# Targets holding 3D points (S, P, 3) and the flip permutation each one uses (FlipPerms field).
# The mesh is not among them: it is posed from the augmented pose (BodyModel.shard_mesh), as
# FastMETRO poses its flipped and rotated ground truth.
POINTS_3D = {"joints3d": "smpl", "joints_h36m": "h36m"}
# Targets holding 2D points (S, P, 3) = (x, y, visibility/confidence) in crop pixels.
POINTS_2D = {"joints2d": "h36m", "keypoints2d": "coco"}
# Targets without a frame axis (everything else with a leading S axis is reversed in time).
PER_CLIP = frozenset({"intrinsics"})


@dataclass(frozen=True)
class AugmentParams:
    """One clip's augmentation. rotation_deg: counter-clockwise in the displayed image;
    scale: crop-size factor (> 1 shows more context, so the person looks smaller)."""

    flip: bool = False
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rotation_deg: float = 0.0
    scale: float = 1.0
    reverse: bool = False

    @property
    def is_identity(self) -> bool:
        return self == AugmentParams()


def clip_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, clip key)."""
    key_id = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, epoch, key_id])


def draw_params(cfg: AugmentConfig, rng: np.random.Generator) -> AugmentParams:
    """Draw one clip's parameters. Every value is drawn, in a fixed order, whatever the
    probabilities are, so changing one probability does not reshuffle the others."""
    u_flip, u_rot_zero, u_reverse = rng.random(3)
    color = rng.uniform(1.0 - cfg.color_noise, 1.0 + cfg.color_noise, size=3)
    rotation = float(np.clip(rng.normal(0.0, cfg.rotation_std_deg),
                             -cfg.rotation_max_deg, cfg.rotation_max_deg))
    scale = float(np.clip(rng.normal(1.0, cfg.scale_std), cfg.scale_min, cfg.scale_max))
    if not cfg.enabled:
        return AugmentParams()
    return AugmentParams(
        flip=bool(u_flip < cfg.flip_prob),
        color=tuple(float(c) for c in color),
        rotation_deg=0.0 if u_rot_zero < cfg.rotation_zero_prob else rotation,
        scale=scale,
        reverse=bool(u_reverse < cfg.reverse_prob),
    )


# --------------------------------------------------------------------------------------------
# Geometry


def crop_affine(rotation_deg: float, scale: float, width: int, height: int) -> np.ndarray:
    """(2, 3) pixel affine of the rotation/scale about the crop centre (as cv2.warpAffine
    applies it: dst = A @ [x, y, 1]). The content is magnified by 1 / scale."""
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    return cv2.getRotationMatrix2D(centre, rotation_deg, 1.0 / scale)


def camera_z_rotation(rotation_deg: float) -> np.ndarray:
    """(3, 3) rotation about the camera z axis matching an image rotation by rotation_deg
    (same linear map on (x, y) as `crop_affine` without its scale)."""
    a = np.deg2rad(rotation_deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def flip_pose(pose: np.ndarray, smpl_perm: np.ndarray) -> np.ndarray:
    """(S, 72) axis-angle SMPL pose of the mirrored body: swap left/right joints and negate the
    y and z components of every axis (mirroring about the camera's y-z plane)."""
    aa = pose.reshape(len(pose), -1, 3)[:, smpl_perm]
    return (aa * np.array([1.0, -1.0, -1.0], dtype=pose.dtype)).reshape(pose.shape)


def rotate_global_orient(pose: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(S, 72) pose with its global orientation (first 3 values) pre-multiplied by rotation."""
    out = pose.copy()
    for t in range(len(pose)):
        orient, _ = cv2.Rodrigues(pose[t, :3].astype(np.float64))
        aa, _ = cv2.Rodrigues(rotation @ orient)
        out[t, :3] = aa[:, 0]
    return out


# --------------------------------------------------------------------------------------------
# Applying one clip's parameters


def cut_affine(params: AugmentParams, margin: int, width: int, height: int) -> np.ndarray:
    """(2, 3) affine from stored pixels (the crop plus `margin` context pixels on every side)
    to the final width x height crop: shift into crop pixels, flip, then rotate/scale about the
    crop centre (the same maps the 2D targets go through)."""
    shift = np.array([[1.0, 0.0, -margin], [0.0, 1.0, -margin], [0.0, 0.0, 1.0]])
    flip = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    turn = np.vstack([crop_affine(params.rotation_deg, params.scale, width, height), [0, 0, 1]])
    return (turn @ (flip if params.flip else np.eye(3)) @ shift)[:2]


def augment_frames(images: np.ndarray, params: AugmentParams, margin: int,
                   out: np.ndarray) -> np.ndarray:
    """(S, H + 2m, W + 2m, 3) stored crops -> `out` (S, H, W, 3) uint8, C-contiguous (e.g. a
    clip's slot in a batch): each frame cut (flipped, turned and scaled by `params`; a plain
    slice when nothing turns or scales: cheap, and exact), colour-scaled, and the clip reversed
    in time. Returns `out`."""
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous (OpenCV writes into it)")
    height, width = out.shape[1:3]
    if params.rotation_deg == 0.0 and params.scale == 1.0:
        crops = images[:, margin:margin + height, margin:margin + width]
        crops = crops[:, :, ::-1] if params.flip else crops
        out[...] = crops[::-1] if params.reverse else crops
    else:
        affine = cut_affine(params, margin, width, height)
        order = range(len(images))[::-1] if params.reverse else range(len(images))
        for dst, image in zip(order, images, strict=True):
            cv2.warpAffine(image, affine, (width, height), dst=out[dst], flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if params.color != (1.0, 1.0, 1.0):
        # round(value x gain) per channel, clipped: a 256-entry table per channel, one pass.
        levels = np.arange(256, dtype=np.float32)[:, None]
        table = np.clip(levels * np.asarray(params.color, np.float32) + 0.5, 0, 255)
        table = table.astype(np.uint8)[:, None, :]                     # (256, 1, 3)
        frames = out.reshape(-1, out.shape[-2], 3)                     # (S * H, W, 3)
        cv2.LUT(frames, table, dst=frames)
    return out


def _flip_targets(targets: dict[str, np.ndarray], perms: FlipPerms, width: int) -> None:
    """In place on the dict; 2D points are in crops `width` pixels wide."""
    mirror = np.array([-1.0, 1.0, 1.0], dtype=np.float32)
    for name, perm_name in POINTS_3D.items():
        if name in targets:
            targets[name] = targets[name][:, getattr(perms, perm_name)] * mirror
    for name, perm_name in POINTS_2D.items():
        if name in targets:
            points = targets[name][:, getattr(perms, perm_name)].copy()
            points[..., 0] = (width - 1) - points[..., 0]
            targets[name] = points
    if "pose" in targets:
        targets["pose"] = flip_pose(targets["pose"], perms.smpl)


def _rotate_scale_targets(targets: dict[str, np.ndarray], rotation_deg: float, scale: float,
                          width: int, height: int) -> None:
    """In place on the dict."""
    affine = crop_affine(rotation_deg, scale, width, height)
    for name in POINTS_2D:
        if name in targets:
            points = targets[name].copy()
            xy = points[..., :2].astype(np.float64)
            points[..., :2] = xy @ affine[:, :2].T + affine[:, 2]
            targets[name] = points
    if rotation_deg != 0.0:
        rotation = camera_z_rotation(rotation_deg)
        for name in POINTS_3D:
            if name in targets:
                targets[name] = (targets[name].astype(np.float64) @ rotation.T).astype(
                    targets[name].dtype)
        if "pose" in targets:
            targets["pose"] = rotate_global_orient(targets["pose"], rotation)


def augment_targets(targets: Mapping[str, np.ndarray], params: AugmentParams,
                    perms: FlipPerms, width: int, height: int) -> dict[str, np.ndarray]:
    """The targets of a clip augmented as `augment_frames` augments its frames (crops W x H).

    targets: the shard contract arrays of the centre crop (joints3d (S, 24, 3), joints_h36m
    (S, 17, 3), joints2d / keypoints2d (S, P, 3) pixels + visibility, pose (S, 72), betas
    (S, 10), valid (S,), extras with a leading S axis); the mesh posed from the returned pose
    is the augmented mesh. Returns a new dict
    (the input arrays are not modified; unchanged ones may be shared or reversed views).
    """
    arrays = dict(targets)
    if params.flip:
        _flip_targets(arrays, perms, width)
    if params.rotation_deg != 0.0 or params.scale != 1.0:
        _rotate_scale_targets(arrays, params.rotation_deg, params.scale, width, height)
    if params.reverse:
        num_frames = len(arrays["valid"])
        arrays = {k: (v[::-1] if k not in PER_CLIP and v.ndim >= 1 and v.shape[0] == num_frames
                      else v) for k, v in arrays.items()}
    return arrays


def apply_augment(frames: torch.Tensor, targets: Mapping[str, torch.Tensor],
                  params: AugmentParams, perms: FlipPerms, margin: int = 0
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Augment one decoded clip and cut its crops (`augment_frames`, `augment_targets`).

    frames (S, 3, H + 2m, W + 2m) uint8 RGB: the stored crops with `margin` pixels of context on
    every side; targets: tensors of the H x W centre crop (see `augment_targets`).
    Returns new tensors, frames (S, 3, H, W) (inputs untouched).
    """
    if params.is_identity and margin == 0:
        return frames, dict(targets)
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8, got {frames.dtype}")
    num_frames, _, stored_height, stored_width = frames.shape
    height, width = stored_height - 2 * margin, stored_width - 2 * margin
    images = augment_frames(frames.permute(0, 2, 3, 1).numpy(), params, margin,
                            np.empty((num_frames, height, width, 3), np.uint8))
    arrays = augment_targets({k: v.numpy() for k, v in targets.items()}, params, perms, width,
                             height)
    out_frames = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    out_targets = {k: torch.from_numpy(np.array(v)).to(targets[k].dtype)
                   for k, v in arrays.items()}
    return out_frames, out_targets


class ClipAugmenter:
    """Per-clip transform for the loader: draws from (seed, epoch, key), applies and cuts the
    crop out of the stored context (clips decoded with `decode_clip(..., context=True)`).

    Picklable (plain attributes), so loader workers can receive it.
    """

    def __init__(self, cfg: AugmentConfig, perms: FlipPerms, seed: int, epoch: int):
        perms.check(cfg.may_flip)
        self.cfg, self.perms, self.seed, self.epoch = cfg, perms, seed, epoch

    def params_for(self, key: str) -> AugmentParams:
        if not self.cfg.enabled:  # what draw_params returns then, without seeding a generator
            return AugmentParams()
        return draw_params(self.cfg, clip_rng(self.seed, self.epoch, key))

    def __call__(self, clip: dict[str, Any]) -> dict[str, Any]:
        params = self.params_for(clip["key"])
        frames, targets = apply_augment(clip["frames"], clip["targets"], params, self.perms,
                                        context_margin(clip["meta"]))
        return {**clip, "frames": frames, "targets": targets}
