"""Human3.6M (NeuralAnnot / I2L-MeshNet layout) through preprocess: the shard targets land on the
annotated joints when re-projected with the stored camera, the subject split, the sampling, the
skip counts, the manifest's source and camera, and one test per kind of bad input (issue 25)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from h36mfiles import EVERY, FRAMES, GAP, NO_FIT, SUBJECTS, folder, write_h36m_set

from stdformer.data import crops, shards
from stdformer.data import manifest as mf
from stdformer.data.datasets import H36MDataset
from stdformer.data.preprocess import preprocess
from stdformer.data.preprocess_config import PreprocessConfig
from stdformer.io import DataError

REPO = Path(__file__).resolve().parents[1]
CLIP = 4
# float32 storage of metres (root_cam ~5 m: 5e-7 m steps) and of the crop affine: well under
# a thousandth of a millimetre or pixel; the mesh is posed in float32 by the body model.
TOL_MM, TOL_PX, TOL_MESH_MM = 0.01, 0.01, 0.1


def _cfg(**kw):
    return PreprocessConfig(**{"crop_size": 32, "clip_len": CLIP, "samples_per_shard": 4,
                               "workers": 1, "executor": "serial", **kw})


def _dataset(root, **kw):
    return H36MDataset(**{"root": str(root), "subjects": SUBJECTS, "every": EVERY, **kw})


def _clips(out_dir):
    for shard in sorted(out_dir.glob("*/shard-*.tar")):
        for sample in wds.WebDataset(str(shard), shardshuffle=False):
            yield shards.decode_clip(sample)


@pytest.fixture(scope="module")
def built(synth_body, tmp_path_factory):
    return write_h36m_set(tmp_path_factory.mktemp("h36m") / "h36m", synth_body)


@pytest.fixture(scope="module")
def shard_dir(built, synth_body_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("h36m_shards") / "h36m"
    preprocess(_dataset(built.root), synth_body_dir, out, _cfg(), progress=False, name="h36m")
    return out


def _subject_subaction_cam(sequence):
    parts = sequence.split("_")           # s_09_act_02_subact_01_ca_04
    return int(parts[1]), int(parts[5]), int(parts[7])


def test_targets_reprojected_with_the_stored_camera_land_on_the_annotated_joints(
        built, shard_dir, synth_body):
    """The H36M-17 targets (root-relative, m) + root_cam are the annotated joints in the camera
    frame (mm); projected with the stored intrinsics they are the annotated pixels, and so are
    joints2d mapped back through the crop affine; the mesh posed from the stored camera-frame
    pose and betas regresses onto the annotated joints too (the root orientation rotated by R)."""
    checked = fitted = 0
    for clip in _clips(shard_dir):
        t, meta = clip["targets"], clip["meta"]
        subject, subaction, cam = _subject_subaction_cam(meta["sequence"])
        assert meta["camera"] == cam
        truth_mm = np.stack([built.joints_cam[(subject, subaction, cam, f)]
                             for f in meta["frame_ids"]])                    # (S, 17, 3)
        truth_px = np.stack([built.pixels[(subject, subaction, cam, f)]
                             for f in meta["frame_ids"]])                    # (S, 17, 2)
        root = t["root_cam"].double().numpy()[:, None]                      # (S, 1, 3) m
        cam_mm = (t["joints_h36m"].double().numpy() + root) * 1000.0
        np.testing.assert_allclose(cam_mm, truth_mm, atol=TOL_MM)
        K = t["intrinsics"].double().numpy()
        uvw = cam_mm @ K.T
        np.testing.assert_allclose(uvw[..., :2] / uvw[..., 2:], truth_px, atol=TOL_PX)
        affine = t["affine"].double().numpy()                                # (S, 2, 3)
        inverse = np.stack([np.linalg.inv(np.vstack([a, [0, 0, 1]]))[:2] for a in affine])
        back = crops.apply_affine(t["joints2d"][..., :2].double().numpy(), inverse)
        np.testing.assert_allclose(back, truth_px, atol=TOL_PX)
        checked += len(meta["frame_ids"])

        fit = np.array([f not in NO_FIT.get(subject, []) for f in meta["frame_ids"]])
        assert t["valid"].numpy().tolist() == fit.tolist()
        mesh = synth_body.shard_mesh(t["pose"][fit], t["betas"][fit]).double()
        mesh_mm = (synth_body.regress_h36m(mesh).numpy() + root[fit]) * 1000.0
        np.testing.assert_allclose(mesh_mm, truth_mm[fit], atol=TOL_MESH_MM)
        # The SMPL joints: the world body's joints seen from the camera, relative to its pelvis.
        world = built.smpl_joints_world[(subject, subaction)][np.array(meta["frame_ids"])][fit]
        R = built.cams[cam]["R"]
        smpl_cam = world @ R.T
        np.testing.assert_allclose(t["joints3d"].double().numpy()[fit],
                                   smpl_cam - smpl_cam[:, :1], atol=TOL_MM / 1000)
        fitted += int(fit.sum())
    assert checked > 100 and fitted > 100


def test_subjects_decide_the_split_and_the_manifest_names_source_and_camera(shard_dir):
    manifest = mf.read_manifest(shard_dir)
    for split, sequence, source, camera in zip(manifest["split"], manifest["sequence"],
                                               manifest["source"], manifest["camera"],
                                               strict=True):
        subject, _, cam = _subject_subaction_cam(sequence)
        assert subject in SUBJECTS[split]
        assert source == "h36m" and camera == cam
    assert sorted(set(manifest["split"])) == ["test", "train", "validation"]
    assert sorted(set(manifest["camera"])) == [1, 2, 3, 4]
    report = json.loads((shard_dir / "report.json").read_text())
    assert report["source"] == "h36m" and report["layout"] == "h36m"
    assert report["settings"]["subjects"] == SUBJECTS and report["settings"]["every"] == EVERY


def test_sampling_keeps_every_nth_frame_and_clips_are_runs_of_one_camera(shard_dir):
    """Clips hold consecutive sampled frames (frame_idx % every == 0, `every` apart); a frame
    data.json leaves out splits its camera's frames into two runs (actors 0 and 1)."""
    runs = {}
    for clip in _clips(shard_dir):
        ids = clip["meta"]["frame_ids"]
        assert all(f % EVERY == 0 for f in ids) and np.all(np.diff(ids) == EVERY)
        runs.setdefault(clip["meta"]["sequence"], set()).add(clip["meta"]["actor"])
    subject, (cam, frame) = next(iter(GAP.items()))
    assert frame % EVERY == 0
    assert runs[folder(subject, 1, cam)] == {0, 1}
    assert all(actors == {0} for seq, actors in runs.items() if seq != folder(subject, 1, cam))
    report = json.loads((shard_dir / "report.json").read_text())
    sampled = len(range(0, FRAMES, EVERY))
    assert report["splits"]["train"]["frames"] == 4 * sampled
    assert report["splits"]["validation"]["frames"] == 4 * sampled - 1   # the left-out frame


