"""Synthetic Human3.6M: the published layout (names, JSON structure and types), cameras and
joints that agree with the images, fits that reproduce the joints, missing fits, determinism.

The checks read the written files the way the field's loaders do (I2L-MeshNet's Human36M.py):
X_cam = R @ X_world + t in mm, pixels f * X[:2] / X[2] + c, world-frame SMPL fits in metres."""

import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from stdformer.body.track_posing import PosingArrays
from stdformer.config import from_dict, load_section
from stdformer.data.synthetic_appearance import render_background
from stdformer.data.synthetic_h36m import (
    studio_backdrop,
    studio_cameras,
    synthesize_h36m,
)
from stdformer.data.synthetic_h36m_config import SynthesizeH36MConfig

REPO = Path(__file__).resolve().parents[1]
SMALL = {"subjects": [1, 9], "actions": ["Directions", "Walking"], "subactions": 1,
         "frames": 15, "every": 5, "size": 96, "unfitted_runs": 1, "unfitted_frames": 6}
IMAGE_KEYS = {"id": int, "file_name": str, "width": int, "height": int, "subject": int,
              "action_name": str, "action_idx": int, "subaction_idx": int, "cam_idx": int,
              "frame_idx": int}
NAME = re.compile(r"^s_(\d{2})_act_(\d{2})_subact_(\d{2})_ca_(\d{2})$")


@pytest.fixture(scope="module")
def small_cfg():
    return from_dict(SynthesizeH36MConfig, SMALL)


@pytest.fixture(scope="module")
def posing(synth_body_dir):
    return PosingArrays.load(synth_body_dir)


@pytest.fixture(scope="module")
def h36m_root(tmp_path_factory, synth_body, posing, small_cfg):
    root = tmp_path_factory.mktemp("synth_h36m") / "h36m"
    synthesize_h36m(root, synth_body, posing, small_cfg, progress=False)
    return root


def _load(root, subject, kind):
    return json.loads((root / "annotations" / f"Human36M_subject{subject}_{kind}.json").read_text())


def _project(points_mm, cam):
    X = points_mm @ np.asarray(cam["R"]).T + np.asarray(cam["t"])
    return np.asarray(cam["f"]) * X[:, :2] / X[:, 2:] + np.asarray(cam["c"]), X[:, 2]


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------
# Layout, names, JSON structure


def test_layout_and_file_names(h36m_root, small_cfg):
    assert sorted(p.name for p in h36m_root.iterdir()) == ["annotations", "images"]
    expected = {f"Human36M_subject{s}_{k}.json" for s in small_cfg.subjects
                for k in ("data", "camera", "joint_3d", "SMPL_NeuralAnnot")}
    assert {p.name for p in (h36m_root / "annotations").iterdir()} == expected
    listed = set()
    for subject in small_cfg.subjects:
        for img in _load(h36m_root, subject, "data")["images"]:
            folder, file = img["file_name"].split("/")
            assert NAME.match(folder).groups() == (
                f"{subject:02d}", f"{img['action_idx']:02d}", f"{img['subaction_idx']:02d}",
                f"{img['cam_idx']:02d}")
            assert file == f"{folder}_{img['frame_idx'] + 1:06d}.jpg"  # 1-based in the name
            listed.add(img["file_name"])
    on_disk = {str(p.relative_to(h36m_root / "images")) for p in
               (h36m_root / "images").rglob("*.jpg")}
    assert on_disk == listed
    # Only the sampled frames: 2 subjects x 2 actions x 1 subaction x 4 cameras x 3 frames.
    assert len(listed) == 2 * 2 * 1 * 4 * 3


def test_data_json_structure_and_types(h36m_root, small_cfg):
    ids, runs = set(), {}
    for subject in small_cfg.subjects:
        data = _load(h36m_root, subject, "data")
        assert set(data) == {"images", "annotations"}
        assert len(data["images"]) == len(data["annotations"])
        by_id = {}
        for img in data["images"]:
            assert set(img) == set(IMAGE_KEYS)
            for key, kind in IMAGE_KEYS.items():
                assert type(img[key]) is kind, (key, img[key])
            assert img["subject"] == subject and 2 <= img["action_idx"] <= 16
            assert 1 <= img["subaction_idx"] <= 2 and 1 <= img["cam_idx"] <= 4
            assert img["frame_idx"] % small_cfg.every == 0
            h, w = cv2.imread(str(h36m_root / "images" / img["file_name"])).shape[:2]
            assert (w, h) == (img["width"], img["height"])
            by_id[img["id"]] = img
            key = (subject, img["action_idx"], img["subaction_idx"], img["cam_idx"])
            runs.setdefault(key, []).append(img["frame_idx"])
        assert not ids & set(by_id)  # ids unique across subjects (loaders merge the files)
        ids |= set(by_id)
        for ann in data["annotations"]:
            assert set(ann) == {"id", "image_id", "bbox", "keypoints_vis"}
            assert ann["image_id"] in by_id
            assert len(ann["bbox"]) == 4 and all(type(v) is float for v in ann["bbox"])
            assert ann["bbox"][2] > 0 and ann["bbox"][3] > 0
            assert len(ann["keypoints_vis"]) == 17
            assert all(type(v) is bool for v in ann["keypoints_vis"])
    assert {a for _, a, _, _ in runs} == {2, 14}  # Directions, Walking
    assert all(sorted(f) == small_cfg.sampled_frames for f in runs.values())


