"""MPI-INF-3DHP (joints only) through preprocess: the stored targets land on the annotated 3D and
2D joints (the 28 -> 17 selection in the project's H36M-17 order), the field's cameras, the
subject / test-set splits, no mesh targets, the skip counts, and one test per kind of bad input
(issue 25, item 8). The set is tests/mpi3dhpfiles.py's, built by hand."""

import json
import shutil

import h5py
import numpy as np
import pytest
import scipy.io
import webdataset as wds
from mpi3dhpfiles import (
    EVERY,
    FIELD_CAMERAS,
    FRAMES,
    H36M17_NAMES,
    INVALID_TEST_FRAMES,
    MPI28_NAMES,
    SEQUENCES,
    SUBJECTS,
    TEST17_NAMES,
    TEST_FRAMES,
    TEST_SEQUENCES,
    write_mpi3dhp_set,
    write_v73,
)

from stdformer.data import crops, shards
from stdformer.data import manifest as mf
from stdformer.data.datasets import MPIINF3DHPDataset, dataset_config
from stdformer.data.preprocess import preprocess
from stdformer.data.preprocess_config import PreprocessConfig
from stdformer.io import DataError

CLIP = 4
# float32 storage of metres (root_cam ~4 m: 5e-7 m steps) and of the crop affine: far under a
# hundredth of a millimetre or pixel.
TOL_MM, TOL_PX = 0.01, 0.01
TRAIN_PICK = [MPI28_NAMES.index(n) for n in H36M17_NAMES]     # by name, not the reader's table
TEST_PICK = [TEST17_NAMES.index(n) for n in H36M17_NAMES]


def _cfg(**kw):
    return PreprocessConfig(**{"crop_size": 32, "clip_len": CLIP, "samples_per_shard": 4,
                               "workers": 1, "executor": "serial", **kw})


def _dataset(root, **kw):
    return MPIINF3DHPDataset(**{"root": str(root), "subjects": SUBJECTS, "sequences": SEQUENCES,
                                "test_sequences": TEST_SEQUENCES, "every": EVERY, **kw})


def _clips(out_dir):
    for shard in sorted(out_dir.glob("*/shard-*.tar")):
        for sample in wds.WebDataset(str(shard), shardshuffle=False):
            yield shards.decode_clip(sample)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return write_mpi3dhp_set(tmp_path_factory.mktemp("mpi3dhp") / "mpi_inf_3dhp")


