"""A synthetic stand-in for Human3.6M, written in the layout the field distributes it in
(I2L-MeshNet / NeuralAnnot), from the published format alone (not from this project's reader):

    <root>/images/s_SS_act_AA_subact_BB_ca_CC/s_SS_act_AA_subact_BB_ca_CC_NNNNNN.jpg
    <root>/annotations/Human36M_subject{S}_data.json            COCO images + annotations
    <root>/annotations/Human36M_subject{S}_camera.json          {cam_idx: {R, t (mm), f, c}}
    <root>/annotations/Human36M_subject{S}_joint_3d.json        [action][subaction][frame] 17x3 mm
    <root>/annotations/Human36M_subject{S}_SMPL_NeuralAnnot.json  [action][subaction][frame]
                                                                  {pose 72, shape 10, trans 3 m}

A studio in miniature: a plain floor and wall under even light, one subject in the middle of the
capture volume, 4 fixed cameras at the corners (4.5-5.5 m away, about chest height, looking at
the volume centre; each subject's calibration differs a little, as in the real files). Every
subject has its own body shape and clothing; each action is a procedural motion
(`motion.generate_motion`, `ACTION_STYLE`) at 50 Hz.

Conventions, as the releasing code (I2L-MeshNet `data/Human36M/Human36M.py`) uses them:
* the world is z-up and in millimetres; a camera point is `R @ X_world + t` (mm) and a pixel
  `f * X[:2] / X[2] + c`;
* frame_idx is 0-based; the file name's frame number is frame_idx + 1;
* a fit is world-frame SMPL: the mesh of (pose, shape) with the root orientation in the world
  frame, plus trans (metres), is the world mesh in metres;
* joint_3d is the posed body's Human3.6M-17 regressor output (world, mm) plus a few mm of
  noise, so the fits are pseudo ground truth relative to the joints.

Images and data.json entries exist only for the sampled frames (frame_idx % every == 0, as some
distributions ship only every 5th frame); joint_3d and the fits cover every frame, except that
the last `unfitted_frames` frames of `unfitted_runs` subactions per subject have no fit (fits
exist for a subset of frames in the real files). Deterministic: every draw comes from a
generator keyed by (seed, subject, ...), so the same config writes the same bytes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from stdformer.body.track_posing import PosingArrays, pose_track
from stdformer.data import motion as motion_lib
from stdformer.data.render import Mesh, project_points, rasterize, shade_faces
from stdformer.data.synthetic_appearance import (
    Backdrop,
    face_colors_for,
    hsv_color,
    person_palette,
    render_background,
)
from stdformer.data.synthetic_assets import SynthBodyAssets
from stdformer.data.synthetic_h36m_config import (
    ACTION_STYLE,
    FPS_H36M,
    SynthesizeH36MConfig,
    action_index,
)
from stdformer.data.synthetic_scene import look_at
from stdformer.io import atomic_output
from stdformer.progress import progress as progress_bar

log = logging.getLogger(__name__)

IMAGES_DIR, ANNOTATIONS_DIR = "images", "annotations"
NUM_CAMERAS = 4
TALL_CAMERAS = (1, 4)   # 2 rows taller, as the real set has 1000x1002 frames beside 1000x1000
FOCAL_PER_WIDTH = 1.147  # the real cameras: f ~ 1145-1150 px on 1000 px frames
EVEN_LIGHT_AMBIENT = 0.6  # studio lighting: flatter shading than the outdoor scenes
BBOX_SCALE = 1.25        # bbox: the projected joints' extent, enlarged about its centre
# Our renderer's world is y-up (motion.py, render_background); Human3.6M's is z-up. This
# rotation (about x by +90 degrees) takes y-up coordinates to z-up ones: (x, y, z) -> (x, -z, y).
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def sequence_name(subject: int, action: int, subaction: int, cam: int) -> str:
    return f"s_{subject:02d}_act_{action:02d}_subact_{subaction:02d}_ca_{cam:02d}"


def image_file_name(subject: int, action: int, subaction: int, cam: int, frame_idx: int) -> str:
    """file_name relative to images/; the number in it is 1-based."""
    name = sequence_name(subject, action, subaction, cam)
    return f"{name}/{name}_{frame_idx + 1:06d}.jpg"


# ----------------------------------------------------------------------------------------------
# The studio: cameras and backdrop


@dataclass
class StudioCamera:
    """One calibrated camera in the renderer's y-up metres: pose (4,4) world->camera, K (3,3),
    image width and height."""

    pose: np.ndarray
    K: np.ndarray
    width: int
    height: int


def studio_cameras(cfg: SynthesizeH36MConfig, subject: int) -> dict[int, StudioCamera]:
    """The 4 corner cameras as calibrated for `subject`: one studio layout (seeded by the seed
    alone) plus a small per-subject recalibration (a few mm, a fraction of a degree)."""
    layout = np.random.default_rng([cfg.seed, 1000])
    recal = np.random.default_rng([cfg.seed, subject, 1001])
    cams = {}
    for cam in range(1, NUM_CAMERAS + 1):
        azimuth = np.deg2rad(45.0 + 90.0 * (cam - 1) + layout.uniform(-12, 12))
        distance = layout.uniform(4.5, 5.5)
        eye = np.array([distance * np.sin(azimuth), layout.uniform(1.4, 1.7),
                        distance * np.cos(azimuth)])
        target = np.array([layout.uniform(-0.2, 0.2), layout.uniform(0.9, 1.1),
                           layout.uniform(-0.2, 0.2)])
        focal = cfg.size * FOCAL_PER_WIDTH * layout.uniform(0.996, 1.004, 2)
        centre_shift = layout.uniform(-0.012, 0.012, 2) * cfg.size
        eye = eye + recal.normal(0, 0.004, 3)
        pose = look_at(eye, target + recal.normal(0, 0.004, 3), roll=recal.normal(0, 0.002))
        height = cfg.size + (2 if cam in TALL_CAMERAS else 0)
        K = np.array([[focal[0], 0, cfg.size / 2 + centre_shift[0]],
                      [0, focal[1], height / 2 + centre_shift[1]], [0, 0, 1.0]])
        cams[cam] = StudioCamera(pose, K, cfg.size, height)
    return cams


def studio_backdrop(seed: int) -> Backdrop:
    """A plain studio: a grey floor with faint mats, a plain wall of one colour."""
    rng = np.random.default_rng([seed, 1002])
    floor = hsv_color(rng, sat=(0.0, 0.15), val=(0.35, 0.55))
    size = 64
    u = (np.arange(size) + 0.5) / size
    mats = ((u[:, None] < 0.5) ^ (u[None, :] < 0.5)).astype(np.float32)[..., None]
    ground = (floor * (0.94 + 0.06 * mats)).astype(np.float32)
    wall = hsv_color(rng, sat=(0.0, 0.2), val=(0.55, 0.75))
    rows = (np.arange(256) + 0.5) / 256  # 0 = top, 1 = horizon: a little darker up high
    surround = np.repeat((wall * (0.9 + 0.1 * rows)[:, None])[:, None, :], 256, 1)
    return Backdrop(ground, 2.0, surround.astype(np.float32), 1, floor.astype(np.float32))


# ----------------------------------------------------------------------------------------------
# A subject and its motion


@dataclass
class Performance:
    """One subaction of one subject in the y-up metres of the renderer: vertices (S,V,3) at the
    S sampled frames (`cfg.sampled_frames`), joints_h36m (T,17,3) at every frame, world; and its
    world-frame (z-up) SMPL fit: pose (T,72), trans (T,3)."""

    vertices: np.ndarray
    joints_h36m: np.ndarray
    pose: np.ndarray
    trans: np.ndarray


def subject_look(assets: SynthBodyAssets, cfg: SynthesizeH36MConfig, subject: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The subject's own betas (10,) and per-face colours (F,3) BGR."""
    rng = np.random.default_rng([cfg.seed, subject])
    betas = np.round(np.clip(rng.normal(0.0, 0.9, 10), -2.5, 2.5), 6)
    colors = face_colors_for(assets, person_palette(rng), rng, side_cues=True)
    return betas, colors


