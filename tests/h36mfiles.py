"""A tiny Human3.6M set in the NeuralAnnot / I2L-MeshNet layout, built by hand for the reader's
tests (independent of `synthesize` and of stdformer/data/h36m.py's helpers).

Written as the released files look: `annotations/Human36M_subject{S}_{data,camera,joint_3d,
SMPL_NeuralAnnot}.json` with string keys, COCO-style data.json (0-based frame_idx), cameras
{R, t (mm), f, c} with a camera point R @ X_world + t, 1-based image names. The body is posed
from known SMPL parameters in the WORLD frame (z up, as Human3.6M's) with our body model; the
mocap joints in joint_3d.json are its H36M-17 joints in mm. Frames are 1000 x 1000 scaled down
by SCALE (focal length and principal point with them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

SCALE = 8                         # 1000 x 1000 frames at 1/8: 125 x 125
SIZE = 1000 // SCALE
ACTION, ACTION_NAME = 2, "Directions"
FRAMES = 20                       # annotated frames per (subaction, camera): frame_idx 0..19
EVERY = 2
SUBJECTS = {"train": [1], "validation": [8], "test": [9]}
NO_FIT = {1: [4, 5]}              # subject -> frames whose SMPL fit is left out
GAP = {8: (3, 8)}                 # subject -> (camera, frame) left out of data.json
OLD_FIT_NAME = {9}                # subjects whose fits use the older `_smpl_param.json` name


def look_at(centre_mm: np.ndarray, target_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World->camera (R, t mm) of a camera at `centre_mm` looking at `target_mm`; camera axes x
    right, y down, z forward; world z up. t = -R @ centre (t is not the centre)."""
    forward = target_mm - centre_mm
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return R, -R @ centre_mm


def cameras() -> dict[int, dict[str, np.ndarray]]:
    """Four studio cameras around the capture area, about 5 m away at 1.5 m height, with
    Human3.6M-like intrinsics (f ~ 1145 px, c ~ (512, 515) at full size)."""
    out = {}
    target = np.array([0.0, 0.0, 900.0])
    for cam, (angle, f, c) in enumerate([(45, (1145.0, 1143.8), (512.5, 515.5)),
                                         (135, (1149.7, 1147.6), (508.8, 508.1)),
                                         (-45, (1149.1, 1148.8), (519.8, 501.4)),
                                         (-135, (1145.5, 1144.8), (514.9, 501.9))], start=1):
        a = np.deg2rad(angle)
        centre = np.array([5000.0 * np.cos(a), 5000.0 * np.sin(a), 1500.0])
        R, t = look_at(centre, target)
        out[cam] = {"R": R, "t": t, "f": np.array(f) / SCALE, "c": np.array(c) / SCALE}
    return out


def smpl_world(subject: int, subaction: int, frames: int) -> dict[str, np.ndarray]:
    """Known world-frame SMPL parameters of a short motion: pose (F, 72), shape (F, 10), trans
    (F, 3) metres. The root turns SMPL's y-up body into Human3.6M's z-up world and walks a
    little; subject 1's shape changes from frame to frame (fits are per frame)."""
    rng = np.random.default_rng(100 * subject + subaction)
    t = np.arange(frames)[:, None]
    base = rng.normal(scale=0.15, size=(1, 69))
    body = base + 0.1 * np.sin(0.3 * t + rng.uniform(0, 6, (1, 69)))
    yaw = rng.uniform(-np.pi, np.pi) + 0.05 * t[:, 0]
    upright = Rotation.from_euler("x", np.pi / 2)            # SMPL's y up -> the world's z up
    root = (Rotation.from_euler("z", yaw[:, None]) * upright).as_rotvec()
    shape = np.tile(rng.normal(scale=0.5, size=(1, 10)), (frames, 1))
    if subject == 1:
        shape = shape + 0.05 * np.sin(0.5 * t)
    trans = np.column_stack([0.2 + 0.01 * t[:, 0], -0.1 + 0.005 * t[:, 0],
                             np.full(frames, 0.9)])
    return {"pose": np.concatenate([root, body], axis=1), "shape": shape, "trans": trans}


def folder(subject: int, subaction: int, cam: int) -> str:
    return f"s_{subject:02d}_act_{ACTION:02d}_subact_{subaction:02d}_ca_{cam:02d}"


