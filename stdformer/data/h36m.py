"""Reader for Human3.6M in the NeuralAnnot / I2L-MeshNet layout (the public source of SMPL fits).

Layout (see the project reference, section 8)::

    <root>/images/s_09_act_02_subact_01_ca_04/s_09_act_02_subact_01_ca_04_000001.jpg
    <root>/annotations/Human36M_subject9_data.json         COCO-style images[] / annotations[]
    <root>/annotations/Human36M_subject9_camera.json       {"4": {R: 3x3, t: 3 (mm), f: 2, c: 2}}
    <root>/annotations/Human36M_subject9_joint_3d.json     [action][subaction][frame] -> 17x3 mm
    <root>/annotations/Human36M_subject9_SMPL_NeuralAnnot.json  (older name: _smpl_param.json)
                                                           [action][subaction][frame] ->
                                                           {pose: 72, shape: 10, trans: 3 (m)}

JSON keys are strings ("2"); `frame_idx` is 0-based, the number in the image name 1-based (we
open the `file_name` data.json gives). Conventions as I2L-MeshNet's Human36M.py uses them:
a camera point is `R @ X_world + t` in mm (`world2cam`; t is not the camera centre), pixels
`f * X[:2] / X[2] + c`; the fits are in the world frame with trans in metres, so the camera
pose of a frame is [R | t / 1000] and the body is moved into the camera exactly as a 3DPW body
(threedpw.camera_frame_smpl: root orientation rotated by R, pelvis correction on trans).

Tracks: per subject, action, subaction and camera, the frames with frame_idx % every == 0;
a run of consecutive sampled frames is one track (actor = the run's number in its folder, 0
unless data.json skips frames), named after its image folder. Targets: the H36M-17 joints are
the annotated mocap joints (`joints_h36m_cam`, what protocols P1/P2 compare against); SMPL
joints, pose and betas come from the fit (pseudo ground truth). A sampled frame without a fit
stays in its track as an unsupervised frame, counted under the skip reason `no_smpl_fit`. The
2D keypoints the crop boxes come from are the annotated joints projected with the camera, in
COCO-18 order (the head top stands in for the eyes and ears, so the box spans the head),
confident where data.json's `keypoints_vis` says the joint is visible.

Each subject's JSON is read once; joint_3d and the fits keep only the sampled frames while
they are parsed (the real joint_3d files are hundreds of MB). Bad input is a DataError naming
the file and the key.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from stdformer.data.threedpw import Track
from stdformer.io import DataError

IMAGE_DIR, ANNOTATION_DIR = "images", "annotations"
SMPL_SUFFIXES = ("SMPL_NeuralAnnot", "smpl_param")  # the current name first
SKIP_REASONS = ("no_smpl_fit",)
# COCO-18 (OpenPose: nose, neck, R shoulder/elbow/wrist, L shoulder/elbow/wrist, R hip/knee/
# ankle, L hip/knee/ankle, R eye, L eye, R ear, L ear) <- H36M-17 (stdformer reference, sec. 4).
COCO18_FROM_H36M = np.array([9, 8, 14, 15, 16, 11, 12, 13, 1, 2, 3, 4, 5, 6, 10, 10, 10, 10])
IMAGE_KEYS = ("id", "file_name", "action_idx", "subaction_idx", "cam_idx", "frame_idx")


def subject_file(root: str | Path, subject: int, kind: str) -> Path:
    return Path(root) / ANNOTATION_DIR / f"Human36M_subject{int(subject)}_{kind}.json"


def sequence_name(subject: int, action: int, subaction: int, camera: int) -> str:
    """The image folder name, e.g. s_09_act_02_subact_01_ca_04."""
    return f"s_{subject:02d}_act_{action:02d}_subact_{subaction:02d}_ca_{camera:02d}"


# --------------------------------------------------------------------------------------------
# Reading one subject's JSON files


def _keep_sampled(every: int):
    """json object_pairs_hook: a [frame] level mapping (digit keys, leaf values: lists or fit
    dicts) keeps only frames with frame % every == 0, so a huge file never is whole in memory."""
    def hook(pairs: list[tuple[str, Any]]) -> dict:
        frame_level = pairs and all(k.isdigit() for k, _ in pairs) and not all(
            isinstance(v, dict) and all(k.isdigit() for k in v) for _, v in pairs)
        if frame_level:
            return {k: v for k, v in pairs if int(k) % every == 0}
        return dict(pairs)
    return hook


def read_json(path: Path, every: int | None = None) -> Any:
    """Parse one annotation file with the standard library (DataError when missing or not
    JSON); with `every`, frame-keyed levels keep only the sampled frames."""
    if not path.is_file():
        raise DataError(path, "file not found (a Human3.6M annotation file the dataset's "
                        "subjects need)")
    hook = None if every is None else _keep_sampled(every)
    try:
        with open(path, "rb") as f:
            return json.load(f, object_pairs_hook=hook)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON: {e}") from e


def _numbers(path: Path, key: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """`value` as a finite float64 array of `shape`, else a DataError naming `key`."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(path, f"expected numbers of shape {shape}, got "
                        f"{type(value).__name__}", field=key) from None
    if arr.shape != shape:
        raise DataError(path, f"expected shape {shape}, got {arr.shape}", field=key)
    if not np.isfinite(arr).all():
        raise DataError(path, "contains NaN or inf", field=key)
    return arr