def perform(assets: SynthBodyAssets, posing: PosingArrays, cfg: SynthesizeH36MConfig,
            subject: int, action: str, subaction: int, betas: np.ndarray,
            towards: float) -> Performance:
    """Pose the subject for one subaction: standing actions face roughly `towards` (an azimuth,
    the frontal camera's) near the volume centre; walks cross the centre. The whole mesh is
    posed at the sampled frames only (the images); the joints at every frame, with
    `pose_track` (only the vertices the H36M regressor reads)."""
    rng = np.random.default_rng([cfg.seed, subject, action_index(action), subaction])
    style = ACTION_STYLE.get(action, "wave")
    n = cfg.frames
    if style.startswith("walk"):
        heading, speed = rng.uniform(-np.pi, np.pi), rng.uniform(0.9, 1.2)
        half_path = 0.5 * speed * n / FPS_H36M
        start = -half_path * np.array([np.sin(heading), np.cos(heading)])
        motion = motion_lib.generate_motion(rng, n, fps=FPS_H36M, style=style,
                                            start_xz=tuple(start), heading0=heading,
                                            speed=speed, turn_rate=rng.uniform(-0.2, 0.2))
    else:
        motion = motion_lib.generate_motion(rng, n, fps=FPS_H36M, style=style,
                                            start_xz=tuple(rng.uniform(-0.3, 0.3, 2)),
                                            heading0=towards + rng.uniform(-0.6, 0.6))
    sampled = cfg.sampled_frames
    vertices, joints = assets.evaluate(motion.poses[sampled], betas)   # (S,V,3), (S,24,3)
    pelvis = joints[0, 0]  # SMPL rotates about the rest pelvis J0(betas): posed joint 0 stays
    # Root height putting the lowest vertex on the floor y = 0, between samples interpolated.
    lift = np.interp(np.arange(n), sampled, -vertices[..., 1].min(axis=1))
    lift = gaussian_filter1d(lift, 2.0, mode="nearest")
    trans_y = np.stack([motion.root_xz[:, 0] - pelvis[0], lift,
                        motion.root_xz[:, 1] - pelvis[2]], -1)                     # (T,3)
    world = np.tile(np.eye(4), (n, 1, 1))  # pose_track's camera: the y-up world itself
    joints_h36m = pose_track(posing, motion.poses, betas, trans_y, world)["joints_h36m"]
    # The fit in the z-up world: the root turned by the axis change, and the translation that
    # keeps the mesh in place although SMPL turns it about J0, not the origin.
    root = Rotation.from_matrix(Y_UP_TO_Z_UP) * Rotation.from_rotvec(motion.poses[:, :3])
    pose = motion.poses.copy()
    pose[:, :3] = root.as_rotvec()
    trans = (pelvis + trans_y) @ Y_UP_TO_Z_UP.T - pelvis
    return Performance(vertices + trans_y[sampled, None], joints_h36m.astype(np.float64), pose,
                       trans)


