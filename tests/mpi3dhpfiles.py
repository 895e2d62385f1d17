"""A tiny MPI-INF-3DHP set built by hand, as the published files look, for the reader's tests
(independent of stdformer/data/mpi_inf_3dhp.py).

Training recordings `S{s}/Seq{q}/`: `annot.mat` (MATLAB v5, scipy.io.savemat) holding cell
arrays of 14 cameras (a 14 x 1 cell: scipy reads it back as a (14, 1) object array) `annot2`
(frames, 56) pixels, `annot3` / `univ_annot3` (frames, 84) mm, each row the 28 joints'
coordinates one joint after another (x1 y1 x2 y2 ...), plus `cameras` (1 x 14) and `frames`
(frames x 1); `camera.calibration` in the Skeletool text format (a header line, then per camera
`name`, `sensor`, `size`, `animated`, `intrinsic` (4x4 row-major), `extrinsic` (4x4 row-major,
world mm -> camera mm), `radial`); frames as the field extracts them from
`imageSequence/video_{cam}.avi`: `imageFrames/video_{cam}/frame_%06d.jpg`, 1-based.

Test set `mpi_inf_3dhp_test_set/TS{n}/annot_data.mat`: MATLAB v7.3, an HDF5 file behind a
512-byte MATLAB header, each variable a dataset with a `MATLAB_class` attribute, stored
column-major so that h5py reads MATLAB's 2 x 17 x 1 x N `annot2` as (N, 1, 17, 2) (and
`valid_frame`, 1 x N in MATLAB, as (N, 1)); frames `imageSequence/img_%06d.jpg`, 1-based.

The joints are a known skeleton (world mm, y up) walking and turning, seen by known cameras
(2048 x 2048 frames scaled down by SCALE, the focal length and principal point with them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import h5py
import numpy as np
import scipy.io

SCALE = 16                        # 2048 x 2048 frames at 1/16: 128 x 128
SIZE = 2048 // SCALE
NUM_CAMERAS = 14
FRAMES = 20                       # rows of each training recording's annotation
TEST_FRAMES = 18
EVERY = 2
SUBJECTS = {"train": [1], "validation": [2]}
SEQUENCES = [1]
TEST_SEQUENCES = {"test": [1]}
FIELD_CAMERAS = [0, 1, 2, 4, 5, 6, 7, 8]   # the field's training cameras
INVALID_TEST_FRAMES = [4]                 # test rows whose valid_frame is 0

# The 28 joints of annot.mat, in order (MPI-INF-3DHP's `mpii_get_joints`), and a standing
# skeleton in world mm (y up; the subject's left at +x, facing -z).
MPI28 = {
    "spine3": (0, 1250, 0), "spine4": (0, 1350, 0), "spine2": (0, 1150, 0),
    "spine": (0, 1050, 0), "pelvis": (0, 930, 0), "neck": (0, 1500, 0),
    "head": (0, 1600, -40), "head_top": (0, 1750, 0), "left_clavicle": (80, 1440, 0),
    "left_shoulder": (180, 1420, 0), "left_elbow": (210, 1150, 20),
    "left_wrist": (220, 900, -40), "left_hand": (225, 820, -50),
    "right_clavicle": (-80, 1440, 0), "right_shoulder": (-180, 1420, 0),
    "right_elbow": (-210, 1150, 20), "right_wrist": (-220, 900, -40),
    "right_hand": (-225, 820, -50), "left_hip": (100, 900, 0), "left_knee": (110, 500, -20),
    "left_ankle": (110, 80, 0), "left_foot": (110, 30, -100), "left_toe": (110, 10, -150),
    "right_hip": (-100, 900, 0), "right_knee": (-110, 500, -20), "right_ankle": (-110, 80, 0),
    "right_foot": (-110, 30, -100), "right_toe": (-110, 10, -150),
}
MPI28_NAMES = list(MPI28)
# The 17 joints of the test set's annot_data.mat, in order.
TEST17_NAMES = ["head_top", "neck", "right_shoulder", "right_elbow", "right_wrist",
                "left_shoulder", "left_elbow", "left_wrist", "right_hip", "right_knee",
                "right_ankle", "left_hip", "left_knee", "left_ankle", "pelvis", "spine", "head"]
# The project's H36M-17 order (reference section 4), by the names above.
H36M17_NAMES = ["pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
                "left_ankle", "spine", "neck", "head", "head_top", "left_shoulder", "left_elbow",
                "left_wrist", "right_shoulder", "right_elbow", "right_wrist"]


def look_at(centre: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World -> camera (R, t mm) of a camera at `centre` looking at `target`; world y up,
    camera x right, y down, z forward."""
    forward = (target - centre) / np.linalg.norm(target - centre)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return R, -R @ centre


