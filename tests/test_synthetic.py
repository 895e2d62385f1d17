"""Synthetic 3DPW: exact layout, annotation consistency, determinism, scene content, motion."""

import hashlib
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stdformer.config import from_dict
from stdformer.data import (
    motion, synthetic, synthetic_appearance, synthetic_assets, synthetic_scene,
)
from stdformer.data.render import Mesh, project_points, rasterize
from stdformer.data.synthetic import synthesize
from stdformer.data.synthetic_config import SynthesizeConfig
from stdformer.data.threedpw import SPLITS, iter_tracks, read_sequence, world_to_camera
from stdformer.io import DataError
from stdformer.safe_loading import NUMPY_GLOBALS, safe_load_pickle

PER_ACTOR_KEYS = ("poses", "trans", "betas", "poses2d", "jointPositions", "campose_valid",
                  "genders", "v_template_clothed", "betas_clothed", "poses_60Hz", "trans_60Hz",
                  "texture_maps")
SHARED_KEYS = ("sequence", "img_frame_ids", "cam_poses", "cam_intrinsics")


def _pickles(root):
    return sorted((root / "sequenceFiles").glob("*/*.pkl"))


def _load_plain(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _body_run(body, poses, betas, trans=None):
    with torch.no_grad():
        out = body(torch.as_tensor(poses, dtype=torch.float32),
                   torch.as_tensor(np.tile(betas, (len(poses), 1)), dtype=torch.float32),
                   None if trans is None else torch.as_tensor(trans, dtype=torch.float32))
    return out.vertices.double().numpy(), out.joints.double().numpy()


# ----------------------------------------------------------------------------------------------
# Layout and keys


def test_layout_matches_3dpw(synth_root, synth_cfg):
    assert sorted(p.name for p in synth_root.iterdir()) == ["imageFiles", "sequenceFiles"]
    assert sorted(p.name for p in (synth_root / "sequenceFiles").iterdir()) == sorted(SPLITS)
    names = []
    for split in SPLITS:
        pkls = sorted((synth_root / "sequenceFiles" / split).glob("*.pkl"))
        assert len(pkls) == synth_cfg.sequences_per_split[split]
        names += [p.stem for p in pkls]
    assert sorted(p.name for p in (synth_root / "imageFiles").iterdir()) == sorted(names)
    for pkl in _pickles(synth_root):
        d = _load_plain(pkl)
        folder = synth_root / "imageFiles" / d["sequence"]
        expected = [f"image_{i:05d}.jpg" for i in d["img_frame_ids"]]
        assert sorted(p.name for p in folder.iterdir()) == expected
        img = cv2.imread(str(folder / expected[0]))
        assert img.shape == (synth_cfg.height, synth_cfg.width, 3)


def test_every_key_has_the_3dpw_shape(synth_root, synth_body):
    for pkl in _pickles(synth_root):
        d = _load_plain(pkl)  # plain pickle with latin1, as 3DPW tools load it
        assert set(d) == set(PER_ACTOR_KEYS) | set(SHARED_KEYS)
        assert d["sequence"] == pkl.stem and isinstance(d["sequence"], str)
        n = len(d["img_frame_ids"])
        actors = len(d["poses"])
        assert actors in (1, 2) and all(len(d[k]) == actors for k in PER_ACTOR_KEYS)
        assert d["cam_poses"].shape == (n, 4, 4) and d["cam_intrinsics"].shape == (3, 3)
        R = d["cam_poses"][:, :3, :3]
        np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape),
                                   atol=1e-9)
        np.testing.assert_array_equal(d["cam_poses"][:, 3], np.tile([0, 0, 0, 1.0], (n, 1)))
        V = synth_body.num_vertices
        for a in range(actors):
            assert d["poses"][a].shape == (n, 72) and d["trans"][a].shape == (n, 3)
            assert d["betas"][a].shape == (10,) and d["betas_clothed"][a].shape == (10,)
            assert d["poses2d"][a].shape == (n, 3, 18)
            assert d["jointPositions"][a].shape == (n, 72)
            assert d["campose_valid"][a].shape == (n,) and d["campose_valid"][a].dtype == bool
            assert d["genders"][a] in ("m", "f")
            assert d["v_template_clothed"][a].shape == (V, 3)
            assert d["poses_60Hz"][a].shape == (2 * n, 72)
            assert d["trans_60Hz"][a].shape == (2 * n, 3)
            tex = d["texture_maps"][a]
            assert tex.ndim == 3 and tex.shape[2] == 3 and tex.dtype == np.uint8 and tex.std() > 5
            # 30 Hz annotations are every other 60 Hz sample.
            np.testing.assert_array_equal(d["poses_60Hz"][a][::2], d["poses"][a])
            np.testing.assert_array_equal(d["trans_60Hz"][a][::2], d["trans"][a])


