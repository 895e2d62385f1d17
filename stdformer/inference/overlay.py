"""Overlay frames: every person's mesh, placed by its camera-space translation, drawn on the
original frame through the full-frame camera with the project's renderer (depth-ordered across
people), plus the tracked box and id in the person's colour; and a contact sheet of a few
overlay frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from stdformer.data.render import Mesh, render_meshes

# BGR, distinct hues (tab10-like); track i gets PALETTE[i % len(PALETTE)].
PALETTE = ((180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
           (75, 86, 140), (194, 119, 227), (34, 189, 188), (207, 190, 23), (127, 127, 127))


def track_color(track_id: int) -> tuple[int, int, int]:
    """BGR colour of a track (0..255)."""
    return PALETTE[int(track_id) % len(PALETTE)]


@dataclass
class PersonView:
    """One person in one frame: vertices in the camera frame (V, 3) and the smoothed square box
    (center (2,), side; image pixels) the crop was cut around."""

    track_id: int
    vertices_cam: np.ndarray
    box_center: np.ndarray
    box_side: float


def _label(image: np.ndarray, text: str, org: tuple[int, int], color) -> None:
    scale = max(image.shape[0] / 480.0, 0.35)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def draw_people(image: np.ndarray, people: Sequence[PersonView], faces: np.ndarray,
                K: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """A copy of `image` (H, W, 3) BGR with every person's mesh (depth-ordered together), the
    square box the crop was cut from and "#id" in the person's colour."""
    faces = np.asarray(faces, np.int64)
    meshes = [Mesh(p.vertices_cam, faces, np.broadcast_to(
        np.asarray(track_color(p.track_id), np.float64), (len(faces), 3))) for p in people
        if np.isfinite(p.vertices_cam).all()]
    out = render_meshes(image, meshes, K, alpha=alpha) if meshes else image.copy()
    for p in people:
        color = track_color(p.track_id)
        half = p.box_side / 2
        x0, y0 = (np.asarray(p.box_center) - half).round().astype(int)
        x1, y1 = (np.asarray(p.box_center) + half).round().astype(int)
        cv2.rectangle(out, (int(x0), int(y0)), (int(x1), int(y1)), color, 1, cv2.LINE_AA)
        _label(out, f"#{p.track_id}", (int(x0) + 2, max(int(y0) - 4, 12)), color)
    return out


def contact_sheet(images: Sequence[np.ndarray], labels: Sequence[str], columns: int = 4,
                  width: int = 320) -> np.ndarray:
    """Images (each resized to `width` px wide, aspect kept) in a grid, labelled; BGR uint8."""
    if not images:
        raise ValueError("contact sheet needs at least one image")
    h, w = images[0].shape[:2]
    height = max(int(round(h * width / w)), 1)
    tiles = []
    for image, label in zip(images, labels, strict=True):
        tile = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        _label(tile, label, (4, 16), (255, 255, 255))
        tiles.append(tile)
    columns = min(columns, len(tiles))
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)


def sheet_frames(num_frames: int, people_frames: np.ndarray, count: int) -> list[int]:
    """`count` frame indices evenly spread over the frames that show someone (or over all
    frames when nobody was found)."""
    pool = np.unique(people_frames) if len(people_frames) else np.arange(num_frames)
    picks = np.unique(np.linspace(0, len(pool) - 1, min(count, len(pool))).round().astype(int))
    return [int(pool[i]) for i in picks]
