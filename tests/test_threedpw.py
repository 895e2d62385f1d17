"""3DPW reader: layout, validation of every field used, refusal of unsafe pickles, camera frame."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from stdformer.data import threedpw
from stdformer.data.threedpw import (
    SPLITS, camera_frame_smpl, iter_tracks, list_sequences, read_sequence, world_to_camera,
)
from stdformer.io import DataError
from stdformer.safe_loading import UnsafePickleError

N = 5
FRAME_IDS = np.array([3, 4, 5, 7, 9])


def _record(num_actors=2, n=N, sequence="courtyard_test_01"):
    rng = np.random.default_rng(0)
    cam = np.tile(np.eye(4), (n, 1, 1))
    cam[:, :3, 3] = [0.1, 0.2, 4.0]
    return {
        "sequence": sequence,
        "img_frame_ids": FRAME_IDS[:n].copy(),
        "cam_poses": cam,
        "cam_intrinsics": np.array([[1960.0, 0, 540], [0, 1960, 960], [0, 0, 1]]),
        "poses": [rng.normal(0, 0.2, (n, 72)) for _ in range(num_actors)],
        "trans": [rng.normal(0, 1, (n, 3)) for _ in range(num_actors)],
        "betas": [rng.normal(0, 1, 300) for _ in range(num_actors)],  # real 3DPW: 10 or 300
        "poses2d": [rng.uniform(0, 500, (n, 3, 18)) for _ in range(num_actors)],
        "jointPositions": [rng.normal(0, 1, (n, 72)) for _ in range(num_actors)],
        "campose_valid": [np.array([1, 1, 0, 1, 1][:n], dtype=np.int64) for _ in range(num_actors)],
        "genders": ["m", "f"][:num_actors],
    }


def _write(root: Path, split: str, record: dict, name=None, images=True) -> Path:
    name = name or record["sequence"]
    path = root / "sequenceFiles" / split / f"{name}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(record, f, protocol=2)
    if images:
        folder = root / "imageFiles" / record["sequence"]
        folder.mkdir(parents=True, exist_ok=True)
        for i in record["img_frame_ids"]:
            (folder / f"image_{int(i):05d}.jpg").write_bytes(b"jpeg")
    return path


def test_iter_tracks_yields_one_track_per_actor(tmp_path):
    rec = _record()
    _write(tmp_path, "test", rec)
    tracks = list(iter_tracks(tmp_path, "test"))
    assert [t.actor for t in tracks] == [0, 1]
    t = tracks[1]
    assert t.sequence == "courtyard_test_01" and t.split == "test" and t.num_actors == 2
    assert t.gender == "f" and len(t) == N
    assert t.image_paths == [tmp_path / "imageFiles" / "courtyard_test_01" / f"image_{i:05d}.jpg"
                             for i in FRAME_IDS]
    np.testing.assert_array_equal(t.img_frame_ids, FRAME_IDS)
    np.testing.assert_array_equal(t.poses, rec["poses"][1])
    np.testing.assert_array_equal(t.betas, rec["betas"][1][:10])
    assert t.poses2d.shape == (N, 18, 3)
    np.testing.assert_array_equal(t.poses2d, rec["poses2d"][1].transpose(0, 2, 1))
    assert t.campose_valid.dtype == bool and t.campose_valid.tolist() == [1, 1, 0, 1, 1]
    assert t.cam_poses.shape == (N, 4, 4) and t.intrinsics.shape == (3, 3)
    assert t.pkl_path == tmp_path / "sequenceFiles" / "test" / "courtyard_test_01.pkl"


def test_list_sequences_is_sorted_and_per_split(tmp_path):
    for name in ("b_seq", "a_seq", "c_seq"):
        _write(tmp_path, "train", _record(sequence=name))
    _write(tmp_path, "validation", _record(sequence="v_seq"))
    assert [p.stem for p in list_sequences(tmp_path, "train")] == ["a_seq", "b_seq", "c_seq"]
    assert [t.sequence for t in iter_tracks(tmp_path, "validation")] == ["v_seq", "v_seq"]


def test_unknown_split_lists_the_valid_ones(tmp_path):
    with pytest.raises(DataError) as e:
        list(iter_tracks(tmp_path, "val"))
    assert e.value.field == "split"
    for split in SPLITS:
        assert split in str(e.value)


def test_missing_split_directory_is_named(tmp_path):
    with pytest.raises(DataError, match="sequenceFiles/train"):
        list_sequences(tmp_path, "train")


def test_python2_style_strings_load(tmp_path):
    rec = _record()
    rec["sequence"] = b"courtyard_test_01"
    rec["genders"] = [b"male", b"female"]
    path = _write(tmp_path, "test", rec, images=False)
    seq = read_sequence(path)
    assert seq["sequence"] == "courtyard_test_01" and seq["genders"] == ["m", "f"]


def test_truncated_pickle_is_a_data_error_naming_the_file(tmp_path):
    path = _write(tmp_path, "test", _record(), images=False)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError) as e:
        read_sequence(path)
    assert str(path) in str(e.value) and "truncated" in str(e.value)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    rec = _record()
    rec["poses"][0] = _RunsCode(marker)
    path = _write(tmp_path, "test", rec, images=False)
    with pytest.raises(UnsafePickleError) as e:
        read_sequence(path)
    assert str(path) in str(e.value) and "system" in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("field,index,mutate,message", [
    ("poses", 1, lambda a: np.where(np.arange(72) == 5, np.nan, a), "NaN"),
    ("trans", 0, lambda a: np.where(np.arange(3) == 2, np.inf, a), "NaN or inf"),
    ("poses", 1, lambda a: a[:, :69], "expected (N,72) with N=5, got (5,69)"),
    ("poses2d", 0, lambda a: a[:, :2], "expected (N,3,18) with N=5, got (5,2,18)"),
    ("campose_valid", 1, lambda a: a[:3], "expected (N) with N=5, got (3)"),
    ("betas", 0, lambda a: a[:6], "expected (10,) or longer"),
])
def test_bad_fields_are_named(tmp_path, field, index, mutate, message):
    rec = _record()
    rec[field][index] = mutate(rec[field][index])
    path = _write(tmp_path, "test", rec, images=False)
    with pytest.raises(DataError) as e:
        read_sequence(path)
    assert e.value.field == f"{field}[{index}]"
    assert str(e.value).startswith(f"{path}: {field}[{index}]: ")
    assert message in str(e.value)


@pytest.mark.parametrize("field,mutate", [
    ("cam_poses", lambda r: r["cam_poses"][:, :3]),
    ("cam_intrinsics", lambda r: np.eye(4)),
    ("img_frame_ids", lambda r: np.array([[1, 2]])),
    ("sequence", lambda r: "../../etc"),
    ("genders", lambda r: ["x", "m"]),
    ("poses", lambda r: r["poses"][0]),  # not a per-actor list
    ("trans", lambda r: r["trans"][:1]),  # actor count differs
])
def test_bad_shared_fields_are_named(tmp_path, field, mutate):
    rec = _record()
    rec[field] = mutate(rec)
    path = _write(tmp_path, "test", rec, images=False)
    with pytest.raises(DataError) as e:
        read_sequence(path)
    assert (e.value.field or "").startswith(field) and str(path) in str(e.value)


def test_missing_key_is_named(tmp_path):
    rec = _record()
    del rec["cam_poses"]
    path = _write(tmp_path, "test", rec, images=False)
    with pytest.raises(DataError, match="cam_poses: missing key"):
        read_sequence(path)


def test_missing_image_is_named(tmp_path):
    rec = _record()
    _write(tmp_path, "test", rec)
    missing = tmp_path / "imageFiles" / rec["sequence"] / "image_00007.jpg"
    missing.unlink()
    with pytest.raises(DataError, match="image_00007.jpg"):
        list(iter_tracks(tmp_path, "test"))
    assert len(list(iter_tracks(tmp_path, "test", check_images=False))) == 2


def test_camera_frame_smpl_reproduces_camera_vertices(synth_body):
    """Rotating global_orient by the extrinsics and moving the root about the betas-dependent
    pelvis gives exactly the world vertices mapped into the camera frame."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(1)
    n = 4
    poses = rng.normal(0, 0.3, (n, 72))
    trans = rng.normal(0, 1.0, (n, 3))
    betas = rng.normal(0, 1.0, 10)
    cam = np.tile(np.eye(4), (n, 1, 1))
    cam[:, :3, :3] = Rotation.from_rotvec(rng.normal(0, 1.0, (n, 3))).as_matrix()
    cam[:, :3, 3] = rng.normal(0, 2.0, (n, 3))

    def run(p, t):
        b = torch.as_tensor(np.tile(betas, (n, 1)), dtype=torch.float64)
        with torch.no_grad():
            out = synth_body(torch.as_tensor(p), b, torch.as_tensor(t))
        return out.vertices.double().numpy()

    with torch.no_grad():
        rest = synth_body(torch.zeros(1, 72), torch.as_tensor(betas[None], dtype=torch.float32))
    pelvis = rest.joints[0, 0].double().numpy()
    expected = world_to_camera(run(poses, trans), cam)
    poses_cam, trans_cam = camera_frame_smpl(poses, trans, cam, pelvis)
    np.testing.assert_allclose(run(poses_cam, trans_cam), expected, atol=2e-4)
    # Ignoring the pelvis offset (the common shortcut) is measurably wrong.
    naive = np.einsum("nij,nj->ni", cam[:, :3, :3], trans) + cam[:, :3, 3]
    assert np.abs(run(poses_cam, naive) - expected).max() > 0.01
    np.testing.assert_array_equal(poses_cam[:, 3:], poses[:, 3:])


def test_reader_reads_the_synthetic_copy(synth_root, synth_cfg):
    total = 0
    for split in SPLITS:
        tracks = list(threedpw.iter_tracks(synth_root, split))
        sequences = {t.sequence for t in tracks}
        assert len(sequences) == synth_cfg.sequences_per_split[split]
        total += len(tracks)
        for t in tracks:
            assert all(p.is_file() for p in t.image_paths)
            assert t.poses.shape == (len(t), 72) and t.poses2d.shape == (len(t), 18, 3)
    assert total > sum(synth_cfg.sequences_per_split.values())  # some two-actor sequences