def test_pickles_load_through_the_restricted_reader(synth_root):
    for pkl in _pickles(synth_root):
        plain = _load_plain(pkl)
        safe = safe_load_pickle(pkl, NUMPY_GLOBALS)
        np.testing.assert_array_equal(safe["poses"][0], plain["poses"][0])
        seq = read_sequence(pkl)
        assert seq["sequence"] == plain["sequence"]
        assert pkl.read_bytes()[:2] == b"\x80\x02"  # protocol 2


# ----------------------------------------------------------------------------------------------
# Annotation consistency


def test_joint_positions_and_ground_contact_follow_the_body_model(synth_root, synth_body):
    for pkl in _pickles(synth_root):
        d = _load_plain(pkl)
        for a in range(len(d["poses"])):
            verts, joints = _body_run(synth_body, d["poses"][a], d["betas"][a], d["trans"][a])
            np.testing.assert_allclose(joints.reshape(len(joints), 72), d["jointPositions"][a],
                                       atol=2e-3)
            lowest = verts[..., 1].min(axis=1)
            assert np.abs(lowest).max() < 0.03  # feet on the ground plane y = 0


def test_keypoints_match_the_annotated_body_where_the_camera_is_valid(synth_root, synth_body):
    """poses2d (detected on the images) agrees with projecting the annotated body through the
    stored camera on valid frames, and disagrees where campose_valid is False."""
    errors_valid, errors_invalid, inside = [], [], []
    for track in (t for s in SPLITS for t in iter_tracks(synth_root, s)):
        verts, joints = _body_run(synth_body, track.poses, track.betas, track.trans)
        joints_cam = world_to_camera(joints, track.cam_poses)
        verts_cam = world_to_camera(verts, track.cam_poses)
        body_uv = project_points(joints_cam, track.intrinsics)
        faces = synth_body.faces.numpy()
        for i in range(len(track)):
            kp = track.poses2d[i]
            # COCO slots 1..13 come from SMPL joints: neck, arms, hips, knees, ankles.
            smpl = [12, 17, 19, 21, 16, 18, 20, 2, 5, 8, 1, 4, 7]
            conf = kp[1:14, 2] > 0.5
            if not conf.any():
                continue
            err = np.linalg.norm(kp[1:14, :2][conf] - body_uv[i, smpl][conf], axis=1)
            (errors_valid if track.campose_valid[i] else errors_invalid).append(err.mean())
            if track.campose_valid[i]:
                r = rasterize([Mesh(verts_cam[i], faces, np.zeros((len(faces), 3)))],
                              track.intrinsics, 240, 320)
                mask = cv2.dilate(r.mask.astype(np.uint8), np.ones((5, 5), np.uint8))
                vis = kp[kp[:, 2] > 0.5]
                inside += mask[vis[:, 1].astype(int), vis[:, 0].astype(int)].tolist()
    assert np.median(errors_valid) < 2.0  # pixels: detector jitter only
    assert np.median(errors_invalid) > 4.0  # a wrong camera moves the body off its keypoints
    assert np.mean(inside) > 0.97