def test_camera_joint_and_fit_files_structure(h36m_root, small_cfg):
    shapes = []
    for subject in small_cfg.subjects:
        cams = _load(h36m_root, subject, "camera")
        assert list(cams) == ["1", "2", "3", "4"]
        for cam in cams.values():
            assert set(cam) == {"R", "t", "f", "c"}
            R = np.asarray(cam["R"])
            assert R.shape == (3, 3) and np.allclose(R @ R.T, np.eye(3), atol=1e-9)
            assert np.linalg.det(R) > 0
            assert len(cam["t"]) == 3 and len(cam["f"]) == 2 and len(cam["c"]) == 2
            centre_mm = -R.T @ np.asarray(cam["t"])   # the studio: 4.5-5.5 m out, z up
            assert 4300 < np.hypot(*centre_mm[:2]) < 5700 and 1200 < centre_mm[2] < 1900
        joints, fits = _load(h36m_root, subject, "joint_3d"), _load(h36m_root, subject,
                                                                     "SMPL_NeuralAnnot")
        assert set(joints) == set(fits) == {"2", "14"}
        for act in joints:
            assert set(joints[act]) == set(fits[act]) == {"1"}
            frames = joints[act]["1"]
            assert list(frames) == [str(i) for i in range(small_cfg.frames)]  # every frame
            assert all(np.asarray(j).shape == (17, 3) for j in frames.values())
            for fit in fits[act]["1"].values():
                assert set(fit) == {"pose", "shape", "trans"}
                assert (len(fit["pose"]), len(fit["shape"]), len(fit["trans"])) == (72, 10, 3)
            shapes.append(tuple(next(iter(fits[act]["1"].values()))["shape"]))
    assert len(set(shapes)) == len(small_cfg.subjects)  # one body shape per subject


def test_unfitted_frames_absent_from_fits_only(h36m_root, small_cfg):
    for subject in small_cfg.subjects:
        joints, fits = _load(h36m_root, subject, "joint_3d"), _load(h36m_root, subject,
                                                                    "SMPL_NeuralAnnot")
        listed = {(i["action_idx"], i["frame_idx"]) for i in _load(h36m_root, subject,
                                                                    "data")["images"]}
        counts = sorted(len(fits[a]["1"]) for a in fits)
        fitted = small_cfg.frames - small_cfg.unfitted_frames
        assert counts == [fitted, small_cfg.frames]  # one of the two subactions lacks a tail
        for act in fits:
            missing = set(joints[act]["1"]) - set(fits[act]["1"])
            assert missing == ({str(i) for i in range(fitted, small_cfg.frames)}
                               if len(fits[act]["1"]) == fitted else set())
            # The unfitted sampled frame (10) still has its image, data entry and joints.
            if missing:
                assert (int(act), 10) in listed and "10" in missing


# ----------------------------------------------------------------------------------------------
# Consistency: cameras, joints, boxes, images, fits