def _mapping(path: Path, value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise DataError(path, f"expected a mapping, got {type(value).__name__}", field=key)
    return value


def read_cameras(path: Path, cameras: list[int]) -> dict[int, dict[str, np.ndarray]]:
    """{camera: {R (3,3), t (3,) mm, f (2,), c (2,)}} of the cameras asked for."""
    data = _mapping(path, read_json(path), "<top level>")
    out = {}
    for cam in cameras:
        if str(cam) not in data:
            raise DataError(path, f"camera {cam} is absent (the file has cameras "
                            f"{sorted(data)})", field=str(cam))
        entry = _mapping(path, data[str(cam)], str(cam))
        out[cam] = {}
        for key, shape in (("R", (3, 3)), ("t", (3,)), ("f", (2,)), ("c", (2,))):
            if key not in entry:
                raise DataError(path, "missing key", field=f"{cam}.{key}")
            out[cam][key] = _numbers(path, f"{cam}.{key}", entry[key], shape)
    return out


def read_images(path: Path, every: int, cameras: list[int]) -> list[dict[str, Any]]:
    """The sampled images of data.json (frame_idx % every == 0, a camera asked for), each with
    its `keypoints_vis` (17,) bool from annotations[] (all True when it has none)."""
    data = _mapping(path, read_json(path), "<top level>")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DataError(path, f"expected a list, got {type(data.get(key)).__name__}",
                            field=key)
    visible = {}
    for i, ann in enumerate(data["annotations"]):
        ann = _mapping(path, ann, f"annotations[{i}]")
        if "keypoints_vis" in ann:
            vis = np.asarray(ann["keypoints_vis"]).reshape(-1)
            if vis.shape != (17,):
                raise DataError(path, f"expected 17 flags, got {vis.shape}",
                                field=f"annotations[{i}].keypoints_vis")
            visible[ann.get("image_id")] = vis.astype(bool)
    images = []
    for i, image in enumerate(data["images"]):
        image = _mapping(path, image, f"images[{i}]")
        for key in IMAGE_KEYS:
            value = image.get(key)
            wrong = (not isinstance(value, str) if key == "file_name"
                     else not isinstance(value, int) or isinstance(value, bool) or value < 0)
            if wrong:
                want = "a file name" if key == "file_name" else "an integer >= 0"
                raise DataError(path, f"expected {want}, got {value!r}", field=f"images[{i}].{key}")
        name = Path(image["file_name"])
        if name.is_absolute() or ".." in name.parts:
            raise DataError(path, f"expected a path inside images/, got {image['file_name']!r}",
                            field=f"images[{i}].file_name")
        if image["frame_idx"] % every or image["cam_idx"] not in cameras:
            continue
        images.append({**{k: image[k] for k in IMAGE_KEYS}, "index": i,
                       "keypoints_vis": visible.get(image["id"], np.ones(17, bool))})
    return images


def _frame_entry(path: Path, data: dict, action: int, subaction: int, frame: int):
    """data[action][subaction][frame] or None; a level that is not a mapping is an error."""
    node: Any = data
    key = ""
    for part in (action, subaction, frame):
        node = _mapping(path, node, key or "<top level>").get(str(part))
        key = f"{key}.{part}" if key else str(part)
        if node is None:
            return None, key
    return node, key


def _fit(path: Path, entry: Any, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    entry = _mapping(path, entry, key)
    out = []
    for name, size in (("pose", 72), ("shape", 10), ("trans", 3)):
        if name not in entry:
            raise DataError(path, "missing key", field=f"{key}.{name}")
        out.append(_numbers(path, f"{key}.{name}", np.asarray(entry[name]).reshape(-1)
                            if isinstance(entry[name], list) else entry[name], (size,)))
    return tuple(out)


def _smpl_file(root: Path, subject: int) -> Path:
    for suffix in SMPL_SUFFIXES:
        path = subject_file(root, subject, suffix)
        if path.is_file():
            return path
    return subject_file(root, subject, SMPL_SUFFIXES[0])  # read_json names it as missing


# --------------------------------------------------------------------------------------------
# Tracks


def _runs(frames: list[int], every: int) -> list[list[int]]:
    """Positions of `frames` (sorted) split where a sampled frame is missing."""
    runs: list[list[int]] = []
    for i, frame in enumerate(frames):
        if runs and frame - frames[runs[-1][-1]] == every:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _track(root: Path, subject: int, split: str, key: tuple[int, int, int], rows: list[dict],
           actor: int, camera: dict[str, np.ndarray], joints: dict, fits: dict,
           files: dict[str, Path], check_images: bool) -> Track:
    """One run of sampled frames of one camera as a Track (N frames)."""
    action, subaction, cam = key
    n = len(rows)
    R, t, f, c = camera["R"], camera["t"], camera["f"], camera["c"]
    world = np.empty((n, 17, 3))  # mm
    poses, trans, betas = np.zeros((n, 72)), np.zeros((n, 3)), np.zeros((n, 10))
    no_fit = np.zeros(n, bool)
    for i, row in enumerate(rows):
        frame = row["frame_idx"]
        entry, where = _frame_entry(files["joint_3d"], joints, action, subaction, frame)
        if entry is None:
            raise DataError(files["joint_3d"], "no 3D joints for an annotated frame "
                            f"(images[{row['index']}] of {files['data'].name})", field=where)
        world[i] = _numbers(files["joint_3d"], where, entry, (17, 3))
        fit, where = _frame_entry(files["smpl"], fits, action, subaction, frame)
        if fit is None:
            no_fit[i] = True
            trans[i] = world[i, 0] / 1000.0  # the body near the mocap pelvis; not supervised
        else:
            poses[i], betas[i], trans[i] = _fit(files["smpl"], fit, where)
    paths = [root / IMAGE_DIR / row["file_name"] for row in rows]
    if check_images:
        for row, p in zip(rows, paths, strict=True):
            if not p.is_file():
                raise DataError(p, f"image of an annotated frame not found ({files['data']})",
                                field=f"images[{row['index']}].file_name")
    cam_pose = np.eye(4)
    cam_pose[:3, :3], cam_pose[:3, 3] = R, t / 1000.0  # world (m) -> camera (m)
    joints_cam = (world @ R.T + t) / 1000.0  # (N,17,3) m, I2L-MeshNet's world2cam
    intrinsics = np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]])
    z = np.maximum(joints_cam[..., 2:], 1e-6)
    uv = joints_cam[..., :2] / z * f + c  # (N,17,2) pixels
    vis = np.stack([row["keypoints_vis"] for row in rows]) & (joints_cam[..., 2] > 1e-6)
    keypoints = np.concatenate([uv, vis[..., None].astype(np.float64)], axis=-1)
    return Track(sequence=sequence_name(subject, action, subaction, cam), actor=actor,
                 split=split, image_paths=paths,
                 img_frame_ids=np.array([row["frame_idx"] for row in rows], np.int64),
                 poses=poses, trans=trans, betas=betas,
                 poses2d=np.ascontiguousarray(keypoints[:, COCO18_FROM_H36M]),
                 campose_valid=np.ones(n, bool), cam_poses=np.tile(cam_pose, (n, 1, 1)),
                 intrinsics=intrinsics, gender="n", num_actors=1, pkl_path=files["data"],
                 camera=cam, joints_h36m_cam=joints_cam, skip_masks={"no_smpl_fit": no_fit})