def test_visible_keypoints_land_on_the_rendered_person(synth_root, synth_body, synth_cfg):
    """At confidently visible keypoints the JPEG differs from the empty background."""
    assets = synthetic_assets.SynthBodyAssets(synth_body)
    diffs, confident = [], 0
    for split in SPLITS:
        doubles = synthetic.two_actor_indices(synth_cfg, split)
        for index in range(synth_cfg.sequences_per_split[split]):
            scene = synthetic_scene.build_scene(assets, synth_cfg, split, index, index in doubles)
            for frame in range(0, scene.num_frames, 3):
                bg = synthetic_appearance.render_background(
                    scene.backdrop, scene.render_cam_poses[frame], scene.K, synth_cfg.height,
                    synth_cfg.width)
                path = synth_root / "imageFiles" / scene.name / f"image_{frame:05d}.jpg"
                img = cv2.imread(str(path)).astype(np.float64)
                for kp in synthetic.render_frame(assets, scene, frame, synth_cfg.width,
                                                 synth_cfg.height).poses2d:
                    for x, y, c in kp.T:
                        if c > 0.5:
                            confident += 1
                            xi, yi = int(x), int(y)
                            patch = np.s_[max(yi - 1, 0):yi + 2, max(xi - 1, 0):xi + 2]
                            diffs.append(np.abs(img[patch] - bg[patch]).mean())
    assert confident > 100
    diffs = np.array(diffs)
    assert np.mean(diffs > 12) > 0.9, np.percentile(diffs, [5, 25, 50])


def test_low_confidence_marks_occluded_and_missing_keypoints(synth_root):
    conf = np.concatenate([t.poses2d[..., 2].ravel() for s in SPLITS
                           for t in iter_tracks(synth_root, s)])
    assert conf.max() <= 1.0 and conf.min() >= 0.0
    assert (conf > 0.5).mean() > 0.6  # mostly visible
    assert (conf < 0.3).mean() > 0.02  # some occluded / self-occluded / undetected
    kps = np.concatenate([t.poses2d for s in SPLITS for t in iter_tracks(synth_root, s)])
    missing = kps[..., 2] == 0
    assert (kps[missing][:, :2] == 0).all()  # OpenPose convention: (0, 0, 0)


# ----------------------------------------------------------------------------------------------
# Scene content


def test_campose_valid_two_actors_distractors_occluders_present(synth_root, synth_cfg,
                                                                 synth_body):
    valid = np.concatenate([t.campose_valid for s in SPLITS for t in iter_tracks(synth_root, s)])
    assert 0 < (~valid).sum() < 0.3 * len(valid)
    actors = [len(_load_plain(p)["poses"]) for p in _pickles(synth_root)]
    assert 2 in actors and 1 in actors
    assets = synthetic_assets.SynthBodyAssets(synth_body)
    scene = synthetic_scene.build_scene(assets, synth_cfg, "train", 0, True)
    assert len(scene.distractors) == synth_cfg.distractors
    assert len(scene.occluders) == synth_cfg.occluders
    # Two annotated people never walk through each other.
    pelvis = [a.joints[:, 0, [0, 2]] for a in scene.actors]
    gap = np.linalg.norm(pelvis[0] - pelvis[1], axis=1)
    assert gap.min() > 0.5


def test_camera_moves_smoothly_and_keeps_the_actor_in_view(synth_root):
    for track in iter_tracks(synth_root, "train"):
        centres = -np.einsum("nji,nj->ni", track.cam_poses[:, :3, :3], track.cam_poses[:, :3, 3])
        step = np.linalg.norm(np.diff(centres, axis=0), axis=1)
        assert step.max() < 0.3 and step.sum() > 0.05  # moving, no jumps (metres per frame)
        K = track.intrinsics
        assert 200 < K[0, 0] < 600 and K[0, 0] == K[1, 1]
        root = world_to_camera(track.trans[:, None], track.cam_poses)  # ~ the pelvis
        assert (root[..., 2] > 1.0).all()  # in front of the camera


def test_synthesize_is_deterministic(tmp_path, synth_body, synth_root, synth_cfg):
    again = tmp_path / "again"
    synthesize(again, synth_body, synth_cfg, progress=False)
    assert _digests(again) == _digests(synth_root)


def test_other_seed_gives_other_data(tmp_path, synth_body):
    cfg = SynthesizeConfig(seed=11, train_sequences=1, validation_sequences=0, test_sequences=0,
                           min_frames=4, max_frames=4, distractors=0, occluders=0)
    a, b = tmp_path / "a", tmp_path / "b"
    synthesize(a, synth_body, cfg, progress=False)
    cfg.seed = 12
    report = synthesize(b, synth_body, cfg, progress=False)
    assert report["frames"] == 4 and report["tracks"] == 1
    assert _digests(a) != _digests(b)
    assert sorted(p.name for p in (b / "sequenceFiles").iterdir()) == sorted(SPLITS)


