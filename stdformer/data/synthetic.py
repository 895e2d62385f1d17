"""A synthetic stand-in for 3DPW, written in exactly the 3DPW layout.

    <out_root>/imageFiles/<seq>/image_%05d.jpg
    <out_root>/sequenceFiles/{train,validation,test}/<seq>.pkl   (protocol 2, plain numpy)

Every sequence is a small scene: one or two annotated people (procedural walking / waving /
squatting motion from `motion.py`, varied betas, feet on a ground plane y = 0), unannotated
distractor people crossing the line of sight, box/pole occluders, a moving (orbiting, panning,
slightly shaky) camera with realistic intrinsics and a procedural background (textured ground
plane in perspective, striped / noisy / gradient surroundings). Frames are rendered with
`render.py` (per-body-part colours, Lambert shading) and JPEG-compressed.

Annotations follow 3DPW: world SMPL `poses`/`trans` (30 Hz) and `poses_60Hz`/`trans_60Hz`,
`jointPositions` (world joints), `poses2d` (COCO-18 from the projected body joints and head
vertices, like OpenPose: confident where visible, low confidence where another object covers
the point, (0,0,0) when out of frame or the face point looks away), world->camera `cam_poses`.
A run of frames per sequence has `campose_valid == False`: there the image was rendered with a
perturbed camera, so the stored camera pose is wrong, as in the real data set.

Determinism: every sequence draws from `np.random.default_rng([seed, split, index])` and every
frame from `[seed, split, index, 1000 + frame]`, so the same config gives identical pickles and
identical JPEG bytes, whatever order sequences are produced in.

Modules: `synthetic_config` (the settings), `synthetic_assets` (the body in numpy, keypoint
vertices), `synthetic_appearance` (colours, textures, backdrops), `synthetic_scene` (every
random draw of a sequence: people, camera, occluders), and this one (frames, 2D keypoints, the
files).
"""

from __future__ import annotations

import logging
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stdformer.data.render import Mesh, project_points, rasterize, shade_faces
from stdformer.data.synthetic_appearance import camera_rays, render_background, texture_map
from stdformer.data.synthetic_assets import COCO_FACE_SLOTS, SynthBodyAssets, coco18_points
from stdformer.data.synthetic_config import SynthesizeConfig
from stdformer.data.synthetic_scene import Person, Scene, build_scene, total_frames
from stdformer.data.threedpw import IMAGE_DIR, IMAGE_PATTERN, SEQUENCE_DIR, SPLITS
from stdformer.io import atomic_output
from stdformer.progress import progress as progress_bar

log = logging.getLogger(__name__)

PICKLE_PROTOCOL = 2  # what Python-2-era 3DPW readers expect


# ----------------------------------------------------------------------------------------------
# Rendering a frame and its 2D keypoints


@dataclass
class Frame:
    """image (H,W,3) uint8 BGR before JPEG; background (H,W,3) uint8 without people/occluders;
    poses2d (A,3,18) per annotated actor; mesh_id (H,W) int32 (-1 background, then actors,
    distractors, occluders in that order)."""

    image: np.ndarray
    background: np.ndarray
    poses2d: np.ndarray
    mesh_id: np.ndarray