def subject_tracks(root: str | Path, subject: int, split: str, every: int, cameras: list[int],
                   check_images: bool = True) -> list[Track]:
    """Every track of one subject (its four JSON files read once each)."""
    root = Path(root)
    files = {"data": subject_file(root, subject, "data"),
             "camera": subject_file(root, subject, "camera"),
             "joint_3d": subject_file(root, subject, "joint_3d"),
             "smpl": _smpl_file(root, subject)}
    images = read_images(files["data"], every, cameras)
    camera_params = read_cameras(files["camera"], cameras)
    joints = _mapping(files["joint_3d"], read_json(files["joint_3d"], every), "<top level>")
    fits = _mapping(files["smpl"], read_json(files["smpl"], every), "<top level>")
    groups: dict[tuple[int, int, int], list[dict]] = defaultdict(list)
    for row in images:
        groups[(row["action_idx"], row["subaction_idx"], row["cam_idx"])].append(row)
    tracks = []
    for key in sorted(groups):
        rows = sorted(groups[key], key=lambda r: r["frame_idx"])
        for actor, run in enumerate(_runs([r["frame_idx"] for r in rows], every)):
            tracks.append(_track(root, subject, split, key, [rows[i] for i in run], actor,
                                 camera_params[key[2]], joints, fits, files, check_images))
    return tracks


def split_tracks(root: str | Path, dataset, split: str, check_images: bool = True
                 ) -> list[Track]:
    """The tracks of one split: every subject `dataset.subjects[split]` names
    (datasets.H36MDataset)."""
    return [track for subject in dataset.subjects[split]
            for track in subject_tracks(root, subject, split, dataset.every, dataset.cameras,
                                        check_images)]
