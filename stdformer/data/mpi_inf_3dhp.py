"""Reader for MPI-INF-3DHP (joints only: the dataset has no SMPL fits).

Layout (project reference, section 8; checked against the public loaders of SPIN
`datasets/preprocess/mpi_inf_3dhp.py`, VIBE / TCMR / GLoT `lib/data_utils/mpii3d_utils.py`)::

    <root>/S1/Seq1/annot.mat                MATLAB v5: cell arrays, one cell per camera
    <root>/S1/Seq1/camera.calibration       text: per camera `name`, `size`, `intrinsic`, ...
    <root>/S1/Seq1/imageFrames/video_0/frame_000001.jpg
    <root>/mpi_inf_3dhp_test_set/TS1/annot_data.mat     MATLAB v7.3 (HDF5)
    <root>/mpi_inf_3dhp_test_set/TS1/imageSequence/img_000001.jpg

Training recordings (S1-S8, Seq1-2): `annot2` / `annot3` are cells of 14 cameras (scipy reads a
(14, 1) object array), each (frames, 56) pixels / (frames, 84) mm in that camera's frame, one row
per video frame, the 28 joints' coordinates interleaved (x1 y1 x2 y2 ...: the loaders reshape
a row to (28, 2) / (28, 3)); `cameras` lists the cells' camera numbers. The frames are the
field's extraction of `imageSequence/video_{cam}.avi` (SPIN's: `imageFrames/video_{cam}/
frame_%06d.jpg`, 1-based: annotation row r is frame_{r+1}). The field trains on cameras 0, 1, 2,
4, 5, 6, 7, 8 (the chest-high and head-high ring; 3 and 9-13 look from above or below).
Intrinsics come from `camera.calibration` (`intrinsic`: a 4x4 row-major matrix whose top-left
3x3 is K; `size`: width height).

Test set (TS1-6, one camera each): h5py sees MATLAB's column-major arrays with the axes
reversed: `annot2` (N, 1, 17, 2) pixels, `annot3` (N, 1, 17, 3) mm in the camera frame,
`univ_annot3` (the height-normalised skeleton the PCK protocol scores), `valid_frame` (N, 1),
`bb_crop`. Frame i is imageSequence/img_{i+1:06d}.jpg. The test set ships no calibration file:
K is fitted to the annotations themselves (annot2 is the pinhole projection of annot3), by
least squares over the valid frames.

Joints: the 28 training joints and the 17 test joints are mapped to the project's H36M-17
order (reference section 4: pelvis, R hip/knee/ankle, L hip/knee/ankle, spine, neck, head (the
28's `head`, H36M's nose slot), head top, L shoulder/elbow/wrist, R shoulder/elbow/wrist), as
SPIN's `joints17_idx` pick them (in its own order). Left is the subject's left in both sets.

Tracks: per subject, sequence and camera (test: per TS) the frames whose 0-based row is a
multiple of `every` (`test_every`), one run: every row of a video is annotated. Targets:
`joints_h36m_cam` from annot3 (metres), relative to the annotated pelvis; no body model fit
(`Track.has_mesh` False: pose and betas are zeros and the loss's mesh terms skip the frames).
The crop boxes come from annot2 in COCO-18 order (the head top stands in for eyes and ears),
confident where the joint is inside the image (training recordings: `size`) and in front of the
camera. Test frames with `valid_frame` 0 stay in their track, unsupervised, counted under the
skip reason `invalid_frame`. Bad input is a DataError naming the file and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from stdformer.data.h36m import COCO18_FROM_H36M
from stdformer.data.threedpw import Track
from stdformer.io import DataError

TRAIN_ANNOTATION, CALIBRATION = "annot.mat", "camera.calibration"
TRAIN_FRAMES = "imageFrames/video_{camera}/frame_{number:06d}.jpg"   # number: row + 1
TEST_DIR, TEST_ANNOTATION = "mpi_inf_3dhp_test_set", "annot_data.mat"
TEST_FRAMES = "imageSequence/img_{number:06d}.jpg"                    # number: row + 1
SKIP_REASONS = ("invalid_frame",)
# H36M-17 (reference section 4) <- the 28 joints of annot.mat (0 spine3, 1 spine4, 2 spine2,
# 3 spine, 4 pelvis, 5 neck, 6 head, 7 head top, 8 L clavicle, 9-12 L shoulder/elbow/wrist/hand,
# 13 R clavicle, 14-17 R shoulder/elbow/wrist/hand, 18-22 L hip/knee/ankle/foot/toe, 23-27 R ...)
H36M_FROM_MPI28 = np.array([4, 23, 24, 25, 18, 19, 20, 3, 5, 6, 7, 9, 10, 11, 14, 15, 16])
# H36M-17 <- the 17 joints of annot_data.mat (0 head top, 1 neck, 2-4 R shoulder/elbow/wrist,
# 5-7 L shoulder/elbow/wrist, 8-10 R hip/knee/ankle, 11-13 L hip/knee/ankle, 14 pelvis,
# 15 spine, 16 head)
H36M_FROM_MPI_TEST17 = np.array([14, 8, 9, 10, 11, 12, 13, 15, 1, 16, 0, 5, 6, 7, 2, 3, 4])


def recording_dir(root: str | Path, subject: int, sequence: int) -> Path:
    return Path(root) / f"S{int(subject)}" / f"Seq{int(sequence)}"


def ts_dir(root: str | Path, number: int) -> Path:
    return Path(root) / TEST_DIR / f"TS{int(number)}"


def _missing(path: Path) -> DataError:
    return DataError(path, "file not found (an MPI-INF-3DHP annotation file the dataset's "
                     "subjects and sequences need)")


def _finite(path: Path, key: str, arr: np.ndarray) -> np.ndarray:
    if not np.isfinite(arr).all():
        raise DataError(path, "contains NaN or inf", field=key)
    return arr


# --------------------------------------------------------------------------------------------
# Training recordings: annot.mat (MATLAB v5) and camera.calibration


def read_calibration(path: Path, cameras: list[int]) -> dict[int, dict[str, np.ndarray]]:
    """{camera: {K (3, 3), size (2,) width height}} of the cameras asked for."""
    if not path.is_file():
        raise _missing(path)
    fields: dict[int, dict[str, list[str]]] = {}
    current = None
    for line in path.read_text(errors="replace").splitlines():
        tokens = line.split()
        if len(tokens) >= 2 and tokens[0] == "name" and tokens[1].isdigit():
            current = int(tokens[1])
            fields[current] = {}
        elif tokens and current is not None:
            fields[current][tokens[0]] = tokens[1:]
    out = {}
    for cam in cameras:
        if cam not in fields:
            raise DataError(path, f"camera {cam} is absent (the file has cameras "
                            f"{sorted(fields)})", field=f"name {cam}")
        entry = {}
        for key, count in (("intrinsic", 16), ("size", 2)):
            try:
                values = np.array([float(v) for v in fields[cam][key]])
            except KeyError:
                raise DataError(path, "missing key", field=f"camera {cam}.{key}") from None
            except ValueError:
                raise DataError(path, "expected numbers", field=f"camera {cam}.{key}") from None
            if values.shape != (count,):
                raise DataError(path, f"expected {count} numbers, got {values.size}",
                                field=f"camera {cam}.{key}")
            entry[key] = _finite(path, f"camera {cam}.{key}", values)
        out[cam] = {"K": entry["intrinsic"].reshape(4, 4)[:3, :3], "size": entry["size"]}
    return out


def _cells(path: Path, mat: dict[str, Any], key: str) -> list[Any]:
    if key not in mat:
        raise DataError(path, "missing key", field=key)
    value = mat[key]
    if not isinstance(value, np.ndarray) or value.dtype != object:
        raise DataError(path, f"expected a cell array (one cell per camera), got "
                        f"{getattr(value, 'dtype', type(value).__name__)}", field=key)
    return list(value.ravel())


def read_train_annotations(path: Path, cameras: list[int]
                           ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{camera: (pixels (N, 28, 2), camera-frame mm (N, 28, 3))} of the cameras asked for."""
    if not path.is_file():
        raise _missing(path)
    try:  # univ_annot3 is not read: the 2D/3D pair is annot2/annot3
        mat = scipy.io.loadmat(path, variable_names=["annot2", "annot3", "cameras"])
    except (ValueError, TypeError, OSError, NotImplementedError,
            scipy.io.matlab.MatReadError) as e:
        raise DataError(path, f"not a MATLAB v5 file: {e}") from None
    annot2, annot3 = _cells(path, mat, "annot2"), _cells(path, mat, "annot3")
    if "cameras" in mat:
        numbers = [int(c) for c in np.asarray(mat["cameras"]).ravel()]
    else:
        numbers = list(range(len(annot2)))
    for key, cells in (("annot2", annot2), ("annot3", annot3)):
        if len(cells) != len(numbers):
            raise DataError(path, f"{len(cells)} cells for {len(numbers)} cameras {numbers}",
                            field=key)
    out = {}
    for cam in cameras:
        if cam not in numbers:
            raise DataError(path, f"camera {cam} is absent (the file has cameras {numbers})",
                            field="cameras")
        pos = numbers.index(cam)
        arrays = []
        for key, cells, dims in (("annot2", annot2, 2), ("annot3", annot3, 3)):
            where = f"{key}[{pos}]"
            arr = np.asarray(cells[pos])
            if arr.dtype.kind not in "iuf" or arr.ndim != 2 or arr.shape[1] != 28 * dims:
                raise DataError(path, f"expected (frames, {28 * dims}) numbers, got "
                                f"{arr.dtype} {arr.shape}", field=where)
            arrays.append(_finite(path, where, arr.astype(np.float64)).reshape(-1, 28, dims))
        if len(arrays[0]) != len(arrays[1]):
            raise DataError(path, f"{len(arrays[0])} frames in annot2 but {len(arrays[1])} in "
                            "annot3", field=f"annot3[{pos}]")
        out[cam] = (arrays[0], arrays[1])
    return out