def _keypoints_2d(assets, rng, person_index, verts_cam, joints_cam, raster, K, width, height):
    """(3,18) x, y, confidence for one person, OpenPose-like (see module docstring)."""
    pts = coco18_points(assets, verts_cam, joints_cam)
    uv = project_points(pts, K)
    uv = uv + rng.normal(0, 0.002 * max(width, height), uv.shape)  # detector jitter
    out = np.zeros((3, 18))
    # Face points look away from the camera when their surface normal does.
    facing = np.ones(18, bool)
    for slot, vid, fids in zip(COCO_FACE_SLOTS, assets.face_vertex_ids, assets.face_vertex_faces):
        t = verts_cam[assets.faces[fids]]
        normal = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]).sum(0)
        facing[slot] = normal @ verts_cam[vid] < 0
    for k in range(18):
        x, y = uv[k]
        if pts[k, 2] <= 0.05 or not (0 <= x < width and 0 <= y < height) or not facing[k]:
            continue  # undetected: (0, 0, 0)
        xi, yi = int(x), int(y)
        owners = raster.mesh_id[max(yi - 1, 0):yi + 2, max(xi - 1, 0):xi + 2]
        own = (owners == person_index).any()
        if own:
            surface = raster.depth[yi, xi] if raster.mesh_id[yi, xi] == person_index else pts[k, 2]
            if pts[k, 2] - surface > 0.2:  # behind the person's own body (e.g. far wrist)
                conf = rng.uniform(0.15, 0.45)
            else:
                conf = rng.uniform(0.6, 0.95)
        elif (owners >= 0).any():  # covered by another person or an occluder
            conf = rng.uniform(0.01, 0.15)
        else:  # just outside the silhouette (joint near the outline): less sure
            conf = rng.uniform(0.3, 0.5)
        out[:, k] = (x, y, conf)
    return out


def render_frame(assets: SynthBodyAssets, scene: Scene, frame: int, width: int,
                 height: int) -> Frame:
    rng = np.random.default_rng([*scene.key, 1000 + frame])
    cam = scene.render_cam_poses[frame]
    R, t = cam[:3, :3], cam[:3, 3]
    if scene.rays_cam is None or scene.rays_cam.shape[:2] != (height, width):
        scene.rays_cam = camera_rays(scene.K, height, width)
    background = render_background(scene.backdrop, cam, scene.K, height, width, scene.rays_cam)
    people = scene.actors + scene.distractors
    meshes = [Mesh(p.vertices[frame] @ R.T + t, assets.faces, p.face_colors) for p in people]
    meshes += [Mesh(o.vertices @ R.T + t, o.faces, o.face_colors) for o in scene.occluders]
    raster = rasterize(meshes, scene.K, height, width)
    image = background.astype(np.float32)
    mask = raster.mask
    image[mask] = shade_faces(raster)[raster.face_id[mask]]
    # Soften the aliased polygon edges a little, then add sensor noise.
    image = cv2.GaussianBlur(image, (3, 3), 0.6)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(2.0)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    poses2d = np.stack([
        _keypoints_2d(assets, rng, i, meshes[i].vertices, a.joints[frame] @ R.T + t, raster,
                      scene.K, width, height)
        for i, a in enumerate(scene.actors)])
    return Frame(image, background, poses2d, raster.mesh_id)


# ----------------------------------------------------------------------------------------------
# Writing


def clothed_template(assets: SynthBodyAssets, person: Person, rng: np.random.Generator
                     ) -> np.ndarray:
    """(V,3) rest-pose template of this person's shape plus a few cm of 'clothing' along the
    normals (3DPW's v_template_clothed)."""
    verts, _ = assets.evaluate(np.zeros((1, 72)), person.betas)
    thickness = 0.008 + 0.006 * rng.random(24)
    return verts[0] + assets.vertex_normals_rest * thickness[assets.part_labels][:, None]


def sequence_record(assets: SynthBodyAssets, scene: Scene, poses2d: np.ndarray,
                    cfg: SynthesizeConfig) -> dict:
    """The 3DPW pickle dict (plain numpy / python objects only)."""
    rng = np.random.default_rng([*scene.key, 999])
    actors = scene.actors
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    return {
        "sequence": scene.name,
        "betas": [f64(a.betas) for a in actors],
        "betas_clothed": [f64(a.betas + rng.normal(0, 0.05, 10)) for a in actors],
        "v_template_clothed": [f64(clothed_template(assets, a, rng)) for a in actors],
        "genders": [a.gender for a in actors],
        "texture_maps": [texture_map(a.palette, cfg.texture_size, rng) for a in actors],
        "poses": [f64(a.poses) for a in actors],
        "poses_60Hz": [f64(a.poses_60) for a in actors],
        "trans": [f64(a.trans) for a in actors],
        "trans_60Hz": [f64(a.trans_60) for a in actors],
        "poses2d": [f64(poses2d[:, i]) for i in range(len(actors))],
        "jointPositions": [f64(a.joints.reshape(scene.num_frames, 72)) for a in actors],
        "campose_valid": [scene.campose_valid.copy() for _ in actors],
        "img_frame_ids": np.arange(scene.num_frames, dtype=np.int64),
        "cam_poses": f64(scene.cam_poses),
        "cam_intrinsics": f64(scene.K),
    }


