"""Mesh overlays for a few clips: each model's mesh drawn on the input crops through its own
weak-perspective camera, next to the ground-truth mesh.

Weak perspective (the model's camera head): x_2d = s * (X_xy + [tx, ty]) in crop coordinates
normalised to [-1, 1] (pixel centres; the crop spans [-0.5, W - 0.5], as in training), so pixel
u = x_2d * W/2 + (W-1)/2. The project's renderer is a pinhole one; a weak-perspective camera
is the limit of a pinhole camera far away with a long lens: put the mesh at depth D and use the
focal length f = s * W/2 * D. With D = 1000 m a body 0.5 m deep is off by 0.05 % (sub-pixel).

Ground truth is drawn exactly where the shards carry the camera extras (root_cam, affine,
intrinsics: the crop's pinhole camera is the affine times the intrinsics), else through a
weak-perspective camera fitted to the ground-truth 2D joints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from stdformer.data.render import overlay_mesh

FAR_DEPTH = 1000.0                       # metres: weak perspective as a far pinhole camera
PRED_COLOR = (235, 170, 90)              # BGR: light blue
GT_COLOR = (120, 205, 120)               # BGR: green
INVALID_COLOR = (40, 40, 220)            # BGR: red frame around invalid frames
LEGEND_HEIGHT = 22                       # pixels of one line of the colour legend
OPTIONAL_TARGETS = ("root_cam", "affine", "intrinsics")


# --------------------------------------------------------------------------------------------
# Cameras


def normalized_to_pixels(points: np.ndarray, size: int) -> np.ndarray:
    """(..., 2) in [-1, 1] crop coordinates -> pixels of a size x size image."""
    return np.asarray(points, np.float64) * (size / 2.0) + (size - 1) / 2.0


def pixels_to_normalized(points: np.ndarray, size: int) -> np.ndarray:
    return (np.asarray(points, np.float64) - (size - 1) / 2.0) / (size / 2.0)


def weak_perspective_view(cam: np.ndarray, size: int, depth: float = FAR_DEPTH
                          ) -> tuple[np.ndarray, np.ndarray] | None:
    """cam (3,) = (s, tx, ty) -> (translation (3,), K (3,3)) such that projecting
    `vertices + translation` with K (render.project_points) gives, to within depth/Z error,
    the weak-perspective pixels of a size x size image. None when s <= 0 (no usable camera)."""
    s, tx, ty = (float(c) for c in cam)
    if not np.isfinite([s, tx, ty]).all() or s <= 1e-6:
        return None
    f = s * size / 2.0 * depth
    c = (size - 1) / 2.0
    K = np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])
    return np.array([tx, ty, depth]), K


def project_weak_perspective(points: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """points (..., 3), cam (3,) -> normalised 2D (..., 2) = s * (X_xy + [tx, ty])."""
    points = np.asarray(points, np.float64)
    return float(cam[0]) * (points[..., :2] + np.asarray(cam[1:3], np.float64))


def fit_weak_perspective(points3d: np.ndarray, points2d: np.ndarray, weights: np.ndarray
                         ) -> np.ndarray | None:
    """Least-squares (s, tx, ty) with s * (X_xy + t) ~ x for the weighted points.

    points3d (P, 3), points2d (P, 2) normalised crop coordinates, weights (P,) (visibility).
    Linear in (s, b = s * t). None with fewer than 2 weighted points or s <= 0.
    """
    w = np.asarray(weights, np.float64).reshape(-1)
    keep = w > 0
    if keep.sum() < 2:
        return None
    X, x, w = np.asarray(points3d, np.float64)[keep], np.asarray(points2d, np.float64)[keep], \
        np.sqrt(w[keep])
    n = len(X)
    A = np.zeros((2 * n, 3))
    A[0::2, 0], A[0::2, 1] = X[:, 0], 1.0
    A[1::2, 0], A[1::2, 2] = X[:, 1], 1.0
    rhs = x.reshape(-1)
    ww = np.repeat(w, 2)
    (s, bx, by), *_ = np.linalg.lstsq(A * ww[:, None], rhs * ww, rcond=None)
    if s <= 1e-6:
        return None
    return np.array([s, bx / s, by / s])


def crop_to_panel(K_crop: np.ndarray, crop_size: int, panel: int) -> np.ndarray:
    """Intrinsics of a crop -> intrinsics of the crop resized to panel x panel pixels."""
    r = panel / crop_size
    M = np.array([[r, 0.0, (r - 1) / 2.0], [0.0, r, (r - 1) / 2.0], [0.0, 0.0, 1.0]])
    return M @ np.asarray(K_crop, np.float64)


def gt_view(targets: Mapping[str, np.ndarray], t: int, crop_size: int, panel: int
            ) -> tuple[np.ndarray, np.ndarray] | None:
    """(vertices in the rendering camera (V, 3), K (3, 3)) of the ground truth of frame t."""
    vertices = np.asarray(targets["vertices"][t], np.float64)
    if all(k in targets for k in OPTIONAL_TARGETS):
        affine = np.vstack([np.asarray(targets["affine"][t], np.float64), [0.0, 0.0, 1.0]])
        K = crop_to_panel(affine @ np.asarray(targets["intrinsics"], np.float64), crop_size,
                          panel)
        return vertices + np.asarray(targets["root_cam"][t], np.float64), K
    joints2d = np.asarray(targets["joints2d"][t], np.float64)
    cam = fit_weak_perspective(targets["joints_h36m"][t],
                               pixels_to_normalized(joints2d[:, :2], crop_size), joints2d[:, 2])
    view = None if cam is None else weak_perspective_view(cam, panel)
    return None if view is None else (vertices + view[0], view[1])


# --------------------------------------------------------------------------------------------
# Collecting clips during prediction


def select_overlay_keys(manifest: Mapping[str, list], split: str, count: int) -> list[str]:
    """`count` clip keys of `split`, evenly spread over the sorted keys of clips with a valid
    frame (deterministic)."""
    keys = sorted(k for k, s, v in zip(manifest["key"], manifest["split"], manifest["num_valid"],
                                       strict=True) if s == split and v > 0)
    if count <= 0 or not keys:
        return []
    picks = np.unique(np.linspace(0, len(keys) - 1, min(count, len(keys))).round().astype(int))
    return [keys[i] for i in picks]


@dataclass
class OverlayClip:
    key: str
    frames: np.ndarray                                  # (S, 3, H, W) uint8 RGB crops
    targets: dict[str, np.ndarray]                      # one clip's target arrays
    vertices: dict[str, np.ndarray] = field(default_factory=dict)   # model -> (S, V, 3)
    cam: dict[str, np.ndarray] = field(default_factory=dict)        # model -> (S, 3)
    frame_ids: list[int] | None = None                  # image frame numbers of the S frames


class OverlayCollector:
    """Observer for `predict_tracks`: keeps the raw window predictions of the chosen clips for
    the models that have a camera."""

    def __init__(self, keys: Sequence[str]):
        self.keys = set(keys)
        self.clips: dict[str, OverlayClip] = {}

    def __call__(self, batch: Mapping[str, Any], outputs: Mapping[str, Mapping[str, np.ndarray]]
                 ) -> None:
        for i, key in enumerate(batch["key"]):
            if key not in self.keys:
                continue
            names = ("vertices", "joints_h36m", "joints2d", "valid", *OPTIONAL_TARGETS)
            targets = {n: batch["targets"][n][i].numpy() for n in names if n in batch["targets"]}
            frame_ids = batch["meta"][i].get("frame_ids") if "meta" in batch else None
            clip = OverlayClip(key, batch["frames"][i].numpy(), targets,
                               frame_ids=None if frame_ids is None else list(frame_ids))
            for name, out in outputs.items():
                if "cam" in out:
                    clip.vertices[name] = np.asarray(out["vertices"][i])
                    clip.cam[name] = np.asarray(out["cam"][i])
            self.clips[key] = clip

    def ordered(self) -> list[OverlayClip]:
        return [self.clips[k] for k in sorted(self.clips)]


# --------------------------------------------------------------------------------------------
# Drawing


def _label(image: np.ndarray, text: str, bottom: bool = False) -> None:
    scale = max(image.shape[0] / 400.0, 0.3)
    org = (4, image.shape[0] - 6 if bottom else int(14 * scale / 0.4))
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)


def _legend_band(width: int, line_height: int = LEGEND_HEIGHT) -> np.ndarray:
    """A strip saying what the colours mean: swatch + text for predicted, ground truth and
    the invalid-frame border; items wrap onto more lines when the grid is narrow."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    items = ((PRED_COLOR, "predicted mesh (its camera)", True), (GT_COLOR, "ground truth", True),
             (INVALID_COLOR, "invalid frame", False))
    placed, x, line = [], 6, 0
    for color, text, filled in items:
        item_width = 16 + cv2.getTextSize(text, font, scale, 1)[0][0] + 14
        if x > 6 and x + item_width > width:
            x, line = 6, line + 1
        placed.append((x, line, color, text, filled))
        x += item_width
    band = np.full(((line + 1) * line_height, width, 3), 40, np.uint8)
    for x, line, color, text, filled in placed:
        top = line * line_height
        cv2.rectangle(band, (x, top + 5), (x + 12, top + line_height - 6), color,
                      -1 if filled else 2)
        cv2.putText(band, text, (x + 16, top + line_height - 7), font, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return band


def render_overlay(clip: OverlayClip, faces: np.ndarray, panel: int = 160,
                   max_frames: int = 4) -> np.ndarray:
    """A grid image (BGR uint8) under a colour legend: one column per shown frame (its image
    frame number on the input crop); rows = input crop, each model's mesh on the crop through
    its predicted camera, ground-truth mesh. Invalid frames get a red border."""
    s = clip.frames.shape[0]
    crop_size = clip.frames.shape[-1]
    shown = np.unique(np.linspace(0, s - 1, min(max_frames, s)).round().astype(int))
    faces = np.asarray(faces, np.int64)
    rows = []
    row_names = ["input", *clip.vertices, "ground truth"]
    for row, name in enumerate(row_names):
        panels = []
        for t in shown:
            rgb = np.ascontiguousarray(clip.frames[t].transpose(1, 2, 0))
            image = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (panel, panel),
                               interpolation=cv2.INTER_LINEAR)
            if name == "ground truth":
                view = gt_view(clip.targets, int(t), crop_size, panel)
                color = GT_COLOR
            elif name != "input":
                cam_view = weak_perspective_view(clip.cam[name][t], panel)
                view = None if cam_view is None else (
                    np.asarray(clip.vertices[name][t], np.float64) + cam_view[0], cam_view[1])
                color = PRED_COLOR
            if name != "input":
                if view is None:
                    _label(image, "no camera", bottom=True)
                else:
                    image = overlay_mesh(image, view[0], faces, view[1], color=color, alpha=0.7)
            if not bool(clip.targets["valid"][t]):
                cv2.rectangle(image, (0, 0), (panel - 1, panel - 1), INVALID_COLOR, 2)
            if t == shown[0]:
                _label(image, name)
            if name == "input":
                number = clip.frame_ids[t] if clip.frame_ids is not None else int(t)
                _label(image, f"frame {number}", bottom=True)
            panels.append(image)
        rows.append(np.concatenate(panels, axis=1))
    grid = np.concatenate(rows, axis=0)
    return np.concatenate([_legend_band(grid.shape[1]), grid], axis=0)


def png_bytes(image_bgr: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image_bgr)
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()