def studio_cameras(seed: int) -> list[dict[str, np.ndarray]]:
    """14 cameras on a ring about 4 m away, at chest, head and overhead heights, each with its
    own intrinsics (K at full resolution scaled by 1/SCALE)."""
    rng = np.random.default_rng(seed)
    out = []
    for cam in range(NUM_CAMERAS):
        angle = 2 * np.pi * cam / NUM_CAMERAS
        height = (1000.0, 1700.0, 2600.0)[cam % 3]
        centre = np.array([4000.0 * np.sin(angle), height, -4000.0 * np.cos(angle)])
        R, t = look_at(centre, np.array([0.0, 900.0, 0.0]))
        f = rng.uniform(1450, 1550, 2) / SCALE
        c = (1024.0 + rng.uniform(-30, 30, 2)) / SCALE
        K = np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]])
        out.append({"R": R, "t": t, "K": K})
    return out


def motion(seed: int, frames: int, names: list[str]) -> np.ndarray:
    """(frames, len(names), 3) world mm: the skeleton turning and walking a little, each joint
    jittered (known values, so a wrong joint order shows)."""
    rng = np.random.default_rng(seed)
    skeleton = np.array([MPI28[n] for n in names], np.float64)
    out = np.empty((frames, len(names), 3))
    for f in range(frames):
        yaw = 0.3 + 0.08 * f
        turn = np.array([[np.cos(yaw), 0.0, np.sin(yaw)], [0.0, 1.0, 0.0],
                         [-np.sin(yaw), 0.0, np.cos(yaw)]])
        out[f] = skeleton @ turn.T + [15.0 * f - 100.0, 0.0, 10.0 * f] + rng.normal(
            scale=8.0, size=skeleton.shape)
    return out


def project(camera_mm: np.ndarray, K: np.ndarray) -> np.ndarray:
    uvw = camera_mm @ K.T
    return uvw[..., :2] / uvw[..., 2:]