def unfitted_runs(cfg: SynthesizeH36MConfig, subject: int) -> set[tuple[str, int]]:
    """(action, subaction) pairs of `subject` whose last frames have no SMPL fit."""
    runs = [(a, s) for a in cfg.actions for s in range(1, cfg.subactions + 1)]
    rng = np.random.default_rng([cfg.seed, subject, 1003])
    return {runs[i] for i in sorted(rng.permutation(len(runs))[:cfg.unfitted_runs])}


# ----------------------------------------------------------------------------------------------
# Rendering one view


def render_view(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray,
                camera: StudioCamera, background: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """The subject (vertices (V,3) y-up world) seen by `camera` over its empty-studio
    `background` (H,W,3) -> image (H,W,3) uint8 BGR and the subject's mask (H,W) bool."""
    R, t = camera.pose[:3, :3], camera.pose[:3, 3]
    raster = rasterize([Mesh(vertices @ R.T + t, faces, colors)], camera.K, camera.height,
                       camera.width)
    image = background.astype(np.float32)
    mask = raster.mask
    image[mask] = shade_faces(raster, ambient=EVEN_LIGHT_AMBIENT)[raster.face_id[mask]]
    image = cv2.GaussianBlur(image, (3, 3), 0.6)  # soften the aliased polygon edges
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(1.5)  # sensor
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


# ----------------------------------------------------------------------------------------------
# The annotation records (the published format)


def camera_record(camera: StudioCamera) -> dict:
    """{R, t (mm), f, c} of the z-up world: X_cam = R @ X_world + t."""
    R = camera.pose[:3, :3] @ Y_UP_TO_Z_UP.T
    return {"R": R.tolist(), "t": (camera.pose[:3, 3] * 1000.0).tolist(),
            "f": [camera.K[0, 0], camera.K[1, 1]], "c": [camera.K[0, 2], camera.K[1, 2]]}


def joints_world_mm(joints_y: np.ndarray, rng: np.random.Generator, noise_mm: float
                    ) -> np.ndarray:
    """(T,17,3) y-up metres -> z-up millimetres with `noise_mm` of Gaussian noise."""
    return joints_y @ Y_UP_TO_Z_UP.T * 1000.0 + rng.normal(0.0, noise_mm, joints_y.shape)


def project_world_mm(points_mm: np.ndarray, cam: dict) -> tuple[np.ndarray, np.ndarray]:
    """Published-format projection of (N,3) world mm with a camera record -> pixels (N,2) and
    camera depth (N,) mm."""
    X = points_mm @ np.asarray(cam["R"]).T + np.asarray(cam["t"])
    K = np.array([[cam["f"][0], 0, cam["c"][0]], [0, cam["f"][1], cam["c"][1]], [0, 0, 1.0]])
    return project_points(X, K), X[:, 2]


def box_and_visibility(joints_mm: np.ndarray, cam: dict, width: int, height: int
                       ) -> tuple[list[float], list[bool]]:
    """bbox [x, y, w, h] around the projected joints (BBOX_SCALE x their extent, clipped to the
    image) and keypoints_vis: the joint is in front of the camera and inside the frame."""
    uv, depth = project_world_mm(joints_mm, cam)
    inside = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (
        uv[:, 1] < height)
    pts = uv[inside] if inside.any() else uv
    centre = (pts.min(0) + pts.max(0)) / 2
    half = (pts.max(0) - pts.min(0)) / 2 * BBOX_SCALE
    lo = np.clip(centre - half, 0, [width, height])
    hi = np.clip(centre + half, 0, [width, height])
    return [round(float(v), 2) for v in (*lo, *(hi - lo))], inside.tolist()


def _rounded(a: np.ndarray, decimals: int) -> list:
    return np.round(a, decimals).tolist()


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")))


# ----------------------------------------------------------------------------------------------
# Writing the set


def write_subject(assets: SynthBodyAssets, posing: PosingArrays, backdrop: Backdrop,
                  cfg: SynthesizeH36MConfig, subject: int, root: Path, first_id: int,
                  on_frame=None) -> int:
    """Render and annotate every subaction of `subject` into root; image/annotation ids start
    at first_id (ids are unique across subjects, as in the real files). Returns images written."""
    cams = studio_cameras(cfg, subject)
    cam_records = {str(c): camera_record(cam) for c, cam in cams.items()}
    backgrounds = {c: render_background(backdrop, cam.pose, cam.K, cam.height, cam.width)
                   for c, cam in cams.items()}
    frontal = cams[4].pose
    eye = -frontal[:3, :3].T @ frontal[:3, 3]
    towards = float(np.arctan2(eye[0], eye[2]))  # heading that faces camera 4
    betas, colors = subject_look(assets, cfg, subject)
    no_fit = unfitted_runs(cfg, subject)
    images, annotations, joints_json, fits_json = [], [], {}, {}
    params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]
    for action in cfg.actions:
        act = action_index(action)
        for sub in range(1, cfg.subactions + 1):
            perf = perform(assets, posing, cfg, subject, action, sub, betas, towards)
            noise = np.random.default_rng([cfg.seed, subject, act, sub, 1004])
            joints_mm = joints_world_mm(perf.joints_h36m, noise, cfg.joint_noise_mm)
            joints_json.setdefault(str(act), {})[str(sub)] = {
                str(i): _rounded(joints_mm[i], 3) for i in range(cfg.frames)}
            fitted = cfg.frames - (cfg.unfitted_frames if (action, sub) in no_fit else 0)
            fits_json.setdefault(str(act), {})[str(sub)] = {
                str(i): {"pose": _rounded(perf.pose[i], 6), "shape": betas.tolist(),
                         "trans": _rounded(perf.trans[i], 6)} for i in range(fitted)}
            for c, cam in cams.items():
                folder = root / IMAGES_DIR / sequence_name(subject, act, sub, c)
                folder.mkdir(parents=True)
                for k, i in enumerate(cfg.sampled_frames):
                    rng = np.random.default_rng([cfg.seed, subject, act, sub, c, i])
                    image, _ = render_view(perf.vertices[k], assets.faces, colors, cam,
                                           backgrounds[c], rng)
                    ok, jpeg = cv2.imencode(".jpg", image, params)
                    if not ok:
                        raise RuntimeError(f"JPEG encoding failed for subject {subject} {i}")
                    file_name = image_file_name(subject, act, sub, c, i)
                    (root / IMAGES_DIR / file_name).write_bytes(jpeg.tobytes())
                    bbox, vis = box_and_visibility(joints_mm[i], cam_records[str(c)],
                                                   cam.width, cam.height)
                    image_id = first_id + len(images)
                    images.append({"id": image_id, "file_name": file_name,
                                   "width": cam.width, "height": cam.height, "subject": subject,
                                   "action_name": action, "action_idx": act,
                                   "subaction_idx": sub, "cam_idx": c, "frame_idx": i})
                    annotations.append({"id": image_id, "image_id": image_id, "bbox": bbox,
                                        "keypoints_vis": vis})
                    if on_frame is not None:
                        on_frame()
    prefix = root / ANNOTATIONS_DIR / f"Human36M_subject{subject}"
    _write_json(Path(f"{prefix}_data.json"), {"images": images, "annotations": annotations})
    _write_json(Path(f"{prefix}_camera.json"), cam_records)
    _write_json(Path(f"{prefix}_joint_3d.json"), joints_json)
    _write_json(Path(f"{prefix}_SMPL_NeuralAnnot.json"), fits_json)
    return len(images)