def test_projected_joints_land_in_box_and_on_the_person(h36m_root, small_cfg):
    backdrop = studio_backdrop(small_cfg.seed)
    on_person = []
    for subject in small_cfg.subjects:
        data, cams = _load(h36m_root, subject, "data"), _load(h36m_root, subject, "camera")
        joints = _load(h36m_root, subject, "joint_3d")
        studio = studio_cameras(small_cfg, subject)
        anns = {a["image_id"]: a for a in data["annotations"]}
        for img in data["images"]:
            cam = cams[str(img["cam_idx"])]
            world = np.asarray(joints[str(img["action_idx"])][str(img["subaction_idx"])][
                str(img["frame_idx"])])
            uv, depth = _project(world, cam)
            assert (depth > 3000).all()
            x, y, w, h = anns[img["id"]]["bbox"]
            vis = np.asarray(anns[img["id"]]["keypoints_vis"])
            assert vis.all()  # the subject stays in view of every camera
            assert ((uv[:, 0] >= x) & (uv[:, 0] <= x + w) & (uv[:, 1] >= y)
                    & (uv[:, 1] <= y + h)).all()
            # The person: where the written image differs from the empty studio.
            sc = studio[img["cam_idx"]]
            empty = render_background(backdrop, sc.pose, sc.K, sc.height, sc.width)
            image = cv2.imread(str(h36m_root / "images" / img["file_name"]))
            person = np.abs(image.astype(int) - empty.astype(int)).sum(-1) > 45
            person = cv2.dilate(person.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            u = np.clip(np.round(uv[:, 0]).astype(int), 0, img["width"] - 1)
            v = np.clip(np.round(uv[:, 1]).astype(int), 0, img["height"] - 1)
            on_person.append(person[v, u].mean())
            assert person.mean() < 0.3  # the studio itself matches the empty view
    assert np.mean(on_person) > 0.95 and min(on_person) >= 14 / 17


def test_world_fits_reproduce_the_joints(h36m_root, small_cfg, synth_body):
    """Posing a fit (root orientation in the world, trans in metres) and regressing H36M-17
    gives joint_3d back to its few mm of noise: the fit and the joints share the world frame."""
    errors = []
    for subject in small_cfg.subjects:
        joints, fits = _load(h36m_root, subject, "joint_3d"), _load(h36m_root, subject,
                                                                    "SMPL_NeuralAnnot")
        for act, subs in fits.items():
            for frame, fit in subs["1"].items():
                with torch.no_grad():
                    out = synth_body(torch.tensor([fit["pose"]]), torch.tensor([fit["shape"]]),
                                     torch.tensor([fit["trans"]]))
                regressed = out.joints_h36m[0].double().numpy() * 1000.0
                errors.append(np.linalg.norm(regressed - np.asarray(joints[act]["1"][frame]),
                                             axis=-1).mean())
    assert np.mean(errors) < 8.0 and max(errors) < 12.0  # noise: 3 mm per axis


def test_fits_in_a_camera_frame_the_way_i2l_meshnet_reads_them(h36m_root, small_cfg,
                                                                 synth_body):
    """The documented contract: root orientation turned by R, mesh moved by
    R @ trans + t / 1000 - J0 + R @ J0 (J0: the shaped body's rest pelvis) gives the camera-frame
    body whose joints are R @ joint_3d + t, to the joints' noise."""
    subject = small_cfg.subjects[0]
    cams, joints = _load(h36m_root, subject, "camera"), _load(h36m_root, subject, "joint_3d")
    fits = _load(h36m_root, subject, "SMPL_NeuralAnnot")
    errors = []
    for cam in cams.values():
        R, t = np.asarray(cam["R"]), np.asarray(cam["t"])
        for act, subs in fits.items():
            for frame in ("0", "5"):
                fit = subs["1"][frame]
                pose = np.asarray(fit["pose"])
                pose[:3] = Rotation.from_matrix(R @ Rotation.from_rotvec(pose[:3]).as_matrix()
                                                ).as_rotvec()
                with torch.no_grad():
                    out = synth_body(torch.tensor(pose[None]), torch.tensor([fit["shape"]]))
                j0 = out.joints[0, 0].double().numpy()
                shift = R @ np.asarray(fit["trans"]) + t / 1000 - j0 + R @ j0
                body_mm = (out.joints_h36m[0].double().numpy() + shift) * 1000
                expected = np.asarray(joints[act]["1"][frame]) @ R.T + t
                errors.append(np.linalg.norm(body_mm - expected, axis=-1).mean())
    assert max(errors) < 10.0, errors


def test_same_config_writes_the_same_bytes(h36m_root, tmp_path, synth_body, posing, small_cfg):
    again = tmp_path / "again"
    synthesize_h36m(again, synth_body, posing, small_cfg, progress=False)
    assert _digests(again) == _digests(h36m_root)


# ----------------------------------------------------------------------------------------------
# Settings


def test_default_params_give_clips_for_every_run():
    """The pipeline's set: subjects of both splits, and >= 8 fitted sampled frames (one clip)
    in every (subject, action, subaction, camera) run."""
    cfg = load_section("synthesize_h36m", SynthesizeH36MConfig, REPO / "params.yaml")
    cfg.validate()
    assert {1, 5, 6, 7, 8} <= set(cfg.subjects) and {9, 11} <= set(cfg.subjects)
    fitted = [i for i in cfg.sampled_frames if i < cfg.frames - cfg.unfitted_frames]
    assert len(fitted) >= 8 and cfg.every == 5


@pytest.mark.parametrize("override, message", [
    ({"actions": ["Dancing"]}, "Human3.6M action names"),
    ({"subjects": [1, 1]}, "without repeats"),
    ({"subactions": 3}, "subactions"),
    ({"every": 0}, "every"),
])
def test_bad_settings_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        from_dict(SynthesizeH36MConfig, {**SMALL, **override}).validate()