def test_frames_without_an_smpl_fit_are_counted_and_not_supervised(shard_dir):
    report = json.loads((shard_dir / "report.json").read_text())
    (subject, frames), = NO_FIT.items()
    sampled_without = sum(f % EVERY == 0 for f in frames)
    assert report["splits"]["train"]["skipped_frames"]["no_smpl_fit"] == 4 * sampled_without
    assert report["splits"]["test"]["skipped_frames"]["no_smpl_fit"] == 0
    sampled = len(range(0, FRAMES, EVERY))
    assert report["splits"]["train"]["valid_frames"] == 4 * (sampled - sampled_without)


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the key; nothing written


@pytest.fixture
def copy(built, tmp_path):
    root = tmp_path / "h36m"
    shutil.copytree(built.root, root)
    return root


def _fails(root, body_dir, out, match, **cfg):
    with pytest.raises(DataError, match=match) as err:
        preprocess(_dataset(root), body_dir, out, _cfg(**cfg), progress=False, name="h36m")
    assert "\n" not in str(err.value) and not out.exists()


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_missing_subject_file_is_named(copy, synth_body_dir, tmp_path):
    (copy / "annotations" / "Human36M_subject8_joint_3d.json").unlink()
    _fails(copy, synth_body_dir, tmp_path / "out",
           r"Human36M_subject8_joint_3d.json: file not found")


def test_json_of_the_wrong_structure_is_named_with_its_key(built, copy, synth_body_dir,
                                                           tmp_path):
    data = copy / "annotations" / "Human36M_subject9_data.json"
    _edit(data, lambda d: d.update(images={"0": d["images"][0]}))
    _fails(copy, synth_body_dir, tmp_path / "out",
           r"Human36M_subject9_data.json: images: expected a list, got dict")
    shutil.copy(built.root / "annotations" / data.name, data)
    joints = copy / "annotations" / "Human36M_subject1_joint_3d.json"
    _edit(joints, lambda d: d["2"]["1"].update({"6": [[0.0, 0.0]] * 17}))
    _fails(copy, synth_body_dir, tmp_path / "out2",
           r"Human36M_subject1_joint_3d.json: 2.1.6: expected shape \(17, 3\), got \(17, 2\)")