def synthesize_h36m(out_root: str | Path, body, posing: PosingArrays, cfg: SynthesizeH36MConfig,
                    progress: bool = True) -> dict:
    """Write the synthetic Human3.6M set to out_root (replaced atomically as a whole). `body` is
    a stdformer.body.BodyModel, `posing` the same body's PosingArrays. Returns a report:
    subjects, images, runs, seconds."""
    cfg.validate()
    assets = SynthBodyAssets(body)
    backdrop = studio_backdrop(cfg.seed)
    start = time.perf_counter()
    per_subject = len(cfg.actions) * cfg.subactions * NUM_CAMERAS * len(cfg.sampled_frames)
    total = per_subject * len(cfg.subjects)
    with atomic_output(out_root, directory=True) as tmp:
        (tmp / IMAGES_DIR).mkdir()
        (tmp / ANNOTATIONS_DIR).mkdir()
        bar = progress_bar(total=total, unit="frame", desc="synthesize_h36m",
                           disable=not progress)
        written = 0
        for subject in cfg.subjects:
            bar.set_postfix_str(f"S{subject}")
            written += write_subject(assets, posing, backdrop, cfg, subject, tmp, written,
                                     bar.update)
        bar.close()
    seconds = time.perf_counter() - start
    report = {"subjects": list(cfg.subjects), "images": written,
              "runs": len(cfg.subjects) * len(cfg.actions) * cfg.subactions * NUM_CAMERAS,
              "seconds": round(seconds, 2)}
    log.info("synthesized a Human3.6M-layout set: %d subjects, %d images in %.1f s -> %s",
             len(cfg.subjects), written, seconds, out_root)
    return report
