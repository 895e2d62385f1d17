"""Appearance of a synthetic scene: clothing colours per body part, placeholder texture
maps, procedural backdrops (textured ground plane, surroundings) and their rendering."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stdformer.body.constants import SMPL_JOINT_NAMES
from stdformer.data.synthetic_assets import SynthBodyAssets

# Part groups by SMPL joint name (part label = joint with the largest skinning weight).
_PART_GROUP = {
    "skin": ("Neck", "Head", "L_Wrist", "R_Wrist", "L_Hand", "R_Hand"),
    "shirt": ("Spine1", "Spine2", "Spine3", "L_Collar", "R_Collar", "L_Shoulder", "R_Shoulder"),
    "sleeve": ("L_Elbow", "R_Elbow"),
    "pants": ("Pelvis", "L_Hip", "R_Hip"),
    "shin": ("L_Knee", "R_Knee"),
    "shoes": ("L_Ankle", "R_Ankle", "L_Foot", "R_Foot"),
}
_SKIN_TONES = np.array([[60, 90, 140], [90, 130, 190], [120, 160, 215], [45, 65, 95],
                        [100, 150, 220]], np.float64)  # BGR


def hsv_color(rng, sat=(0.35, 0.95), val=(0.3, 0.95)) -> np.ndarray:
    hsv = np.uint8([[[rng.integers(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)


def person_palette(rng: np.random.Generator) -> np.ndarray:
    """(24,3) BGR colour per SMPL part: coherent clothing, each part slightly distinct."""
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.9, 1.1)
    shirt, pants, shoes = hsv_color(rng), hsv_color(rng, val=(0.2, 0.7)), hsv_color(
        rng, sat=(0.0, 0.5), val=(0.1, 0.6))
    group_color = {"skin": skin, "shirt": shirt, "sleeve": shirt if rng.random() < 0.6 else skin,
                   "pants": pants, "shin": pants if rng.random() < 0.75 else skin,
                   "shoes": shoes}
    palette = np.zeros((24, 3))
    for group, names in _PART_GROUP.items():
        for name in names:
            palette[SMPL_JOINT_NAMES.index(name)] = group_color[group]
    # Each part a little lighter/darker so part boundaries stay visible.
    palette *= rng.uniform(0.82, 1.18, size=(24, 1))
    return np.clip(palette, 0, 255)


_HAIR_TONES = np.array([[20, 25, 30], [25, 45, 70], [40, 70, 110], [90, 140, 180],
                        [60, 60, 60]], np.float64)  # BGR
_FRONT_PRINT_PARTS = ("Spine1", "Spine2", "Spine3")
# Side cues: the body's left limbs in a warm colour, its right limbs in a cool one (BGR), so
# left and right, and with them the facing direction, can be told apart in a 64 px crop. Real
# people carry such cues in faces and asymmetric clothing; our plain bodies need them spelled out.
_SIDE_LIMBS = ("Shoulder", "Elbow", "Hip", "Knee")
_SIDE_COLORS = {"L_": np.array([40.0, 110.0, 240.0]), "R_": np.array([230.0, 150.0, 40.0])}


def face_colors_for(assets: SynthBodyAssets, palette: np.ndarray, rng: np.random.Generator,
                    side_cues: bool = False) -> np.ndarray:
    """(F,3) per-face colours: part colour with a little per-face texture noise, plus the cues
    that tell a person's front from their back, as faces, hair and shirt prints do: hair on the
    back and top of the head, a contrasting print on the front of the shirt; with `side_cues`,
    warm left and cool right limbs (upper arms, forearms, thighs, shins)."""
    colors = palette[assets.face_part].copy()
    if side_cues:
        for side, color in _SIDE_COLORS.items():
            limb = np.isin(assets.face_part, [SMPL_JOINT_NAMES.index(side + p)
                                              for p in _SIDE_LIMBS])
            colors[limb] = color * rng.uniform(0.8, 1.1)
    tri = assets.rest_vertices[assets.faces]                                   # (F,3,3)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12          # rest pose: +z front
    head = assets.face_part == SMPL_JOINT_NAMES.index("Head")
    hair = head & ((normals[:, 2] < -0.1) | (normals[:, 1] > 0.75))
    colors[hair] = _HAIR_TONES[rng.integers(len(_HAIR_TONES))] * rng.uniform(0.8, 1.2)
    torso = np.isin(assets.face_part, [SMPL_JOINT_NAMES.index(n) for n in _FRONT_PRINT_PARTS])
    front = torso & (normals[:, 2] > 0.5)
    colors[front] = 255.0 - colors[front] * rng.uniform(0.6, 0.9)              # contrasting print
    return np.clip(colors * rng.uniform(0.92, 1.08, size=(len(colors), 1)), 0, 255)


def texture_map(palette: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Placeholder texture atlas (size,size,3) uint8: one noisy block per body part."""
    cells = int(np.ceil(np.sqrt(24)))
    cell = max(1, size // cells)
    tex = np.zeros((size, size, 3), np.float64)
    for part in range(24):
        r, c = divmod(part, cells)
        tex[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = palette[part]
    tex += rng.normal(0, 6, tex.shape)
    return np.clip(np.round(tex), 0, 255).astype(np.uint8)


def _smooth_tile(rng, size, sigma, channels=1):
    tile = rng.standard_normal((size, size, channels)).astype(np.float32)
    # Wrap-around blur keeps the tile seamless when repeated with BORDER_WRAP.
    tile = cv2.GaussianBlur(np.tile(tile, (3, 3, 1)), (0, 0), sigma)[size:2 * size, size:2 * size]
    tile = tile.reshape(size, size, channels)
    return tile / max(float(tile.std()), 1e-6)


@dataclass
class Backdrop:
    """Procedural surroundings. ground (S,S,3) float32 tile repeated every `ground_scale` metres
    on the plane y = 0; surround (S2,S2,3) float32 indexed by ray azimuth/elevation; fog colour."""

    ground: np.ndarray
    ground_scale: float
    surround: np.ndarray
    surround_repeats: int
    fog: np.ndarray


def make_backdrop(rng: np.random.Generator, size: int = 128) -> Backdrop:
    base = hsv_color(rng, sat=(0.05, 0.5), val=(0.3, 0.75))
    second = base * rng.uniform(0.55, 0.85) + rng.uniform(-20, 20, 3)
    u = (np.arange(size) + 0.5) / size
    kind = rng.integers(4)
    if kind == 0:  # checker / paving
        pattern = ((u[:, None] < 0.5) ^ (u[None, :] < 0.5)).astype(np.float32)[..., None]
    elif kind == 1:  # planks / stripes
        pattern = (np.sin(2 * np.pi * 2 * u)[None, :, None] > 0).repeat(size, 0).astype(np.float32)
    elif kind == 2:  # grass / gravel noise
        pattern = 0.5 + 0.25 * _smooth_tile(rng, size, 2.0)
    else:  # tiles with grout lines
        grid = (np.abs((u * 4) % 1 - 0.5) > 0.45)
        pattern = 1.0 - (grid[:, None] | grid[None, :]).astype(np.float32)[..., None]
    pattern = np.clip(pattern + 0.12 * _smooth_tile(rng, size, 1.0), 0, 1.2)
    ground = (second + (base - second) * pattern).astype(np.float32)

    sky = hsv_color(rng, sat=(0.05, 0.6), val=(0.55, 1.0))
    wall = hsv_color(rng, sat=(0.05, 0.7), val=(0.2, 0.8))
    s2 = 256
    col = np.arange(s2)
    heights = 0.35 + 0.45 * np.abs(_smooth_tile(rng, s2, 6.0)[0, :, 0]).clip(0, 2) / 2
    kind2 = rng.integers(3)
    if kind2 == 0:  # buildings: vertical stripes of varying colour and height
        stripes = (np.sin(2 * np.pi * col / s2 * rng.integers(6, 20)) > 0).astype(np.float32)
        facade = wall * (0.75 + 0.3 * stripes)[:, None]
    elif kind2 == 1:  # trees / hedges: blotchy noise
        facade = wall * (0.8 + 0.2 * _smooth_tile(rng, s2, 3.0)[0])
    else:  # smooth gradient wall with a few bands
        facade = wall * (0.85 + 0.15 * np.cos(2 * np.pi * col / s2 * 3))[:, None]
    rows = (np.arange(s2) + 0.5) / s2  # 0 = top (ray elevation >= 0.45), 1 = horizon
    surround = np.empty((s2, s2, 3), np.float32)
    is_facade = rows[:, None] > (1 - heights)[None, :]
    grad = (sky * (0.8 + 0.3 * rows)[:, None])[:, None, :]
    surround[:] = np.where(is_facade[..., None], facade[None], grad)
    surround += 6 * _smooth_tile(rng, s2, 1.0, 3)
    return Backdrop(ground, float(rng.uniform(0.6, 2.0)), surround, int(rng.integers(1, 4)),
                    (0.5 * base + 0.5 * sky).astype(np.float32))


def camera_rays(K: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H,W,3) float32 unit ray directions in the camera frame through every pixel centre."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    pix = np.stack([u, v, np.ones_like(u)], -1)
    rays = pix @ np.linalg.inv(K).T.astype(np.float32)
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


def render_background(backdrop: Backdrop, cam_pose: np.ndarray, K: np.ndarray, height: int,
                      width: int, rays_cam: np.ndarray | None = None) -> np.ndarray:
    """(H,W,3) uint8 view of the backdrop from camera cam_pose (4,4 world->camera).
    rays_cam: optional precomputed `camera_rays(K, height, width)`."""
    R, t = cam_pose[:3, :3], cam_pose[:3, 3]
    centre = (-R.T @ t).astype(np.float32)
    if rays_cam is None:
        rays_cam = camera_rays(K, height, width)
    rays = rays_cam @ R.astype(np.float32)  # world directions (row-vector form of R^T d)
    rx, ry, rz = rays[..., 0], rays[..., 1], rays[..., 2]

    # Surroundings at infinity: azimuth -> columns, elevation -> rows (horizon at the bottom).
    size = backdrop.surround.shape[0]
    azimuth = np.arctan2(rx, rz)
    map_x = ((azimuth * np.float32(1 / (2 * np.pi)) + 0.5) * backdrop.surround_repeats % 1.0)
    map_x *= size
    map_y = (1.0 - np.clip(ry, 0, 0.45) / np.float32(0.45)) * (size - 1)
    image = cv2.remap(backdrop.surround, map_x, map_y, cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_WRAP)

    # Ground plane y = 0 (perspective-correct: texture looked up at the ray's hit point).
    down = ry < -1e-4
    dist = np.where(down, -centre[1] / np.where(down, ry, -1.0), 0.0).astype(np.float32)
    gsize = backdrop.ground.shape[0]
    scale = np.float32(gsize / backdrop.ground_scale)
    gx = ((centre[0] + rx * dist) * scale) % gsize
    gz = ((centre[2] + rz * dist) * scale) % gsize
    ground = cv2.remap(backdrop.ground, gx, gz, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    fog = (1.0 - np.exp(-dist / np.float32(25.0)))[..., None]
    ground = ground + (backdrop.fog - ground) * fog
    image = np.where(down[..., None], ground, image)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)
