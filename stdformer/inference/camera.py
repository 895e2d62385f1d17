"""From the model's weak-perspective crop camera to a translation in the full frame's camera.

The camera head predicts (s, tx, ty) with x = s * (X_xy + (tx, ty)) in crop coordinates
normalised to [-1, 1], for mesh points X centred on the mesh's pelvis, H36M joint 0 regressed
from it (the centring of the 2D loss, `stdformer.losses`, as in FastMETRO). One normalised unit is b / 2 image pixels, b the crop's side in image
pixels, and normalised 0 is the crop centre c_box (crops.crop_affine maps the box centre to the
crop centre). So in image pixels

    u = c_box + (b / 2) * s * (X_xy + t_xy).

A pinhole camera with focal f and principal point p sees a body at depth T_z (small against T_z)
as u = p + f / T_z * (X_xy + T_xy). Equal for every X:

    T_z = 2 f / (s b),    T_xy = t_xy + (c_box - p) * T_z / f,

the full-frame camera of CLIFF / PARE. Without known intrinsics the full-frame camera is assumed:
f = the image diagonal in pixels, p = the image centre.
"""

from __future__ import annotations

import numpy as np
import torch

from stdformer.data import crops
from stdformer.losses import regress_joints


def full_frame_intrinsics(width: int, height: int, focal: float | None = None) -> np.ndarray:
    """(3, 3) K: focal (default: the diagonal, sqrt(W^2 + H^2)), principal point at the image
    centre ((W - 1) / 2, (H - 1) / 2 in the pixel-centre convention of the crops)."""
    f = float(focal) if focal is not None else float(np.hypot(width, height))
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0],
                     [0.0, 0.0, 1.0]])


def crop_in_image(affines: np.ndarray, crop_size: int) -> tuple[np.ndarray, np.ndarray]:
    """affines (T, 2, 3) image -> crop pixels (no rotation) -> crop centres (T, 2) and crop
    sides (T,) in image pixels."""
    affines = np.asarray(affines, np.float64)
    zoom = np.sqrt(np.abs(np.linalg.det(affines[:, :, :2])))                   # crop px / image px
    mid = np.full(2, (crop_size - 1) / 2.0)
    centers = np.linalg.solve(affines[:, :, :2], (mid - affines[:, :, 2])[..., None])[..., 0]
    return centers, crop_size / zoom


def anchor_translation(cam: np.ndarray, affines: np.ndarray, crop_size: int, K: np.ndarray
                       ) -> np.ndarray:
    """cam (T, 3) = (s, tx, ty), affines (T, 2, 3) of the crops it was predicted on, K (3, 3)
    -> (T, 3) camera-frame position of the point the camera is centred on (the mesh pelvis).
    Frames with s <= 0 (no usable camera) get NaN."""
    cam = np.asarray(cam, np.float64)
    s, t = cam[:, 0], cam[:, 1:3]
    centers, sides = crop_in_image(affines, crop_size)
    f = np.array([K[0, 0], K[1, 1]])
    p = np.array([K[0, 2], K[1, 2]])
    ok = s > 1e-6
    depth = np.where(ok, 2.0 * f.mean() / np.where(ok, s, 1.0) / sides, np.nan)   # (T,)
    xy = t + (centers - p) * depth[:, None] / f
    return np.concatenate([xy, depth[:, None]], axis=1)


def camera_anchor(vertices: np.ndarray, regressor: torch.Tensor) -> np.ndarray:
    """vertices (T, V, 3) -> (T, 3): the mesh pelvis the camera head is centred on (as the 2D
    loss centres mesh joints: `stdformer.losses.regress_joints`)."""
    _, pelvis = regress_joints(torch.as_tensor(np.asarray(vertices), dtype=torch.float64),
                               torch.as_tensor(regressor).double())
    return pelvis.numpy()


def mesh_translation(vertices: np.ndarray, cam: np.ndarray, affines: np.ndarray, crop_size: int,
                     K: np.ndarray, regressor: torch.Tensor) -> np.ndarray:
    """(T, 3) translation such that `vertices + translation[:, None]` is the mesh in the full
    frame's camera (metres; x right, y down, z forward). Frames without a usable camera (s <= 0)
    take the translation interpolated from the track's other frames; with none usable, the one
    of the camera (1, 0, 0) (anchor at the crop centre, 1 m = half the crop)."""
    anchor = anchor_translation(cam, affines, crop_size, K)
    ok = np.isfinite(anchor).all(axis=1)
    if not ok.any():
        anchor = anchor_translation(np.tile([1.0, 0.0, 0.0], (len(cam), 1)), affines, crop_size,
                                    K)
    elif not ok.all():
        anchor = crops.interpolate_missing(anchor, ok)
    return anchor - camera_anchor(vertices, regressor)