# --------------------------------------------------------------------------------------------
# Test set: annot_data.mat (MATLAB v7.3 = HDF5)


def read_test_annotations(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixels (N, 17, 2), camera-frame mm (N, 17, 3), valid_frame (N,) bool)."""
    if not path.is_file():
        raise _missing(path)
    try:
        mat = h5py.File(path, "r")
    except OSError as e:
        raise DataError(path, f"not a MATLAB v7.3 (HDF5) file: {e}") from None
    with mat:
        arrays = {}
        for key in ("annot2", "annot3", "valid_frame"):
            if key not in mat or not isinstance(mat[key], h5py.Dataset):
                raise DataError(path, "missing key", field=key)
            arrays[key] = np.asarray(mat[key])
    n = len(arrays["annot2"])
    for key, dims in (("annot2", 2), ("annot3", 3)):
        arr = arrays[key]
        if arr.dtype.kind not in "iuf" or arr.shape != (n, 1, 17, dims):
            raise DataError(path, f"expected shape (frames, 1, 17, {dims}) with frames={n}, "
                            f"got {arr.dtype} {arr.shape}", field=key)
        arrays[key] = _finite(path, key, arr.astype(np.float64)[:, 0])
    valid = arrays["valid_frame"]
    if valid.size != n or valid.ndim > 2:
        raise DataError(path, f"expected {n} flags, got shape {valid.shape}",
                        field="valid_frame")
    return arrays["annot2"], arrays["annot3"], valid.reshape(-1) != 0


def fit_intrinsics(path: Path, pixels: np.ndarray, camera_mm: np.ndarray) -> np.ndarray:
    """K (3, 3) with pixels = f * X[:2] / X[2] + c, least squares over the joints given
    (pixels (M, 2), camera_mm (M, 3) in front of the camera)."""
    z = camera_mm[:, 2]
    front = z > 1e-6
    if front.sum() < 2:
        raise DataError(path, "fewer than 2 valid joints in front of the camera: cannot "
                        "recover the intrinsics", field="annot3")
    K = np.eye(3)
    for axis in (0, 1):
        design = np.column_stack([camera_mm[front, axis] / z[front], np.ones(front.sum())])
        (K[axis, axis], K[axis, 2]), *_ = np.linalg.lstsq(design, pixels[front, axis],
                                                          rcond=None)
    return K


# --------------------------------------------------------------------------------------------
# Tracks


def _track(name: str, split: str, camera: int, rows: np.ndarray, pixels: np.ndarray,
           camera_mm: np.ndarray, K: np.ndarray, size: np.ndarray | None, paths: list[Path],
           annotation: Path, skip: dict[str, np.ndarray]) -> Track:
    """One run of sampled frames (rows (N,) 0-based) of one camera as a joints-only Track;
    pixels (N, 17, 2) and camera_mm (N, 17, 3) in H36M-17 order."""
    n = len(rows)
    seen = camera_mm[..., 2] > 1e-6
    if size is not None:
        seen &= ((pixels >= 0) & (pixels < size)).all(axis=-1)
    keypoints = np.concatenate([pixels, seen[..., None].astype(np.float64)], axis=-1)
    return Track(sequence=name, actor=0, split=split, image_paths=paths,
                 img_frame_ids=rows.astype(np.int64), poses=np.zeros((n, 72)),
                 trans=np.zeros((n, 3)), betas=np.zeros(10),
                 poses2d=np.ascontiguousarray(keypoints[:, COCO18_FROM_H36M]),
                 campose_valid=np.ones(n, bool), cam_poses=np.tile(np.eye(4), (n, 1, 1)),
                 intrinsics=K, gender="n", num_actors=1, pkl_path=annotation, camera=camera,
                 joints_h36m_cam=camera_mm / 1000.0, skip_masks=skip, has_mesh=False)


def _check_images(paths: list[Path], rows: np.ndarray, annotation: Path, key: str) -> None:
    for row, p in zip(rows, paths, strict=True):
        if not p.is_file():
            raise DataError(p, f"image of an annotated frame not found ({annotation})",
                            field=f"{key}[{row}]")


def recording_tracks(root: str | Path, subject: int, sequence: int, split: str, every: int,
                     cameras: list[int], check_images: bool = True) -> list[Track]:
    """One track per camera of one training recording S{subject}/Seq{sequence}."""
    folder = recording_dir(root, subject, sequence)
    annotation = folder / TRAIN_ANNOTATION
    annotations = read_train_annotations(annotation, cameras)
    calibration = read_calibration(folder / CALIBRATION, cameras)
    tracks = []
    for cam in cameras:
        pixels, camera_mm = annotations[cam]
        rows = np.arange(0, len(pixels), every)
        paths = [folder / TRAIN_FRAMES.format(camera=cam, number=r + 1) for r in rows]
        if check_images:
            _check_images(paths, rows, annotation, f"annot2[camera {cam}]")
        tracks.append(_track(f"S{subject}_Seq{sequence}_video_{cam}", split, cam, rows,
                             pixels[rows][:, H36M_FROM_MPI28],
                             camera_mm[rows][:, H36M_FROM_MPI28], calibration[cam]["K"],
                             calibration[cam]["size"], paths, annotation,
                             {"invalid_frame": np.zeros(len(rows), bool)}))
    return tracks


def ts_tracks(root: str | Path, number: int, split: str, every: int,
                check_images: bool = True) -> list[Track]:
    """The one track of test sequence TS{number}."""
    folder = ts_dir(root, number)
    annotation = folder / TEST_ANNOTATION
    pixels, camera_mm, valid = read_test_annotations(annotation)
    rows = np.arange(0, len(pixels), every)
    K = fit_intrinsics(annotation, pixels[valid].reshape(-1, 2), camera_mm[valid].reshape(-1, 3))
    paths = [folder / TEST_FRAMES.format(number=r + 1) for r in rows]
    if check_images:
        _check_images(paths, rows, annotation, "annot2")
    return [_track(f"TS{number}", split, 0, rows, pixels[rows][:, H36M_FROM_MPI_TEST17],
                   camera_mm[rows][:, H36M_FROM_MPI_TEST17], K, None, paths, annotation,
                   {"invalid_frame": ~valid[rows]})]


def split_tracks(root: str | Path, dataset, split: str, check_images: bool = True
                 ) -> list[Track]:
    """The tracks of one split (datasets.MPIINF3DHPDataset): the training recordings of the
    subjects `dataset.subjects[split]` names, or the test sequences of
    `dataset.test_sequences[split]`."""
    if split in dataset.subjects:
        return [track for subject in dataset.subjects[split]
                for sequence in dataset.sequences
                for track in recording_tracks(root, subject, sequence, split, dataset.every,
                                              dataset.cameras, check_images)]
    return [track for number in dataset.test_sequences[split]
            for track in ts_tracks(root, number, split, dataset.test_every, check_images)]