def _image(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((SIZE, SIZE, 3), 70, np.uint8)
    for x, y in pixels:
        cv2.circle(image, (round(x), round(y)), 2, (30, 220, 250), -1)
    cv2.imwrite(str(path), image)


def calibration_text(cameras: list[dict[str, np.ndarray]]) -> str:
    """The Skeletool camera.calibration text (full-resolution numbers scaled by 1/SCALE)."""
    lines = ["Skeletool Camera Calibration File V1.0"]
    for cam, p in enumerate(cameras):
        intrinsic = np.eye(4)
        intrinsic[:3, :3] = p["K"]
        extrinsic = np.eye(4)
        extrinsic[:3, :3], extrinsic[:3, 3] = p["R"], p["t"]
        lines += [f"name          {cam}", "  sensor      10 10", f"  size        {SIZE} {SIZE}",
                  "  animated    0",
                  "  intrinsic   " + " ".join(f"{v:.10g}" for v in intrinsic.ravel()) + " ",
                  "  extrinsic   " + " ".join(f"{v:.10g}" for v in extrinsic.ravel()) + " ",
                  "  radial      0"]
    return "\n".join(lines) + "\n"


def cells(arrays: list[np.ndarray]) -> np.ndarray:
    """A MATLAB cell array, one cell per camera, 14 x 1 as in annot.mat."""
    out = np.empty((len(arrays), 1), dtype=object)
    for i, arr in enumerate(arrays):
        out[i, 0] = arr
    return out


def write_v73(path: Path, variables: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 MAT-file: HDF5 behind a 512-byte header. `variables` are given as h5py
    shows them (MATLAB's dimensions reversed, as its column-major storage makes them)."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            dataset = f.create_dataset(name, data=np.asarray(value, np.float64))
            dataset.attrs["MATLAB_class"] = np.bytes_("double")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 " \
             b"HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM")


@dataclass
class MPI3DHPSet:
    """What the set was built from: per (subject, sequence, camera, row) and per (TS, row)
    the 28 / 17 annotated joints in camera mm and pixels; the cameras."""

    root: Path
    cameras: dict[tuple[int, int], list[dict[str, np.ndarray]]] = field(default_factory=dict)
    test_K: dict[int, np.ndarray] = field(default_factory=dict)
    camera_mm: dict[tuple, np.ndarray] = field(default_factory=dict)
    pixels: dict[tuple, np.ndarray] = field(default_factory=dict)


def write_recording(root: Path, built: MPI3DHPSet, subject: int, sequence: int) -> None:
    folder = root / f"S{subject}" / f"Seq{sequence}"
    folder.mkdir(parents=True, exist_ok=True)
    cams = studio_cameras(10 * subject + sequence)
    built.cameras[(subject, sequence)] = cams
    world = motion(100 * subject + sequence, FRAMES, MPI28_NAMES)           # (F, 28, 3)
    annot2, annot3, univ = [], [], []
    for cam, p in enumerate(cams):
        camera_mm = world @ p["R"].T + p["t"]
        pixels = project(camera_mm, p["K"])
        annot3.append(camera_mm.reshape(FRAMES, 84))
        annot2.append(pixels.reshape(FRAMES, 56))
        univ.append((0.95 * camera_mm).reshape(FRAMES, 84))   # a rescaled skeleton
        for row in range(FRAMES):
            built.camera_mm[(subject, sequence, cam, row)] = camera_mm[row]
            built.pixels[(subject, sequence, cam, row)] = pixels[row]
            if cam in FIELD_CAMERAS:
                _image(folder / "imageFrames" / f"video_{cam}" / f"frame_{row + 1:06d}.jpg",
                       pixels[row])
    scipy.io.savemat(folder / "annot.mat", {
        "annot2": cells(annot2), "annot3": cells(annot3), "univ_annot3": cells(univ),
        "cameras": np.arange(NUM_CAMERAS)[None], "frames": np.arange(FRAMES)[:, None]})
    (folder / "camera.calibration").write_text(calibration_text(cams))


def write_test_sequence(root: Path, built: MPI3DHPSet, number: int) -> None:
    folder = root / "mpi_inf_3dhp_test_set" / f"TS{number}"
    (folder / "imageSequence").mkdir(parents=True, exist_ok=True)
    p = studio_cameras(1000 + number)[1]
    built.test_K[number] = p["K"]
    world = motion(5000 + number, TEST_FRAMES, TEST17_NAMES)                # (F, 17, 3)
    camera_mm = world @ p["R"].T + p["t"]
    pixels = project(camera_mm, p["K"])
    valid = np.ones(TEST_FRAMES)
    valid[INVALID_TEST_FRAMES] = 0
    for row in range(TEST_FRAMES):
        built.camera_mm[(number, row)] = camera_mm[row]
        built.pixels[(number, row)] = pixels[row]
        _image(folder / "imageSequence" / f"img_{row + 1:06d}.jpg", pixels[row])
    write_v73(folder / "annot_data.mat", {
        "annot2": pixels[:, None], "annot3": camera_mm[:, None],
        "univ_annot3": 0.95 * camera_mm[:, None], "valid_frame": valid[:, None]})


def write_mpi3dhp_set(root: Path) -> MPI3DHPSet:
    root = Path(root)
    built = MPI3DHPSet(root)
    for subject in sorted(s for group in SUBJECTS.values() for s in group):
        for sequence in SEQUENCES:
            write_recording(root, built, subject, sequence)
    for number in sorted(n for group in TEST_SEQUENCES.values() for n in group):
        write_test_sequence(root, built, number)
    return built