def test_config_is_validated():
    with pytest.raises(DataError, match="min_frames"):
        from_dict(SynthesizeConfig, {"min_frames": 20, "max_frames": 10}, "params.yaml",
                  "synthesize")
    with pytest.raises(DataError, match="did you mean 'jpeg_quality'"):
        from_dict(SynthesizeConfig, {"jpeg_qualty": 90}, "params.yaml", "synthesize")
    with pytest.raises(DataError, match="two_actor_fraction"):
        from_dict(SynthesizeConfig, {"two_actor_fraction": 1.5}, "params.yaml", "synthesize")
    cfg = from_dict(SynthesizeConfig, {"width": 160, "height": 120}, "params.yaml", "synthesize")
    assert (cfg.width, cfg.height) == (160, 120)


# ----------------------------------------------------------------------------------------------
# Motion


@pytest.mark.parametrize("style", motion.STYLES)
def test_motion_is_smooth_and_within_joint_ranges(style):
    rng = np.random.default_rng(5)
    m = motion.generate_motion(rng, 240, fps=60.0, style=style)
    assert m.poses.shape == (240, 72) and np.isfinite(m.poses).all() and m.style == style
    body = m.poses[:, 3:]
    assert np.abs(np.diff(body, axis=0)).max() < 0.15  # radians per 1/60 s: no jumps
    from scipy.spatial.transform import Rotation

    def angle(j):
        return np.linalg.norm(Rotation.from_rotvec(m.poses[:, 3 * j:3 * j + 3]).as_rotvec(), axis=1)

    assert angle(4).max() < 2.5 and angle(5).max() < 2.5  # knees
    assert angle(1).max() < 1.8 and angle(2).max() < 1.8  # hips
    travelled = np.linalg.norm(m.root_xz[-1] - m.root_xz[0])
    if style.startswith("walk"):
        assert 2.0 < travelled < 7.0  # 4 s at about 1 m/s
        # The legs swing in antiphase (the gait).
        left, right = m.poses[:, 3 * 1], m.poses[:, 3 * 2]
        assert np.corrcoef(left, right)[0, 1] < -0.5
    else:
        assert travelled < 0.5


def test_squat_lowers_the_pelvis(synth_body):
    assets = synthetic_assets.SynthBodyAssets(synth_body)
    person = synthetic_scene.make_person(assets, np.random.default_rng(0), 60, {"style": "squat"})
    pelvis_height = person.joints[:, 0, 1]
    assert pelvis_height.max() - pelvis_height.min() > 0.15
    assert np.abs(person.vertices[..., 1].min(axis=1)).max() < 0.03


def test_side_cues_colour_left_limbs_warm_and_right_limbs_cool(synth_body):
    """With side_cues, every person's left upper arm/forearm/thigh/shin is warm (red > blue in
    BGR) and the right ones cool, whatever the clothing palette; without, they share the
    clothing colour of their side's partner part."""
    from stdformer.body.constants import SMPL_JOINT_NAMES

    assets = synthetic_assets.SynthBodyAssets(synth_body)
    limbs = ("Shoulder", "Elbow", "Hip", "Knee")
    for seed in range(4):
        rng = np.random.default_rng(seed)
        palette = synthetic_appearance.person_palette(rng)
        colors = synthetic_appearance.face_colors_for(assets, palette, rng, side_cues=True)
        for part in limbs:
            left = colors[assets.face_part == SMPL_JOINT_NAMES.index("L_" + part)].mean(0)
            right = colors[assets.face_part == SMPL_JOINT_NAMES.index("R_" + part)].mean(0)
            assert left[2] > left[0] + 80, (seed, part, left)       # BGR: red over blue
            assert right[0] > right[2] + 80, (seed, part, right)    # blue over red
        plain = synthetic_appearance.face_colors_for(assets, palette, np.random.default_rng(seed))
        hip_l = plain[assets.face_part == SMPL_JOINT_NAMES.index("L_Hip")].mean(0)
        hip_r = plain[assets.face_part == SMPL_JOINT_NAMES.index("R_Hip")].mean(0)
        assert np.abs(hip_l - hip_r).max() < 0.3 * 255              # same trousers