@dataclass
class H36MSet:
    """What the set was built from: per (subject, subaction, cam, frame) the annotated joints
    in camera mm (`joints_cam`) and pixels (`pixels`); per (subject, subaction) the fits and
    world SMPL joints (m); the cameras."""

    root: Path
    cams: dict[int, dict[str, np.ndarray]]
    joints_cam: dict[tuple, np.ndarray] = field(default_factory=dict)
    pixels: dict[tuple, np.ndarray] = field(default_factory=dict)
    smpl: dict[tuple, dict[str, np.ndarray]] = field(default_factory=dict)
    smpl_joints_world: dict[tuple, np.ndarray] = field(default_factory=dict)


def write_h36m_set(root: Path, body, subjects: dict[str, list[int]] = SUBJECTS,
                   subactions: tuple[int, ...] = (1,)) -> H36MSet:
    """Write the set under `root` (images/, annotations/) posed with `body` (a BodyModel)."""
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    cams = cameras()
    built = H36MSet(root, cams)
    for subject in sorted(s for group in subjects.values() for s in group):
        images, annotations, joints_json, fits_json = [], [], {}, {}
        for subaction in subactions:
            params = smpl_world(subject, subaction, FRAMES)
            built.smpl[(subject, subaction)] = params
            with torch.no_grad():
                out = body(torch.from_numpy(params["pose"]), torch.from_numpy(params["shape"]),
                           torch.from_numpy(params["trans"]))
            world_mm = out.joints_h36m.double().numpy() * 1000.0        # (F, 17, 3)
            built.smpl_joints_world[(subject, subaction)] = out.joints.double().numpy()
            joints_json.setdefault(str(ACTION), {})[str(subaction)] = {
                str(f): world_mm[f].tolist() for f in range(FRAMES)}
            fits_json.setdefault(str(ACTION), {})[str(subaction)] = {
                str(f): {"pose": params["pose"][f].tolist(), "shape": params["shape"][f].tolist(),
                         "trans": params["trans"][f].tolist()}
                for f in range(FRAMES) if f not in NO_FIT.get(subject, [])}
            for cam, p in cams.items():
                name = folder(subject, subaction, cam)
                (root / "images" / name).mkdir(parents=True, exist_ok=True)
                for f in range(FRAMES):
                    cam_mm = world_mm[f] @ p["R"].T + p["t"]
                    uv = p["f"] * cam_mm[:, :2] / cam_mm[:, 2:] + p["c"]
                    built.joints_cam[(subject, subaction, cam, f)] = cam_mm
                    built.pixels[(subject, subaction, cam, f)] = uv
                    file_name = f"{name}/{name}_{f + 1:06d}.jpg"           # 1-based
                    image = np.full((SIZE, SIZE, 3), 90, np.uint8)
                    for x, y in uv:
                        cv2.circle(image, (int(round(x)), int(round(y))), 2, (40, 200, 240), -1)
                    cv2.imwrite(str(root / "images" / file_name), image)
                    if GAP.get(subject) == (cam, f):
                        continue
                    image_id = len(images)
                    images.append({"id": image_id, "file_name": file_name, "width": SIZE,
                                   "height": SIZE, "subject": subject,
                                   "action_name": ACTION_NAME, "action_idx": ACTION,
                                   "subaction_idx": subaction, "cam_idx": cam, "frame_idx": f,
                                   "cam_param": {k: v.tolist() for k, v in p.items()}})
                    lo, hi = uv.min(axis=0), uv.max(axis=0)
                    annotations.append({"id": image_id, "image_id": image_id,
                                        "bbox": [*lo.tolist(), *(hi - lo).tolist()],
                                        "keypoints_vis": [True] * 17})
        prefix = root / "annotations" / f"Human36M_subject{subject}"
        fit_name = "smpl_param" if subject in OLD_FIT_NAME else "SMPL_NeuralAnnot"
        for suffix, content in (
                ("data", {"images": images, "annotations": annotations}),
                ("camera", {str(c): {k: v.tolist() for k, v in p.items()}
                            for c, p in cams.items()}),
                ("joint_3d", joints_json), (fit_name, fits_json)):
            Path(f"{prefix}_{suffix}.json").write_text(json.dumps(content))
    return built
