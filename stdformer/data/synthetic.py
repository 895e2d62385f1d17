"""A synthetic stand-in for 3DPW, written in exactly the 3DPW layout.

    <out_root>/imageFiles/<seq>/image_%05d.jpg
    <out_root>/sequenceFiles/{train,validation,test}/<seq>.pkl   (protocol 2, plain numpy)

Every sequence is a small scene: one or two annotated people (procedural walking / waving /
squatting motion from `motion.py`, varied betas, feet on a ground plane y = 0), unannotated
distractor people crossing the line of sight, box/pole occluders, a moving (orbiting, panning,
slightly shaky) camera with realistic intrinsics and a procedural background (textured ground
plane in perspective, striped / noisy / gradient surroundings). Frames are rendered with
`render.py` (per-body-part colours, Lambert shading) and JPEG-compressed.

Annotations follow 3DPW: world SMPL `poses`/`trans` (30 Hz) and `poses_60Hz`/`trans_60Hz`,
`jointPositions` (world joints), `poses2d` (COCO-18 from the projected body joints and head
vertices, like OpenPose: confident where visible, low confidence where another object covers
the point, (0,0,0) when out of frame or the face point looks away), world->camera `cam_poses`.
A run of frames per sequence has `campose_valid == False`: there the image was rendered with a
perturbed camera, so the stored camera pose is wrong, as in the real data set.

Determinism: every sequence draws from `np.random.default_rng([seed, split, index])` and every
frame from `[seed, split, index, 1000 + frame]`, so the same config gives identical pickles and
identical JPEG bytes, whatever order sequences are produced in.
"""

from __future__ import annotations

import logging
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from stdformer.body.constants import COCO18_NAMES, SMPL_JOINT_NAMES
from stdformer.data import motion as motion_lib
from stdformer.data.render import Mesh, box_mesh, project_points, rasterize, shade_faces
from stdformer.data.threedpw import IMAGE_DIR, IMAGE_PATTERN, SEQUENCE_DIR, SPLITS
from stdformer.io import atomic_output

log = logging.getLogger(__name__)

FPS = 30  # image and annotation rate; motion is generated at 2 x FPS for the *_60Hz keys
MAX_OCCLUDED_FRACTION = 0.4  # occluders / distractors cross the target, they do not park on it
PICKLE_PROTOCOL = 2  # what Python-2-era 3DPW readers expect