def write_sequence(assets: SynthBodyAssets, scene: Scene, root: Path, cfg: SynthesizeConfig,
                   on_frame=None) -> int:
    """Render all frames of `scene` to <root>/imageFiles/<name>/ and write its pickle."""
    image_dir = root / IMAGE_DIR / scene.name
    image_dir.mkdir(parents=True, exist_ok=True)
    poses2d = np.zeros((scene.num_frames, len(scene.actors), 3, 18))
    params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]
    for i in range(scene.num_frames):
        frame = render_frame(assets, scene, i, cfg.width, cfg.height)
        ok, jpeg = cv2.imencode(".jpg", frame.image, params)
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {scene.name} frame {i}")
        (image_dir / IMAGE_PATTERN.format(i)).write_bytes(jpeg.tobytes())
        poses2d[i] = frame.poses2d
        if on_frame is not None:
            on_frame()
    record = sequence_record(assets, scene, poses2d, cfg)
    pkl_dir = root / SEQUENCE_DIR / scene.split
    pkl_dir.mkdir(parents=True, exist_ok=True)
    with open(pkl_dir / f"{scene.name}.pkl", "wb") as f:
        pickle.dump(record, f, protocol=PICKLE_PROTOCOL)
    return scene.num_frames


def two_actor_indices(cfg: SynthesizeConfig, split: str) -> set[int]:
    """Which sequences of a split have two annotated actors (a seeded, fixed choice)."""
    count = cfg.sequences_per_split[split]
    k = int(round(cfg.two_actor_fraction * count))
    if cfg.two_actor_fraction > 0 and count >= 2:
        k = max(k, 1)
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), 77])
    return set(rng.permutation(count)[:k].tolist())


def synthesize(out_root: str | Path, body, cfg: SynthesizeConfig, progress: bool = True) -> dict:
    """Write a synthetic 3DPW to out_root (replaced atomically as a whole). `body` is a
    stdformer.body.BodyModel. Returns a report: sequences per split, frames, tracks, seconds."""
    cfg.validate()
    assets = SynthBodyAssets(body)
    start = time.perf_counter()
    report = {"sequences": {}, "frames": 0, "tracks": 0, "two_actor_sequences": 0,
              "invalid_campose_frames": 0}
    with atomic_output(out_root, directory=True) as tmp:
        tmp.chmod(0o755)  # a temp directory starts private; the data set is not
        bar = progress_bar(total=total_frames(cfg), unit="frame", desc="synthesize",
                           disable=not progress)
        (tmp / IMAGE_DIR).mkdir()
        for split in SPLITS:
            (tmp / SEQUENCE_DIR / split).mkdir(parents=True)  # every split, even when empty
            names = []
            doubles = two_actor_indices(cfg, split)
            for index in range(cfg.sequences_per_split[split]):
                scene = build_scene(assets, cfg, split, index, index in doubles)
                bar.set_postfix_str(scene.name)
                report["frames"] += write_sequence(assets, scene, tmp, cfg, bar.update)
                report["tracks"] += len(scene.actors)
                report["two_actor_sequences"] += len(scene.actors) > 1
                report["invalid_campose_frames"] += int((~scene.campose_valid).sum())
                names.append(scene.name)
            report["sequences"][split] = names
        bar.close()
    seconds = time.perf_counter() - start
    report["seconds"] = round(seconds, 2)
    report["frames_per_second"] = round(report["frames"] / max(seconds, 1e-9), 1)
    log.info("synthesized %d frames (%d tracks) in %.1f s (%.1f frames/s) -> %s",
             report["frames"], report["tracks"], seconds, report["frames_per_second"], out_root)
    return report