@pytest.fixture(scope="module")
def shard_dir(built, synth_body_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi3dhp_shards") / "mpi3dhp"
    preprocess(_dataset(built.root), synth_body_dir, out, _cfg(), progress=False,
               name="mpi3dhp")
    return out


def _truth(built, meta):
    """(camera mm (S, 17, 3), pixels (S, 17, 2)) the set was built from, in H36M-17 order."""
    rows = meta["frame_ids"]
    if meta["sequence"].startswith("TS"):
        number = int(meta["sequence"][2:])
        keys, pick = [(number, r) for r in rows], TEST_PICK
    else:
        subject_part, sequence_part = meta["sequence"].split("_")[:2]     # S1, Seq1
        subject, sequence = int(subject_part[1:]), int(sequence_part[3:])
        keys = [(subject, sequence, meta["camera"], r) for r in rows]
        pick = TRAIN_PICK
    return (np.stack([built.camera_mm[k][pick] for k in keys]),
            np.stack([built.pixels[k][pick] for k in keys]))


def test_stored_targets_reproject_onto_the_annotated_joints(built, shard_dir):
    """root_cam + joints_h36m are annot3's joints (camera mm) picked in H36M-17 order;
    projected with the stored intrinsics (test set: fitted to the annotations) and mapped back
    through the crop affine from joints2d they are annot2's pixels. No mesh targets."""
    checked = {"train": 0, "validation": 0, "test": 0}
    for clip in _clips(shard_dir):
        t, meta = clip["targets"], clip["meta"]
        truth_mm, truth_px = _truth(built, meta)
        root = t["root_cam"].double().numpy()[:, None]                      # (S, 1, 3) m
        cam_mm = (t["joints_h36m"].double().numpy() + root) * 1000.0
        np.testing.assert_allclose(cam_mm, truth_mm, atol=TOL_MM)
        np.testing.assert_allclose(t["joints_h36m"][:, 0].numpy(), 0.0, atol=1e-7)  # pelvis
        K = t["intrinsics"].double().numpy()
        uvw = cam_mm @ K.T
        np.testing.assert_allclose(uvw[..., :2] / uvw[..., 2:], truth_px, atol=TOL_PX)
        affine = t["affine"].double().numpy()
        inverse = np.stack([np.linalg.inv(np.vstack([a, [0, 0, 1]]))[:2] for a in affine])
        back = crops.apply_affine(t["joints2d"][..., :2].double().numpy(), inverse)
        np.testing.assert_allclose(back, truth_px, atol=TOL_PX)
        assert not t["has_mesh"].any()
        assert not t["pose"].any() and not t["betas"].any() and not t["joints3d"].any()
        checked[meta["split"]] += len(meta["frame_ids"])
    assert min(checked.values()) > 0


def test_splits_cameras_sampling_and_the_manifest_source(built, shard_dir):
    manifest = mf.read_manifest(shard_dir)
    assert set(manifest["source"]) == {"mpi3dhp"}
    cameras = {split: set() for split in ("train", "validation", "test")}
    for split, sequence, camera in zip(manifest["split"], manifest["sequence"],
                                       manifest["camera"], strict=True):
        cameras[split].add(camera)
        if split == "test":
            assert sequence == "TS1" and camera == 0
        else:
            assert int(sequence.split("_")[0][1:]) in SUBJECTS[split]
            assert sequence.endswith(f"_video_{camera}")
    assert cameras["train"] == cameras["validation"] == set(FIELD_CAMERAS)
    for clip in _clips(shard_dir):
        ids = clip["meta"]["frame_ids"]
        every = 1 if clip["meta"]["split"] == "test" else EVERY
        assert all(f % every == 0 for f in ids) and np.all(np.diff(ids) == every)
    report = json.loads((shard_dir / "report.json").read_text())
    assert report["source"] == "mpi3dhp" and report["layout"] == "mpi_inf_3dhp"
    sampled = len(range(0, FRAMES, EVERY))
    assert report["splits"]["train"]["frames"] == len(FIELD_CAMERAS) * sampled
    assert report["splits"]["test"]["frames"] == TEST_FRAMES
    # the test set's valid_frame 0 rows: in their clips, not supervised, counted
    assert report["splits"]["test"]["skipped_frames"]["invalid_frame"] == len(
        INVALID_TEST_FRAMES)
    assert report["splits"]["test"]["valid_frames"] == TEST_FRAMES - len(INVALID_TEST_FRAMES)
    assert report["splits"]["train"]["valid_frames"] == len(FIELD_CAMERAS) * sampled


def test_the_params_entry_reads_as_the_layout(built):
    entry = {"layout": "mpi_inf_3dhp", "root": str(built.root), "subjects": SUBJECTS,
             "test_sequences": TEST_SEQUENCES, "every": EVERY}
    dataset = dataset_config({"datasets": {"mpi3dhp": entry}}, "mpi3dhp", "params.yaml")
    assert isinstance(dataset, MPIINF3DHPDataset)
    assert dataset.splits == ["train", "validation", "test"]
    assert dataset.cameras == FIELD_CAMERAS and dataset.sequences == [1, 2]
    bad = {**entry, "test_sequences": {"train": [1]}}
    with pytest.raises(DataError, match=r"params.yaml: datasets.mpi3dhp: test_sequences.train: "
                                        r"is in subjects too"):
        dataset_config({"datasets": {"mpi3dhp": bad}}, "mpi3dhp", "params.yaml")


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the key; nothing written


@pytest.fixture
def copy(built, tmp_path):
    root = tmp_path / "mpi_inf_3dhp"
    shutil.copytree(built.root, root)
    return root


def _fails(root, body_dir, out, match, dataset=None, **cfg):
    with pytest.raises(DataError, match=match) as err:
        preprocess(dataset or _dataset(root), body_dir, out, _cfg(**cfg), progress=False,
                   name="mpi3dhp")
    assert "\n" not in str(err.value) and not out.exists()


def _edit_annot(path, change):
    mat = scipy.io.loadmat(path)
    mat = {k: v for k, v in mat.items() if not k.startswith("__")}
    change(mat)
    scipy.io.savemat(path, mat)


def test_a_missing_annotation_file_is_named(copy, synth_body_dir, tmp_path):
    (copy / "S2" / "Seq1" / "annot.mat").unlink()
    _fails(copy, synth_body_dir, tmp_path / "out", r"S2/Seq1/annot.mat: file not found")
    (copy / "mpi_inf_3dhp_test_set" / "TS1" / "annot_data.mat").unlink()
    _fails(copy, synth_body_dir, tmp_path / "out2", r"TS1/annot_data.mat: file not found",
           dataset=_dataset(copy, subjects={"train": [1]}))


def test_wrong_shapes_are_named_with_their_key(copy, synth_body_dir, tmp_path):
    annot = copy / "S1" / "Seq1" / "annot.mat"
    _edit_annot(annot, lambda m: m["annot2"].__setitem__((4, 0), m["annot2"][4, 0][:, :54]))
    _fails(copy, synth_body_dir, tmp_path / "out",
           r"S1/Seq1/annot.mat: annot2\[4\]: expected \(frames, 56\) numbers, got float64 "
           r"\(20, 54\)")
    _edit_annot(annot, lambda m: m.update(annot3=m["annot3"][0, 0]))        # not a cell array
    _fails(copy, synth_body_dir, tmp_path / "out2",
           r"annot.mat: annot3: expected a cell array \(one cell per camera\)")
    test_file = copy / "mpi_inf_3dhp_test_set" / "TS1" / "annot_data.mat"
    with h5py.File(test_file, "r") as f:
        variables = {k: np.asarray(f[k]) for k in f}
    variables["annot3"] = variables["annot3"][:, :, :, :2]
    write_v73(test_file, variables)
    _fails(copy, synth_body_dir, tmp_path / "out3",
           r"TS1/annot_data.mat: annot3: expected shape \(frames, 1, 17, 3\) with frames=18, "
           r"got float64 \(18, 1, 17, 2\)", dataset=_dataset(copy, subjects={}))


def test_cameras_absent_from_the_files_are_named(copy, synth_body_dir, tmp_path):
    annot = copy / "S1" / "Seq1" / "annot.mat"
    _edit_annot(annot, lambda m: m.update(annot2=m["annot2"][:8], annot3=m["annot3"][:8],
                                          cameras=m["cameras"][:, :8]))
    _fails(copy, synth_body_dir, tmp_path / "out",
           r"S1/Seq1/annot.mat: cameras: camera 8 is absent \(the file has cameras "
           r"\[0, 1, 2, 3, 4, 5, 6, 7\]\)")
    calibration = copy / "S2" / "Seq1" / "camera.calibration"
    lines = calibration.read_text().splitlines()
    calibration.write_text("\n".join(lines[:1 + 7 * 5]) + "\n")              # cameras 0-4
    _fails(copy, synth_body_dir, tmp_path / "out2",
           r"S2/Seq1/camera.calibration: name 5: camera 5 is absent \(the file has cameras "
           r"\[0, 1, 2, 3, 4\]\)", dataset=_dataset(copy, subjects={"validation": [2]}))


def test_a_file_that_is_not_a_mat_file_is_named(copy, synth_body_dir, tmp_path):
    (copy / "S1" / "Seq1" / "annot.mat").write_bytes(b"not a MATLAB file at all" * 10)
    _fails(copy, synth_body_dir, tmp_path / "out", r"S1/Seq1/annot.mat: not a MATLAB v5 file")
    (copy / "mpi_inf_3dhp_test_set" / "TS1" / "annot_data.mat").write_bytes(b"\0" * 600)
    _fails(copy, synth_body_dir, tmp_path / "out2",
           r"TS1/annot_data.mat: not a MATLAB v7.3 \(HDF5\) file",
           dataset=_dataset(copy, subjects={}))


def test_missing_images_fail_or_are_counted_under_skip(copy, synth_body_dir, tmp_path):
    (copy / "S2" / "Seq1" / "imageFrames" / "video_5" / "frame_000005.jpg").unlink()  # row 4
    _fails(copy, synth_body_dir, tmp_path / "out",
           r"video_5/frame_000005.jpg: annot2\[camera 5\]\[4\]: image of an annotated frame "
           r"not found")
    report = preprocess(_dataset(copy), synth_body_dir, tmp_path / "skip",
                        _cfg(on_error="skip"), progress=False, name="mpi3dhp")
    assert report["splits"]["validation"]["skipped_frames"]["missing_image"] == 1
    assert report["splits"]["train"]["skipped_frames"]["missing_image"] == 0


# --------------------------------------------------------------------------------------------
# Training on a mix with the joints-only source


def test_training_on_a_mix_with_a_joints_only_source(train_data, built, tmp_path, monkeypatch):
    """A few steps on 3DPW + MPI-INF-3DHP: every loss finite, and the mesh terms provably not fed
    from the joints-only clips: their ground-truth meshes (posed from zero pose and betas) are
    replaced by NaN before the loss, which stays finite, with zero mesh terms on their batches
    and non-zero joint terms."""
    from trainkit import paths_in, tiny_model, tiny_train

    from stdformer.losses import LossConfig
    from stdformer.train import Tracking, steps, train

    body_dir, single = train_data
    parent = tmp_path / "shards"
    shutil.copytree(single, parent / "3dpw")
    preprocess(_dataset(built.root, test_sequences={}), body_dir, parent / "mpi3dhp",
               PreprocessConfig(crop_size=64, samples_per_shard=4, workers=1, executor="serial"),
               progress=False, name="mpi3dhp")
    real, seen = steps.compute_losses, []

    def poisoned(pred, target, cfg, mesh_info):
        target = dict(target)
        no_mesh = ~target["mesh_valid"]
        for level in ("coarse", "mid", "fine"):
            vertices = target[f"vertices_{level}"].clone()
            vertices[no_mesh] = float("nan")
            target[f"vertices_{level}"] = vertices
        total, terms = real(pred, target, cfg, mesh_info)
        seen.append((bool(no_mesh.all()), bool(no_mesh.any()), terms))
        return total, terms

    monkeypatch.setattr(steps, "compute_losses", poisoned)
    paths = paths_in(tmp_path / "run", (body_dir, parent))
    train(tiny_train(steps=4, checkpoint_every=4, joint_warmup_steps=0,
                     mix={"3dpw": 0.5, "mpi3dhp": 0.5}),
          tiny_model(), LossConfig(), paths, Tracking(uri=None), progress=False)
    joints_only = [terms for every, _, terms in seen if every]
    with_mesh = [terms for _, some, terms in seen if not some]
    assert len(joints_only) == len(with_mesh) == 2
    for terms in joints_only + with_mesh:
        assert np.isfinite(terms["total"])
    for terms in joints_only:
        assert terms["loss_vertices"] == 0.0 and terms["edge_gt"] == terms["normal"] == 0.0
        assert terms["joints3d_mesh"] > 0 and terms["joints3d_tokens"] > 0
    assert all(terms["loss_vertices"] > 0 for terms in with_mesh)
    metrics = json.loads(paths.metrics.read_text())
    assert np.isfinite(metrics["val/mpi3dhp/mpjpe"]) and metrics["val/mpi3dhp/frames"] > 0
    # no MPVPE against the zero-pose body: the joints-only source has none, the pooled one is
    # 3DPW's alone
    assert np.isnan(metrics["val/mpi3dhp/mpvpe"]) and np.isfinite(metrics["val/3dpw/mpvpe"])
    assert metrics["val_mpvpe"] == pytest.approx(metrics["val/3dpw/mpvpe"])
    assert metrics["val_frames"] == metrics["val/3dpw/frames"] + metrics["val/mpi3dhp/frames"]


def test_scores_leave_frames_without_a_mesh_out_of_mpvpe_only():
    from stdformer.scoring.track_scores import summarize_rows, track_errors

    rng = np.random.default_rng(0)
    T, V = 6, 30
    reg = rng.random((17, V))
    reg /= reg.sum(axis=1, keepdims=True)
    gt = rng.normal(size=(T, V, 3))
    pred = gt + 0.01 * rng.normal(size=(T, V, 3))
    h36m = np.einsum("jv,tvc->tjc", reg, gt)
    valid, has_mesh = np.ones(T, bool), np.array([True, True, False, False, True, True])
    full = track_errors(pred, gt, h36m, valid, reg)
    masked = track_errors(pred, gt, h36m, valid, reg, has_mesh=has_mesh)
    assert np.isnan(masked["mpvpe"][~has_mesh]).all()
    np.testing.assert_allclose(masked["mpvpe"][has_mesh], full["mpvpe"][has_mesh])
    for metric in ("mpjpe", "pa_mpjpe", "accel"):
        np.testing.assert_array_equal(masked[metric], full[metric])
    summary = summarize_rows(masked)
    assert summary["mpvpe"] == pytest.approx(full["mpvpe"][has_mesh].mean())
    assert summary["mpjpe"] == pytest.approx(full["mpjpe"].mean()) and summary["frames"] == T