@dataclass
class SynthesizeConfig:
    """params.yaml section `synthesize`."""

    seed: int = 0
    train_sequences: int = 6
    validation_sequences: int = 2
    test_sequences: int = 3
    min_frames: int = 48
    max_frames: int = 64
    width: int = 320
    height: int = 240
    two_actor_fraction: float = 0.35  # of the sequences of each split (rounded, >= 1 if > 0)
    distractors: int = 1  # unannotated people per sequence
    occluders: int = 1  # boxes / poles per sequence
    invalid_campose_fraction: float = 0.06  # frames per sequence with campose_valid False
    jpeg_quality: int = 90
    texture_size: int = 64  # side of the placeholder texture_maps
    side_cues: bool = True  # left limbs warm, right limbs cool: which way a person faces shows

    def validate(self) -> None:
        for name in ("train_sequences", "validation_sequences", "test_sequences",
                     "distractors", "occluders"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if sum(self.sequences_per_split.values()) == 0:
            raise ValueError("at least one sequence is needed")
        if not 3 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 3 <= min_frames <= max_frames, got {self.min_frames}, "
                             f"{self.max_frames}")
        if self.max_frames > 99999:
            raise ValueError("max_frames must be < 100000 (image_%05d.jpg names)")
        if not (32 <= self.width <= 4096 and 32 <= self.height <= 4096):
            raise ValueError(f"width/height must be in 32..4096, got {self.width}x{self.height}")
        for name in ("two_actor_fraction", "invalid_campose_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.invalid_campose_fraction > 0.5:
            raise ValueError("invalid_campose_fraction above 0.5 leaves too few usable frames")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if not 4 <= self.texture_size <= 1024:
            raise ValueError(f"texture_size must be in 4..1024, got {self.texture_size}")

    @property
    def sequences_per_split(self) -> dict[str, int]:
        return {"train": self.train_sequences, "validation": self.validation_sequences,
                "test": self.test_sequences}


# ----------------------------------------------------------------------------------------------
# Body assets: what the synthesizer needs from the body model, in numpy

# COCO-18 points taken from SMPL joints (OpenPose's neck ~ SMPL neck, hips ~ SMPL hips).
_COCO_FROM_SMPL_NAME = {
    "neck": "Neck", "r_shoulder": "R_Shoulder", "r_elbow": "R_Elbow", "r_wrist": "R_Wrist",
    "l_shoulder": "L_Shoulder", "l_elbow": "L_Elbow", "l_wrist": "L_Wrist", "r_hip": "R_Hip",
    "r_knee": "R_Knee", "r_ankle": "R_Ankle", "l_hip": "L_Hip", "l_knee": "L_Knee",
    "l_ankle": "L_Ankle",
}
COCO_FACE_POINTS = ("nose", "r_eye", "l_eye", "r_ear", "l_ear")  # from head surface vertices
HEAD_PART = SMPL_JOINT_NAMES.index("Head")


class BodyAssets:
    """Numpy views of a BodyModel plus derived lookups (face keypoint vertices, part groups)."""

    def __init__(self, body):
        self.body = body
        self.faces = np.asarray(body.faces.cpu().numpy(), np.int64)  # (F,3)
        self.part_labels = np.asarray(_to_numpy(body.part_labels), np.int64)  # (V,)
        self.face_part = self.part_labels[self.faces[:, 0]]  # (F,)
        zero = np.zeros((1, 72))
        rest_v, rest_j = self.evaluate(zero, np.zeros(10))
        self.rest_vertices, self.rest_joints = rest_v[0], rest_j[0]
        self.face_vertex_ids = head_keypoint_vertices(self.rest_vertices, self.part_labels,
                                                      self.rest_joints)
        # Faces around each face-keypoint vertex, for its normal (facing the camera or not).
        self.face_vertex_faces = [np.flatnonzero((self.faces == v).any(1))
                                  for v in self.face_vertex_ids]
        self.vertex_normals_rest = vertex_normals(self.rest_vertices, self.faces)

    def evaluate(self, poses: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """poses (T,72), betas (10,) -> vertices (T,V,3), joints (T,24,3), no translation."""
        poses = torch.as_tensor(np.asarray(poses), dtype=torch.float32)
        betas_t = torch.as_tensor(np.asarray(betas), dtype=torch.float32).expand(len(poses), 10)
        with torch.no_grad():
            out = self.body(poses, betas_t.contiguous(), None)
        # Rounded to a micrometre: float32 BLAS results may differ in the last bits between
        # thread counts / CPUs; rounding keeps the rendered bytes from depending on that.
        return (np.round(out.vertices.double().cpu().numpy(), 6),
                np.round(out.joints.double().cpu().numpy(), 6))


def _to_numpy(x):
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V,3)."""
    tri = vertices[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def head_keypoint_vertices(rest_vertices: np.ndarray, part_labels: np.ndarray,
                           rest_joints: np.ndarray) -> np.ndarray:
    """Vertex ids for nose, r_eye, l_eye, r_ear, l_ear, found geometrically on the rest mesh.

    Works for any SMPL-topology-like body (the official mesh or a procedural one): take the
    head part's bounding box and pick the head vertex nearest to a target point in front
    (nose, eyes; the body faces +z, its left is +x) or to the side (ears).
    """
    head = np.flatnonzero(part_labels == HEAD_PART)
    if len(head) < 5:  # no head label: everything above the neck joint
        head = np.flatnonzero(rest_vertices[:, 1] > rest_joints[SMPL_JOINT_NAMES.index("Neck"), 1])
    pts = rest_vertices[head]
    lo, hi = pts.min(0), pts.max(0)
    c, e = (lo + hi) / 2, (hi - lo) / 2
    targets = np.array([
        [c[0], c[1] - 0.2 * e[1], c[2] + e[2]],  # nose
        [c[0] - 0.4 * e[0], c[1] + 0.1 * e[1], c[2] + e[2]],  # right eye (-x)
        [c[0] + 0.4 * e[0], c[1] + 0.1 * e[1], c[2] + e[2]],  # left eye (+x)
        [c[0] - e[0], c[1] - 0.05 * e[1], c[2]],  # right ear
        [c[0] + e[0], c[1] - 0.05 * e[1], c[2]],  # left ear
    ])
    nearest = np.argmin(((pts[None] - targets[:, None]) ** 2).sum(-1), axis=1)
    return head[nearest]


# ----------------------------------------------------------------------------------------------
# Appearance: clothing colours per body part, backgrounds

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


def _hsv_color(rng, sat=(0.35, 0.95), val=(0.3, 0.95)) -> np.ndarray:
    hsv = np.uint8([[[rng.integers(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)


def person_palette(rng: np.random.Generator) -> np.ndarray:
    """(24,3) BGR colour per SMPL part: coherent clothing, each part slightly distinct."""
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.9, 1.1)
    shirt, pants, shoes = _hsv_color(rng), _hsv_color(rng, val=(0.2, 0.7)), _hsv_color(
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


def face_colors_for(assets: BodyAssets, palette: np.ndarray, rng: np.random.Generator,
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
    base = _hsv_color(rng, sat=(0.05, 0.5), val=(0.3, 0.75))
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

    sky = _hsv_color(rng, sat=(0.05, 0.6), val=(0.55, 1.0))
    wall = _hsv_color(rng, sat=(0.05, 0.7), val=(0.2, 0.8))
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


# ----------------------------------------------------------------------------------------------
# Camera


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """World->camera (4,4) for an OpenCV camera (x right, y down, z forward) at `eye` looking at
    `target` in a y-up world."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    R = Rotation.from_rotvec([0, 0, roll]).as_matrix() @ R
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = R, -R @ eye
    return pose


def intrinsics(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Pinhole K (3,3) with focal ~ image width (like a phone camera) and a near-centre point."""
    f = max(width, height) * rng.uniform(0.95, 1.25)
    cx = width / 2 + rng.uniform(-0.02, 0.02) * width
    cy = height / 2 + rng.uniform(-0.02, 0.02) * height
    return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])


# ----------------------------------------------------------------------------------------------
# Scene


@dataclass
class Person:
    """One rendered person. Arrays at 30 Hz unless named *_60: vertices (N,V,3) world,
    joints (N,24,3) world; poses (N,72); trans (N,3); face_colors (F,3) BGR."""

    betas: np.ndarray
    gender: str
    style: str
    poses_60: np.ndarray
    trans_60: np.ndarray
    vertices: np.ndarray
    joints: np.ndarray
    face_colors: np.ndarray
    palette: np.ndarray
    root_xz_60: np.ndarray  # (2N,2) pelvis path on the ground
    heading_60: np.ndarray  # (2N,) facing direction (sin h, 0, cos h)

    @property
    def poses(self):
        return self.poses_60[::2]

    @property
    def trans(self):
        return self.trans_60[::2]


@dataclass
class Scene:
    """Everything needed to render one sequence. cam_poses (N,4,4) are the annotated
    (stored) extrinsics; render_cam_poses differ from them where campose_valid is False."""

    name: str
    split: str
    key: tuple
    num_frames: int
    K: np.ndarray
    cam_poses: np.ndarray
    render_cam_poses: np.ndarray
    campose_valid: np.ndarray
    actors: list[Person]
    distractors: list[Person]
    occluders: list[Mesh] = field(default_factory=list)  # world-frame boxes
    backdrop: Backdrop | None = None
    rays_cam: np.ndarray | None = None  # cache of camera_rays(K, H, W)


def make_person(assets: BodyAssets, rng: np.random.Generator, num_frames: int,
                motion_kwargs: dict | None = None,
                motion: motion_lib.Motion | None = None, side_cues: bool = False) -> Person:
    """Sample shape and appearance (and motion of 2*num_frames at 60 Hz unless given), and put
    the feet on the ground plane y = 0. side_cues: see `face_colors_for`."""
    betas = np.clip(rng.normal(0.0, 0.9, 10), -2.5, 2.5)
    gender = "m" if rng.random() < 0.5 else "f"
    if motion is None:
        motion = motion_lib.generate_motion(rng, 2 * num_frames, fps=2 * FPS,
                                            **(motion_kwargs or {}))
    # The body is evaluated at 30 Hz only (the images); the 60 Hz root height is interpolated.
    vertices, joints = assets.evaluate(motion.poses[::2], betas)  # (N,V,3), no translation
    # SMPL rotates about the rest pelvis J0(betas), so the posed root joint stays at J0.
    pelvis = joints[0, 0]
    lift = -vertices[..., 1].min(axis=1)  # root height putting the lowest vertex on y = 0
    t60 = np.arange(2 * num_frames) / 2.0
    lift_60 = gaussian_filter1d(np.interp(t60, np.arange(num_frames), lift), 2.0, mode="nearest")
    trans_60 = np.stack([motion.root_xz[:, 0] - pelvis[0], lift_60,
                         motion.root_xz[:, 1] - pelvis[2]], -1)
    palette = person_palette(rng)
    return Person(betas=betas, gender=gender, style=motion.style, poses_60=motion.poses,
                  trans_60=trans_60, vertices=vertices + trans_60[::2, None],
                  joints=joints + trans_60[::2, None],
                  face_colors=face_colors_for(assets, palette, rng, side_cues), palette=palette,
                  root_xz_60=motion.root_xz, heading_60=motion.heading)


def _camera_path(rng, actors: list[Person], num_frames: int, K: np.ndarray,
                 height: int) -> np.ndarray:
    """(N,4,4) world->camera: slow orbit around the actors, smooth pan, a little hand shake.
    Two people are seen roughly side by side (not one hiding the other all along)."""
    t = np.arange(num_frames) / FPS
    pelvis_xz = np.mean([a.joints[:, 0][:, [0, 2]] for a in actors], axis=0)  # (N,2)
    target_xz = gaussian_filter1d(pelvis_xz, 8.0, axis=0, mode="nearest")
    # Person height on screen (pixels): smaller when two people must fit side by side.
    people_height = rng.uniform(0.45, 0.62) * height * (0.8 if len(actors) > 1 else 1.0)
    distance = K[0, 0] * 1.75 / people_height
    if len(actors) > 1:
        mid = num_frames // 2
        gap = actors[1].joints[mid, 0] - actors[0].joints[mid, 0]
        side = 1.0 if rng.random() < 0.5 else -1.0  # from the front or the back of the pair
        azimuth0 = np.arctan2(-side * gap[2], side * gap[0]) + rng.uniform(-0.5, 0.5)
        orbit = rng.uniform(-0.12, 0.12)
    else:
        azimuth0, orbit = rng.uniform(-np.pi, np.pi), rng.uniform(-0.3, 0.3)
    azimuth = azimuth0 + orbit * t
    azimuth += 0.04 * motion_lib.smooth_noise(rng, num_frames, FPS * 1.0)[:, 0]
    dist = distance * (1 + 0.06 * motion_lib.smooth_noise(rng, num_frames, FPS * 1.5)[:, 0])
    eye_height = rng.uniform(0.8, 2.0)
    shake = motion_lib.smooth_noise(rng, num_frames, 3.0, 4)
    poses = np.empty((num_frames, 4, 4))
    for i in range(num_frames):
        eye = np.array([target_xz[i, 0] + dist[i] * np.sin(azimuth[i]), eye_height,
                        target_xz[i, 1] + dist[i] * np.cos(azimuth[i])])
        target = np.array([target_xz[i, 0], 0.9, target_xz[i, 1]]) + 0.02 * shake[i, :3]
        poses[i] = look_at(eye, target, roll=0.012 * shake[i, 3])
    return poses


def _perturb(pose: np.ndarray, rotvec: np.ndarray, shift: np.ndarray) -> np.ndarray:
    out = pose.copy()
    out[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix() @ pose[:3, :3]
    out[:3, 3] = out[:3, 3] + shift
    return out


def _cam_centres(cam_poses):
    return -np.einsum("nji,nj->ni", cam_poses[:, :3, :3], cam_poses[:, :3, 3])


def _crossing_point(rng, cam_poses, actors, frame, near_far):
    """A ground point on the line of sight from the camera to actor 0 at `frame`, at a random
    fraction of the distance from `near_far` ranges ((lo, hi), ...)."""
    centre = _cam_centres(cam_poses[frame:frame + 1])[0][[0, 2]]
    target = actors[0].joints[frame, 0][[0, 2]]
    lo, hi = near_far[rng.integers(len(near_far))]
    s = rng.uniform(lo, hi)
    return centre + s * (target - centre), target - centre


def _occluding_frames(cam_poses, K, obj_xz, obj_radius, people_xz, body_radius=0.25):
    """(N,) bool: frames where an upright object at ground position obj_xz ((N,2) or (2,)) of
    horizontal radius obj_radius is in front of some person and overlaps them in the image
    (horizontally, using the pelvis column)."""
    n = len(cam_poses)
    obj = np.broadcast_to(np.asarray(obj_xz, np.float64), (n, 2))
    R, t = cam_poses[:, :3, :3], cam_poses[:, :3, 3]

    def column(xz):  # pixel column and depth of a point at hip height above xz
        p = np.stack([xz[:, 0], np.full(n, 0.9), xz[:, 1]], -1)
        c = np.einsum("nij,nj->ni", R, p) + t
        return K[0, 0] * c[:, 0] / np.maximum(c[:, 2], 1e-3) + K[0, 2], c[:, 2]

    u_obj, z_obj = column(obj)
    hit = np.zeros(n, bool)
    for person in people_xz:
        u_p, z_p = column(person)
        reach = K[0, 0] * (obj_radius / np.maximum(z_obj, 1e-3)
                           + body_radius / np.maximum(z_p, 1e-3))
        hit |= (z_obj < z_p) & (np.abs(u_obj - u_p) < reach)
    return hit


def _clear_of(path_xz, others_xz, radius):
    return all(np.linalg.norm(path_xz - o, axis=-1).min() > radius for o in others_xz)


def _scene_key(cfg: SynthesizeConfig, split: str, index: int) -> tuple[int, int, int]:
    return (cfg.seed, SPLITS.index(split), index)


def _draw_num_frames(rng: np.random.Generator, cfg: SynthesizeConfig) -> int:
    """A sequence's length: the first draw of its generator (so it is known before rendering)."""
    return int(rng.integers(cfg.min_frames, cfg.max_frames + 1))


def total_frames(cfg: SynthesizeConfig) -> int:
    """Frames `synthesize` will render (for its progress)."""
    return sum(_draw_num_frames(np.random.default_rng(list(_scene_key(cfg, split, index))), cfg)
               for split in SPLITS for index in range(cfg.sequences_per_split[split]))


def build_scene(assets: BodyAssets, cfg: SynthesizeConfig, split: str, index: int,
                two_actors: bool) -> Scene:
    """Draw every random choice of one sequence from its own seeded generator."""
    key = _scene_key(cfg, split, index)
    rng = np.random.default_rng(list(key))
    n = _draw_num_frames(rng, cfg)
    K = intrinsics(rng, cfg.width, cfg.height)

    first = make_person(assets, rng, n, {"start_xz": (0.0, 0.0)}, side_cues=cfg.side_cues)
    actors = [first]
    if two_actors:
        # A companion about a metre to the side: walking alongside on a parallel path (so the
        # two never collide), or standing next to a standing first actor.
        side = rng.choice([-1.0, 1.0]) * rng.uniform(0.9, 1.3)
        heading = first.heading_60
        lateral = side * np.stack([np.cos(heading), -np.sin(heading)], -1)  # (2N,2) sideways
        if first.style.startswith("walk"):
            kwargs = {"style": str(rng.choice(["walk", "walk_wave"])),
                      "path": (first.root_xz_60 + lateral, heading)}
        else:
            kwargs = {"style": str(rng.choice(["wave", "squat"])),
                      "start_xz": tuple(first.root_xz_60[0] + lateral[0]),
                      "heading0": float(heading[0] + rng.uniform(-0.8, 0.8))}
        actors.append(make_person(assets, rng, n, kwargs, side_cues=cfg.side_cues))

    cam_poses = _camera_path(rng, actors, n, K, cfg.height)
    centres_xz = _cam_centres(cam_poses)[:, [0, 2]]
    people_xz = [a.joints[:, 0][:, [0, 2]] for a in actors]

    distractors = []
    for _ in range(cfg.distractors):
        for attempt in range(8):
            frame = int(rng.integers(n // 4, max(n // 4 + 1, 3 * n // 4)))
            ranges = ((0.5, 0.8), (1.3, 1.9)) if attempt < 5 else ((1.5, 2.2),)
            point, los = _crossing_point(rng, cam_poses, actors, frame, ranges)
            perp = np.arctan2(los[1], -los[0]) + rng.uniform(-0.5, 0.5)  # heading across the LOS
            if rng.random() < 0.5:
                perp += np.pi
            mot = motion_lib.generate_motion(rng, 2 * n, fps=2 * FPS, style="walk",
                                             heading0=float(perp), turn_rate=0.0)
            mot.root_xz += point - mot.root_xz[2 * frame]  # at the crossing point at `frame`
            path = mot.root_xz[::2]
            covered = _occluding_frames(cam_poses, K, path, 0.25, people_xz).mean()
            if (_clear_of(path, people_xz, 0.7) and _clear_of(path, [centres_xz], 0.6)
                    and covered <= MAX_OCCLUDED_FRACTION):
                distractors.append(make_person(assets, rng, n, motion=mot,
                                               side_cues=cfg.side_cues))
                break

    occluders = []
    for _ in range(cfg.occluders):
        best = None  # (how far the occluded fraction is from the allowed range, mesh)
        for _attempt in range(8):
            frame = int(rng.integers(n // 5, max(n // 5 + 1, 4 * n // 5)))
            point, los = _crossing_point(rng, cam_poses, actors, frame, ((0.4, 0.75),))
            # Off the line of sight by up to ~half a body width: partial occlusions too.
            point = point + rng.uniform(-0.35, 0.35) * np.array([los[1], -los[0]]) / max(
                np.linalg.norm(los), 1e-6)
            if rng.random() < 0.6:  # pole
                size = np.array([rng.uniform(0.12, 0.3), rng.uniform(1.6, 3.0), 0.0])
                size[2] = size[0]
            else:  # panel / sign / low wall
                size = np.array([rng.uniform(0.6, 1.4), rng.uniform(0.7, 1.4),
                                 rng.uniform(0.05, 0.2)])
            radius = 0.5 * np.hypot(size[0], size[2])
            if not (_clear_of(point[None], people_xz, radius + 0.35)
                    and _clear_of(point[None], [centres_xz], radius + 0.4)):
                continue
            yaw = float(np.arctan2(los[0], los[1]))  # face the camera
            verts, faces = box_mesh(np.array([point[0], 0.0, point[1]]), size, yaw)
            color = _hsv_color(rng, sat=(0.1, 0.9), val=(0.25, 0.9))
            colors = np.clip(color * rng.uniform(0.9, 1.1, (len(faces), 1)), 0, 255)
            covered = _occluding_frames(cam_poses, K, point, 0.5 * size[0], people_xz).mean()
            miss = max(0.0, covered - MAX_OCCLUDED_FRACTION) + (covered == 0)
            if best is None or miss < best[0]:
                best = (miss, Mesh(verts, faces, colors))
            if miss == 0:
                break
        if best is not None:
            occluders.append(best[1])

    # Frames whose stored camera pose is wrong: the image uses a perturbed camera.
    campose_valid = np.ones(n, bool)
    render_cam_poses = cam_poses.copy()
    bad = int(round(cfg.invalid_campose_fraction * n))
    if cfg.invalid_campose_fraction > 0:
        bad = max(bad, 1)
    if bad:
        start = int(rng.integers(0, n - bad + 1))
        axis = rng.normal(size=3)
        rotvec = axis / np.linalg.norm(axis) * np.deg2rad(rng.uniform(3.0, 6.0))
        shift = rng.uniform(-0.2, 0.2, 3)
        campose_valid[start:start + bad] = False
        for i in range(start, start + bad):
            render_cam_poses[i] = _perturb(cam_poses[i], rotvec, shift)

    name = f"synth_{split}_{index:02d}_{actors[0].style}"
    return Scene(name=name, split=split, key=key, num_frames=n, K=K, cam_poses=cam_poses,
                 render_cam_poses=render_cam_poses, campose_valid=campose_valid, actors=actors,
                 distractors=distractors, occluders=occluders, backdrop=make_backdrop(rng))


# ----------------------------------------------------------------------------------------------
# Rendering a frame and its 2D keypoints


@dataclass
class Frame:
    """image (H,W,3) uint8 BGR before JPEG; background (H,W,3) uint8 without people/occluders;
    poses2d (A,3,18) per annotated actor; mesh_id (H,W) int32 (-1 background, then actors,
    distractors, occluders in that order)."""

    image: np.ndarray
    background: np.ndarray
    poses2d: np.ndarray
    mesh_id: np.ndarray


_JOINT_FOR_COCO = np.array([SMPL_JOINT_NAMES.index(_COCO_FROM_SMPL_NAME[n])
                            if n in _COCO_FROM_SMPL_NAME else -1 for n in COCO18_NAMES])
_FACE_SLOTS = np.array([COCO18_NAMES.index(n) for n in COCO_FACE_POINTS])


def coco18_points(assets: BodyAssets, vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """(18,3) COCO-18 points of one body: joints for the body, head vertices for the face."""
    pts = joints[np.maximum(_JOINT_FOR_COCO, 0)]
    pts[_FACE_SLOTS] = vertices[assets.face_vertex_ids]
    return pts


def _keypoints_2d(assets, rng, person_index, verts_cam, joints_cam, raster, K, width, height):
    """(3,18) x, y, confidence for one person, OpenPose-like (see module docstring)."""
    pts = coco18_points(assets, verts_cam, joints_cam)
    uv = project_points(pts, K)
    uv = uv + rng.normal(0, 0.002 * max(width, height), uv.shape)  # detector jitter
    out = np.zeros((3, 18))
    # Face points look away from the camera when their surface normal does.
    facing = np.ones(18, bool)
    for slot, vid, fids in zip(_FACE_SLOTS, assets.face_vertex_ids, assets.face_vertex_faces):
        t = verts_cam[assets.faces[fids]]
        normal = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]).sum(0)
        facing[slot] = normal @ verts_cam[vid] < 0
    for k in range(18):
        x, y = uv[k]
        if pts[k, 2] <= 0.05 or not (0 <= x < width and 0 <= y < height) or not facing[k]:
            continue  # undetected: (0, 0, 0)
        xi, yi = int(x), int(y)
        owners = raster.mesh_id[max(yi - 1, 0):yi + 2, max(xi - 1, 0):xi + 2]
        own = (owners == person_index).any()
        if own:
            surface = raster.depth[yi, xi] if raster.mesh_id[yi, xi] == person_index else pts[k, 2]
            if pts[k, 2] - surface > 0.2:  # behind the person's own body (e.g. far wrist)
                conf = rng.uniform(0.15, 0.45)
            else:
                conf = rng.uniform(0.6, 0.95)
        elif (owners >= 0).any():  # covered by another person or an occluder
            conf = rng.uniform(0.01, 0.15)
        else:  # just outside the silhouette (joint near the outline): less sure
            conf = rng.uniform(0.3, 0.5)
        out[:, k] = (x, y, conf)
    return out


def render_frame(assets: BodyAssets, scene: Scene, frame: int, width: int,
                 height: int) -> Frame:
    rng = np.random.default_rng([*scene.key, 1000 + frame])
    cam = scene.render_cam_poses[frame]
    R, t = cam[:3, :3], cam[:3, 3]
    if scene.rays_cam is None or scene.rays_cam.shape[:2] != (height, width):
        scene.rays_cam = camera_rays(scene.K, height, width)
    background = render_background(scene.backdrop, cam, scene.K, height, width, scene.rays_cam)
    people = scene.actors + scene.distractors
    meshes = [Mesh(p.vertices[frame] @ R.T + t, assets.faces, p.face_colors) for p in people]
    meshes += [Mesh(o.vertices @ R.T + t, o.faces, o.face_colors) for o in scene.occluders]
    raster = rasterize(meshes, scene.K, height, width)
    image = background.astype(np.float32)
    mask = raster.mask
    image[mask] = shade_faces(raster)[raster.face_id[mask]]
    # Soften the aliased polygon edges a little, then add sensor noise.
    image = cv2.GaussianBlur(image, (3, 3), 0.6)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(2.0)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    poses2d = np.stack([
        _keypoints_2d(assets, rng, i, meshes[i].vertices, a.joints[frame] @ R.T + t, raster,
                      scene.K, width, height)
        for i, a in enumerate(scene.actors)])
    return Frame(image, background, poses2d, raster.mesh_id)


# ----------------------------------------------------------------------------------------------
# Writing


def clothed_template(assets: BodyAssets, person: Person, rng: np.random.Generator) -> np.ndarray:
    """(V,3) rest-pose template of this person's shape plus a few cm of 'clothing' along the
    normals (3DPW's v_template_clothed)."""
    verts, _ = assets.evaluate(np.zeros((1, 72)), person.betas)
    thickness = 0.008 + 0.006 * rng.random(24)
    return verts[0] + assets.vertex_normals_rest * thickness[assets.part_labels][:, None]


def sequence_record(assets: BodyAssets, scene: Scene, poses2d: np.ndarray,
                    cfg: SynthesizeConfig) -> dict:
    """The 3DPW pickle dict (plain numpy / python objects only)."""
    rng = np.random.default_rng([*scene.key, 999])
    actors = scene.actors
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    return {
        "sequence": scene.name,
        "betas": [f64(a.betas) for a in actors],
        "betas_clothed": [f64(a.betas + rng.normal(0, 0.05, 10)) for a in actors],
        "v_template_clothed": [f64(clothed_template(assets, a, rng)) for a in actors],
        "genders": [a.gender for a in actors],
        "texture_maps": [texture_map(a.palette, cfg.texture_size, rng) for a in actors],
        "poses": [f64(a.poses) for a in actors],
        "poses_60Hz": [f64(a.poses_60) for a in actors],
        "trans": [f64(a.trans) for a in actors],
        "trans_60Hz": [f64(a.trans_60) for a in actors],
        "poses2d": [f64(poses2d[:, i]) for i in range(len(actors))],
        "jointPositions": [f64(a.joints.reshape(scene.num_frames, 72)) for a in actors],
        "campose_valid": [scene.campose_valid.copy() for _ in actors],
        "img_frame_ids": np.arange(scene.num_frames, dtype=np.int64),
        "cam_poses": f64(scene.cam_poses),
        "cam_intrinsics": f64(scene.K),
    }


def write_sequence(assets: BodyAssets, scene: Scene, root: Path, cfg: SynthesizeConfig,
                   on_frame=None) -> int:
    """Render all frames of `scene` to <root>/imageFiles/<name>/ and write its pickle."""
    image_dir = root / IMAGE_DIR / scene.name
    image_dir.mkdir(parents=True, exist_ok=True)
    poses2d = np.zeros((scene.num_frames, len(scene.actors), 3, 18))
    params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]
    for i in range(scene.num_frames):
        frame = render_frame(assets, scene, i, cfg.width, cfg.height)
        ok, jpeg = cv2.imencode(".jpg", frame.image, params)
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {scene.name} frame {i}")
        (image_dir / IMAGE_PATTERN.format(i)).write_bytes(jpeg.tobytes())
        poses2d[i] = frame.poses2d
        if on_frame is not None:
            on_frame()
    record = sequence_record(assets, scene, poses2d, cfg)
    pkl_dir = root / SEQUENCE_DIR / scene.split
    pkl_dir.mkdir(parents=True, exist_ok=True)
    with open(pkl_dir / f"{scene.name}.pkl", "wb") as f:
        pickle.dump(record, f, protocol=PICKLE_PROTOCOL)
    return scene.num_frames


def two_actor_indices(cfg: SynthesizeConfig, split: str) -> set[int]:
    """Which sequences of a split have two annotated actors (a seeded, fixed choice)."""
    count = cfg.sequences_per_split[split]
    k = int(round(cfg.two_actor_fraction * count))
    if cfg.two_actor_fraction > 0 and count >= 2:
        k = max(k, 1)
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), 77])
    return set(rng.permutation(count)[:k].tolist())


def synthesize(out_root: str | Path, body, cfg: SynthesizeConfig, progress: bool = True) -> dict:
    """Write a synthetic 3DPW to out_root (replaced atomically as a whole). `body` is a
    stdformer.body.BodyModel. Returns a report: sequences per split, frames, tracks, seconds."""
    cfg.validate()
    from stdformer.progress import progress as progress_bar

    assets = BodyAssets(body)
    start = time.perf_counter()
    report = {"sequences": {}, "frames": 0, "tracks": 0, "two_actor_sequences": 0,
              "invalid_campose_frames": 0}
    with atomic_output(out_root, directory=True) as tmp:
        tmp.chmod(0o755)  # a temp directory starts private; the data set is not
        bar = progress_bar(total=total_frames(cfg), unit="frame", desc="synthesize",
                           disable=not progress)
        (tmp / IMAGE_DIR).mkdir()
        for split in SPLITS:
            (tmp / SEQUENCE_DIR / split).mkdir(parents=True)  # every split, even when empty
            names = []
            doubles = two_actor_indices(cfg, split)
            for index in range(cfg.sequences_per_split[split]):
                scene = build_scene(assets, cfg, split, index, index in doubles)
                bar.set_postfix_str(scene.name)
                report["frames"] += write_sequence(assets, scene, tmp, cfg, bar.update)
                report["tracks"] += len(scene.actors)
                report["two_actor_sequences"] += len(scene.actors) > 1
                report["invalid_campose_frames"] += int((~scene.campose_valid).sum())
                names.append(scene.name)
            report["sequences"][split] = names
        bar.close()
    seconds = time.perf_counter() - start
    report["seconds"] = round(seconds, 2)
    report["frames_per_second"] = round(report["frames"] / max(seconds, 1e-9), 1)
    log.info("synthesized %d frames (%d tracks) in %.1f s (%.1f frames/s) -> %s",
             report["frames"], report["tracks"], seconds, report["frames_per_second"], out_root)
    return report
