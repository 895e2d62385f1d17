"""Reader for 3DPW (real or our synthetic copy, same layout).

Layout (see the project reference, section 5)::

    <root>/imageFiles/<sequence>/image_%05d.jpg
    <root>/sequenceFiles/{train,validation,test}/<sequence>.pkl

Each pickle is a Python-2 dict (load with encoding='latin1'): per-actor lists `poses` (N,72),
`trans` (N,3), `betas` (10 or 300), `poses2d` (N,3,18), `campose_valid` (N,), `genders`, ...;
shared `sequence`, `img_frame_ids` (N,), `cam_poses` (N,4,4) world->camera, `cam_intrinsics`
(3,3). Pickles are loaded only through the restricted unpickler (plain numpy data; anything that
tries to import other globals is refused), and every field used is checked: a bad file gives a
DataError naming the file and the field, e.g. ``x.pkl: poses[1]: expected (N,72) with N=939,
got (939, 69)``.

Camera-frame SMPL: 3DPW poses are in world coordinates. SMPL rotates the global orientation about
the pelvis joint J0, and J0 depends on the betas, so moving a body into the camera frame is *not*
"rotate global_orient, transform trans as a point": with cam_poses = [R | t],

    v_cam = R (R_go (v - J0) + J0 + trans) + t
          = (R R_go) (v - J0) + J0 + [R (J0 + trans) + t - J0]

so global_orient_cam = R R_go and trans_cam = R (J0 + trans) + t - J0 (`camera_frame_smpl`).
The simplest exact route for vertices is world vertices from the body model, then
`world_to_camera`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from stdformer.io import DataError
from stdformer.safe_loading import NUMPY_GLOBALS, safe_load_pickle

SPLITS = ("train", "validation", "test")
IMAGE_DIR, SEQUENCE_DIR = "imageFiles", "sequenceFiles"
IMAGE_PATTERN = "image_{:05d}.jpg"
PER_ACTOR_KEYS = ("poses", "trans", "betas", "poses2d", "campose_valid")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass
class Track:
    """One annotated actor of one sequence (N frames); other layouts' readers (h36m.py,
    mpi_inf_3dhp.py) give their tracks in this form too.

    image_paths: N paths; img_frame_ids (N,) int; poses (N,72) world axis-angle; trans (N,3);
    betas (10,) or (N,10) per frame; poses2d (N,18,3) COCO-18 (x, y, confidence) in pixels;
    campose_valid (N,) bool;
    cam_poses (N,4,4) world->camera; intrinsics (3,3); gender 'm'/'f' (or 'n');
    num_actors in the sequence; pkl_path the sequence file (the annotation file of other
    layouts). Other layouts may add: camera (the camera number, 0 for 3DPW), joints_h36m_cam
    (N,17,3) annotated H36M-17 joints in the camera frame in metres (the targets then use
    them instead of the ones regressed from the mesh), skip_masks {reason: (N,) bool} frames
    that are not supervised, with the report's skip reason, and has_mesh False for a
    joints-only track (mpi_inf_3dhp.py: no body model fit; poses, trans and betas are zeros,
    the targets come from joints_h36m_cam alone and the loss's mesh terms skip its frames).
    """

    sequence: str
    actor: int
    split: str
    image_paths: list[Path]
    img_frame_ids: np.ndarray
    poses: np.ndarray
    trans: np.ndarray
    betas: np.ndarray
    poses2d: np.ndarray
    campose_valid: np.ndarray
    cam_poses: np.ndarray
    intrinsics: np.ndarray
    gender: str
    num_actors: int = 1
    pkl_path: Path | None = None  # the sequence file, for error messages
    camera: int = 0
    joints_h36m_cam: np.ndarray | None = None
    skip_masks: dict[str, np.ndarray] = field(default_factory=dict)
    has_mesh: bool = True

    def __len__(self) -> int:
        return len(self.img_frame_ids)


# ----------------------------------------------------------------------------------------------
# Reading and validating one sequence file


def _array(path, data, key, index=None):
    name = key if index is None else f"{key}[{index}]"
    value = data[key] if index is None else data[key][index]
    if isinstance(value, (list, tuple)):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        raise DataError(path, f"expected a numeric array, got {type(value).__name__}"
                        f"{'' if not isinstance(value, np.ndarray) else ' of ' + str(value.dtype)}",
                        field=name)
    return value, name


def _check_shape(path, name, value, expected, n):
    """expected: tuple with 'N' for the frame count, ints elsewhere, None for 'any'."""
    want = tuple(n if e == "N" else e for e in expected)
    ok = value.ndim == len(want) and all(w is None or w == s for w, s in zip(want, value.shape))
    if not ok:
        text = ",".join("?" if e is None else str(e) for e in expected)
        with_n = f" with N={n}" if "N" in expected else ""
        got = ",".join(str(s) for s in value.shape)
        raise DataError(path, f"expected ({text}){with_n}, got ({got})", field=name)


def _check_finite(path, name, value):
    if not np.isfinite(value).all():
        bad = np.argwhere(~np.isfinite(value))[0]
        raise DataError(path, f"contains NaN or inf (first at index {tuple(int(i) for i in bad)})",
                        field=name)


def read_sequence(pkl_path: str | Path) -> dict:
    """Load and validate one 3DPW sequence pickle.

    Returns a dict with: sequence (str), img_frame_ids (N,) int64, cam_poses (N,4,4) float64,
    cam_intrinsics (3,3) float64, and per-actor lists poses (N,72), trans (N,3), betas (10,),
    poses2d (N,3,18) (non-finite entries zeroed: treated as undetected), campose_valid (N,) bool,
    genders (str). Raises DataError naming the file and field on any problem.
    """
    path = Path(pkl_path)
    data = safe_load_pickle(path, NUMPY_GLOBALS)
    if not isinstance(data, dict):
        raise DataError(path, f"expected a dict at the top level, got {type(data).__name__}")
    required = ("sequence", "img_frame_ids", "cam_poses", "cam_intrinsics", *PER_ACTOR_KEYS)
    for key in required:
        if key not in data:
            raise DataError(path, "missing key", field=key)

    sequence = data["sequence"]
    if isinstance(sequence, bytes):
        sequence = sequence.decode("latin1")
    if not isinstance(sequence, str) or not _SAFE_NAME.match(sequence) or sequence in (".", ".."):
        raise DataError(path, f"expected a plain sequence name, got {sequence!r}", field="sequence")

    frame_ids, name = _array(path, data, "img_frame_ids")
    if frame_ids.ndim != 1 or frame_ids.dtype.kind == "f" and not (
            np.isfinite(frame_ids).all() and (frame_ids == np.round(frame_ids)).all()):
        raise DataError(path, f"expected (N,) integers, got {frame_ids.dtype} "
                        f"{tuple(frame_ids.shape)}", field=name)
    frame_ids = frame_ids.astype(np.int64)
    if (frame_ids < 0).any():
        raise DataError(path, "negative frame id", field=name)
    n = len(frame_ids)
    if n == 0:
        raise DataError(path, "sequence has no frames", field=name)

    cam_poses, name = _array(path, data, "cam_poses")
    _check_shape(path, name, cam_poses, ("N", 4, 4), n)
    _check_finite(path, name, cam_poses)
    intrinsics, name = _array(path, data, "cam_intrinsics")
    _check_shape(path, name, intrinsics, (3, 3), n)
    _check_finite(path, name, intrinsics)

    out = {"sequence": sequence, "img_frame_ids": frame_ids,
           "cam_poses": cam_poses.astype(np.float64),
           "cam_intrinsics": intrinsics.astype(np.float64)}

    num_actors = None
    for key in PER_ACTOR_KEYS:
        if not isinstance(data[key], (list, tuple)) or len(data[key]) == 0:
            raise DataError(path, f"expected a non-empty list (one entry per actor), got "
                            f"{type(data[key]).__name__}", field=key)
        if num_actors is None:
            num_actors = len(data[key])
        elif len(data[key]) != num_actors:
            raise DataError(path, f"has {len(data[key])} actors but poses has {num_actors}",
                            field=key)
    shapes = {"poses": ("N", 72), "trans": ("N", 3), "poses2d": ("N", 3, 18),
              "campose_valid": ("N",)}
    for key in PER_ACTOR_KEYS:
        arrays = []
        for i in range(num_actors):
            value, name = _array(path, data, key, i)
            if key == "betas":
                if value.ndim != 1 or value.shape[0] < 10:
                    raise DataError(path, f"expected (10,) or longer, got {tuple(value.shape)}",
                                    field=name)
                value = value[:10]
                _check_finite(path, name, value)
            else:
                _check_shape(path, name, value, shapes[key], n)
            if key in ("poses", "trans"):
                _check_finite(path, name, value)
            if key == "poses2d":
                value = np.where(np.isfinite(value).all(axis=1, keepdims=True), value, 0.0)
            if key == "campose_valid":
                value = value.astype(bool)
            else:
                value = value.astype(np.float64)
            arrays.append(value)
        out[key] = arrays

    genders = data.get("genders", ["n"] * num_actors)
    if not isinstance(genders, (list, tuple)) or len(genders) != num_actors:
        raise DataError(path, f"expected a list of {num_actors} strings", field="genders")
    out["genders"] = []
    for i, g in enumerate(genders):
        g = g.decode("latin1") if isinstance(g, bytes) else g
        if not isinstance(g, str) or g[:1].lower() not in ("m", "f", "n"):
            raise DataError(path, f"expected 'm', 'f' or 'n', got {g!r}", field=f"genders[{i}]")
        out["genders"].append(g[:1].lower())
    return out


# ----------------------------------------------------------------------------------------------
# Iterating a split


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError("<split>", f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}",
                        field="split")
    return split


def list_sequences(root: str | Path, split: str) -> list[Path]:
    """Sorted sequence pickles of one split: <root>/sequenceFiles/<split>/*.pkl."""
    folder = Path(root) / SEQUENCE_DIR / check_split(split)
    if not folder.is_dir():
        raise DataError(folder, "directory not found (is this a 3DPW root?)")
    return sorted(folder.glob("*.pkl"))


def image_path(root: str | Path, sequence: str, frame_id: int) -> Path:
    return Path(root) / IMAGE_DIR / sequence / IMAGE_PATTERN.format(int(frame_id))


def tracks_from_sequence(root: str | Path, split: str, pkl_path: str | Path,
                         check_images: bool = True) -> list[Track]:
    """One Track per actor of one sequence file."""
    seq = read_sequence(pkl_path)
    folder = image_path(root, seq["sequence"], 0).parent
    paths = [folder / IMAGE_PATTERN.format(int(i)) for i in seq["img_frame_ids"]]
    if check_images:
        for p in paths:
            if not p.is_file():
                raise DataError(p, f"image of sequence {seq['sequence']} not found",
                                field="img_frame_ids")
    num_actors = len(seq["poses"])
    return [
        Track(sequence=seq["sequence"], actor=a, split=split, image_paths=list(paths),
              img_frame_ids=seq["img_frame_ids"].copy(), poses=seq["poses"][a],
              trans=seq["trans"][a], betas=seq["betas"][a],
              poses2d=np.ascontiguousarray(seq["poses2d"][a].transpose(0, 2, 1)),
              campose_valid=seq["campose_valid"][a], cam_poses=seq["cam_poses"],
              intrinsics=seq["cam_intrinsics"], gender=seq["genders"][a], num_actors=num_actors,
              pkl_path=Path(pkl_path))
        for a in range(num_actors)
    ]


def iter_tracks(root: str | Path, split: str, check_images: bool = True) -> Iterator[Track]:
    """Yield one Track per actor for every sequence of `split`, in sorted sequence order."""
    for pkl in list_sequences(root, split):
        yield from tracks_from_sequence(root, split, pkl, check_images)


# ----------------------------------------------------------------------------------------------
# Camera-frame helpers


def world_to_camera(points: np.ndarray, cam_poses: np.ndarray) -> np.ndarray:
    """points (N,P,3) world, cam_poses (N,4,4) world->camera -> (N,P,3) camera frame."""
    R, t = cam_poses[:, :3, :3], cam_poses[:, :3, 3]
    return np.einsum("nij,npj->npi", R, points) + t[:, None, :]


def camera_frame_smpl(poses: np.ndarray, trans: np.ndarray, cam_poses: np.ndarray,
                      pelvis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Express world SMPL parameters in the camera frame, exactly.

    poses (N,72) world, trans (N,3), cam_poses (N,4,4), pelvis (3,): the rest-pose pelvis joint
    J0 of this body's betas (body model joints[0] at zero pose, zero trans). Returns
    (poses_cam (N,72) with the global orientation rotated by R, trans_cam (N,3)) such that the
    body model gives the same vertices as world vertices mapped through cam_poses.
    """
    R, t = cam_poses[:, :3, :3], cam_poses[:, :3, 3]
    global_orient = Rotation.from_matrix(R) * Rotation.from_rotvec(poses[:, :3])
    poses_cam = poses.copy()
    poses_cam[:, :3] = global_orient.as_rotvec()
    pelvis = np.asarray(pelvis, np.float64)
    trans_cam = np.einsum("nij,nj->ni", R, trans + pelvis) + t - pelvis
    return poses_cam, trans_cam