def test_a_camera_absent_from_the_camera_file_is_named(copy, synth_body_dir, tmp_path):
    _edit(copy / "annotations" / "Human36M_subject1_camera.json", lambda d: d.pop("3"))
    _fails(copy, synth_body_dir, tmp_path / "out",
           r"Human36M_subject1_camera.json: 3: camera 3 is absent \(the file has cameras "
           r"\['1', '2', '4'\]\)")


def test_a_fit_of_the_wrong_length_is_named(copy, synth_body_dir, tmp_path):
    fits = copy / "annotations" / "Human36M_subject8_SMPL_NeuralAnnot.json"
    _edit(fits, lambda d: d["2"]["1"]["10"].update(pose=[0.0] * 69))
    _fails(copy, synth_body_dir, tmp_path / "out",
           r"Human36M_subject8_SMPL_NeuralAnnot.json: 2.1.10.pose: expected shape \(72,\), "
           r"got \(69,\)")


def test_missing_images_fail_or_are_counted_under_skip(copy, synth_body_dir, tmp_path):
    name = folder(9, 1, 2)
    (copy / "images" / name / f"{name}_000005.jpg").unlink()        # frame_idx 4, sampled
    _fails(copy, synth_body_dir, tmp_path / "out",
           rf"{name}_000005.jpg: images\[\d+\].file_name: image of an annotated frame not found")
    report = preprocess(_dataset(copy), synth_body_dir, tmp_path / "skip",
                        _cfg(on_error="skip"), progress=False, name="h36m")
    assert report["splits"]["test"]["skipped_frames"]["missing_image"] == 1
    assert report["splits"]["train"]["skipped_frames"]["missing_image"] == 0


def test_the_older_fit_file_name_is_read(built):
    """Subject 9's fits are written as `_smpl_param.json` (the older name)."""
    assert (built.root / "annotations" / "Human36M_subject9_smpl_param.json").is_file()
    assert not (built.root / "annotations" / "Human36M_subject9_SMPL_NeuralAnnot.json").exists()


def test_pose_track_per_frame_shapes_match_the_body_model(built, shard_dir, synth_body):
    """Subject 1's fits change shape every frame: each frame's betas are its own."""
    for clip in _clips(shard_dir):
        subject, subaction, _ = _subject_subaction_cam(clip["meta"]["sequence"])
        if subject != 1:
            continue
        shape = built.smpl[(subject, subaction)]["shape"][np.array(clip["meta"]["frame_ids"])]
        valid = clip["targets"]["valid"].numpy()
        np.testing.assert_allclose(clip["targets"]["betas"].numpy()[valid], shape[valid],
                                   atol=1e-6)
        assert torch.unique(clip["targets"]["betas"][valid], dim=0).shape[0] == valid.sum()


# --------------------------------------------------------------------------------------------
# The stage and `stdformer shards info` over several sources


def test_stage_preprocesses_one_named_dataset_and_shards_info_shows_every_source(
        built, synth_root, synth_body_dir, tmp_path, capsys):
    """`python -m stages.preprocess --dataset NAME` reads `datasets.NAME` and the shared crop
    settings; `stdformer shards info data/shards` prints one block per dataset, each the block
    of that dataset's own directory."""
    from stdformer.cli import main

    params = {"preprocess": {"crop_size": 32, "clip_len": CLIP, "samples_per_shard": 8,
                             "workers": 1, "executor": "serial"},
              "datasets": {"3dpw": {"layout": "3dpw", "root": str(synth_root)},
                           "h36m": {"layout": "h36m", "root": str(built.root),
                                    "subjects": SUBJECTS, "every": EVERY}}}
    (tmp_path / "params.yaml").write_text(json.dumps(params))     # JSON is YAML
    for name in ("3dpw", "h36m"):
        done = subprocess.run([sys.executable, "-m", "stages.preprocess", "--dataset", name,
                               "--params", str(tmp_path / "params.yaml"), str(synth_body_dir),
                               str(tmp_path / "shards" / name)],
                              capture_output=True, text=True, timeout=600, cwd=REPO)
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads((tmp_path / "shards" / name / "report.json").read_text())[
            "source"] == name
    assert main(["shards", "info", str(tmp_path / "shards"), "--verify"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert sorted(both) == ["3dpw", "h36m"]
    for name in both:
        assert main(["shards", "info", str(tmp_path / "shards" / name)]) == 0
        one = json.loads(capsys.readouterr().out)
        assert one == {split: {k: v for k, v in counts.items() if k != "verified"}
                       for split, counts in both[name].items()}
        assert all(counts["verified"] for counts in both[name].values())
