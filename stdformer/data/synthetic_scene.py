"""Every random choice of one synthetic sequence (`build_scene`): the annotated people and
their motion, the camera path and intrinsics, distractors, occluders, frames with a wrong stored
camera pose, the backdrop. Drawn from the sequence's own seeded generator (see synthetic.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

from stdformer.data import motion as motion_lib
from stdformer.data.render import Mesh, box_mesh
from stdformer.data.synthetic_appearance import (
    Backdrop, face_colors_for, hsv_color, make_backdrop, person_palette,
)
from stdformer.data.synthetic_assets import SynthBodyAssets
from stdformer.data.synthetic_config import FPS, SynthesizeConfig
from stdformer.data.threedpw import SPLITS

MAX_OCCLUDED_FRACTION = 0.4  # occluders / distractors cross the target, they do not park on it


# ----------------------------------------------------------------------------------------------
# Camera


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """World->camera (4,4) for an OpenCV camera (x right, y down, z forward) at `eye` looking at
    `target` in a y-up world."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    R = Rotation.from_rotvec([0, 0, roll]).as_matrix() @ R
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = R, -R @ eye
    return pose


def intrinsics(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Pinhole K (3,3) with focal ~ image width (like a phone camera) and a near-centre point."""
    f = max(width, height) * rng.uniform(0.95, 1.25)
    cx = width / 2 + rng.uniform(-0.02, 0.02) * width
    cy = height / 2 + rng.uniform(-0.02, 0.02) * height
    return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])


# ----------------------------------------------------------------------------------------------
# Scene


@dataclass
class Person:
    """One rendered person. Arrays at 30 Hz unless named *_60: vertices (N,V,3) world,
    joints (N,24,3) world; poses (N,72); trans (N,3); face_colors (F,3) BGR."""

    betas: np.ndarray
    gender: str
    style: str
    poses_60: np.ndarray
    trans_60: np.ndarray
    vertices: np.ndarray
    joints: np.ndarray
    face_colors: np.ndarray
    palette: np.ndarray
    root_xz_60: np.ndarray  # (2N,2) pelvis path on the ground
    heading_60: np.ndarray  # (2N,) facing direction (sin h, 0, cos h)

    @property
    def poses(self):
        return self.poses_60[::2]

    @property
    def trans(self):
        return self.trans_60[::2]


@dataclass
class Scene:
    """Everything needed to render one sequence. cam_poses (N,4,4) are the annotated
    (stored) extrinsics; render_cam_poses differ from them where campose_valid is False."""

    name: str
    split: str
    key: tuple
    num_frames: int
    K: np.ndarray
    cam_poses: np.ndarray
    render_cam_poses: np.ndarray
    campose_valid: np.ndarray
    actors: list[Person]
    distractors: list[Person]
    occluders: list[Mesh] = field(default_factory=list)  # world-frame boxes
    backdrop: Backdrop | None = None
    rays_cam: np.ndarray | None = None  # cache of camera_rays(K, H, W)


def make_person(assets: SynthBodyAssets, rng: np.random.Generator, num_frames: int,
                motion_kwargs: dict | None = None,
                motion: motion_lib.Motion | None = None, side_cues: bool = False) -> Person:
    """Sample shape and appearance (and motion of 2*num_frames at 60 Hz unless given), and put
    the feet on the ground plane y = 0. side_cues: see `face_colors_for`."""
    betas = np.clip(rng.normal(0.0, 0.9, 10), -2.5, 2.5)
    gender = "m" if rng.random() < 0.5 else "f"
    if motion is None:
        motion = motion_lib.generate_motion(rng, 2 * num_frames, fps=2 * FPS,
                                            **(motion_kwargs or {}))
    # The body is evaluated at 30 Hz only (the images); the 60 Hz root height is interpolated.
    vertices, joints = assets.evaluate(motion.poses[::2], betas)  # (N,V,3), no translation
    # SMPL rotates about the rest pelvis J0(betas), so the posed root joint stays at J0.
    pelvis = joints[0, 0]
    lift = -vertices[..., 1].min(axis=1)  # root height putting the lowest vertex on y = 0
    t60 = np.arange(2 * num_frames) / 2.0
    lift_60 = gaussian_filter1d(np.interp(t60, np.arange(num_frames), lift), 2.0, mode="nearest")
    trans_60 = np.stack([motion.root_xz[:, 0] - pelvis[0], lift_60,
                         motion.root_xz[:, 1] - pelvis[2]], -1)
    palette = person_palette(rng)
    return Person(betas=betas, gender=gender, style=motion.style, poses_60=motion.poses,
                  trans_60=trans_60, vertices=vertices + trans_60[::2, None],
                  joints=joints + trans_60[::2, None],
                  face_colors=face_colors_for(assets, palette, rng, side_cues), palette=palette,
                  root_xz_60=motion.root_xz, heading_60=motion.heading)


def _camera_path(rng, actors: list[Person], num_frames: int, K: np.ndarray,
                 height: int) -> np.ndarray:
    """(N,4,4) world->camera: slow orbit around the actors, smooth pan, a little hand shake.
    Two people are seen roughly side by side (not one hiding the other all along)."""
    t = np.arange(num_frames) / FPS
    pelvis_xz = np.mean([a.joints[:, 0][:, [0, 2]] for a in actors], axis=0)  # (N,2)
    target_xz = gaussian_filter1d(pelvis_xz, 8.0, axis=0, mode="nearest")
    # Person height on screen (pixels): smaller when two people must fit side by side.
    people_height = rng.uniform(0.45, 0.62) * height * (0.8 if len(actors) > 1 else 1.0)
    distance = K[0, 0] * 1.75 / people_height
    if len(actors) > 1:
        mid = num_frames // 2
        gap = actors[1].joints[mid, 0] - actors[0].joints[mid, 0]
        side = 1.0 if rng.random() < 0.5 else -1.0  # from the front or the back of the pair
        azimuth0 = np.arctan2(-side * gap[2], side * gap[0]) + rng.uniform(-0.5, 0.5)
        orbit = rng.uniform(-0.12, 0.12)
    else:
        azimuth0, orbit = rng.uniform(-np.pi, np.pi), rng.uniform(-0.3, 0.3)
    azimuth = azimuth0 + orbit * t
    azimuth += 0.04 * motion_lib.smooth_noise(rng, num_frames, FPS * 1.0)[:, 0]
    dist = distance * (1 + 0.06 * motion_lib.smooth_noise(rng, num_frames, FPS * 1.5)[:, 0])
    eye_height = rng.uniform(0.8, 2.0)
    shake = motion_lib.smooth_noise(rng, num_frames, 3.0, 4)
    poses = np.empty((num_frames, 4, 4))
    for i in range(num_frames):
        eye = np.array([target_xz[i, 0] + dist[i] * np.sin(azimuth[i]), eye_height,
                        target_xz[i, 1] + dist[i] * np.cos(azimuth[i])])
        target = np.array([target_xz[i, 0], 0.9, target_xz[i, 1]]) + 0.02 * shake[i, :3]
        poses[i] = look_at(eye, target, roll=0.012 * shake[i, 3])
    return poses


def _perturb(pose: np.ndarray, rotvec: np.ndarray, shift: np.ndarray) -> np.ndarray:
    out = pose.copy()
    out[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix() @ pose[:3, :3]
    out[:3, 3] = out[:3, 3] + shift
    return out


def _cam_centres(cam_poses):
    return -np.einsum("nji,nj->ni", cam_poses[:, :3, :3], cam_poses[:, :3, 3])


def _crossing_point(rng, cam_poses, actors, frame, near_far):
    """A ground point on the line of sight from the camera to actor 0 at `frame`, at a random
    fraction of the distance from `near_far` ranges ((lo, hi), ...)."""
    centre = _cam_centres(cam_poses[frame:frame + 1])[0][[0, 2]]
    target = actors[0].joints[frame, 0][[0, 2]]
    lo, hi = near_far[rng.integers(len(near_far))]
    s = rng.uniform(lo, hi)
    return centre + s * (target - centre), target - centre


def _occluding_frames(cam_poses, K, obj_xz, obj_radius, people_xz, body_radius=0.25):
    """(N,) bool: frames where an upright object at ground position obj_xz ((N,2) or (2,)) of
    horizontal radius obj_radius is in front of some person and overlaps them in the image
    (horizontally, using the pelvis column)."""
    n = len(cam_poses)
    obj = np.broadcast_to(np.asarray(obj_xz, np.float64), (n, 2))
    R, t = cam_poses[:, :3, :3], cam_poses[:, :3, 3]

    def column(xz):  # pixel column and depth of a point at hip height above xz
        p = np.stack([xz[:, 0], np.full(n, 0.9), xz[:, 1]], -1)
        c = np.einsum("nij,nj->ni", R, p) + t
        return K[0, 0] * c[:, 0] / np.maximum(c[:, 2], 1e-3) + K[0, 2], c[:, 2]

    u_obj, z_obj = column(obj)
    hit = np.zeros(n, bool)
    for person in people_xz:
        u_p, z_p = column(person)
        reach = K[0, 0] * (obj_radius / np.maximum(z_obj, 1e-3)
                           + body_radius / np.maximum(z_p, 1e-3))
        hit |= (z_obj < z_p) & (np.abs(u_obj - u_p) < reach)
    return hit


def _clear_of(path_xz, others_xz, radius):
    return all(np.linalg.norm(path_xz - o, axis=-1).min() > radius for o in others_xz)


def _scene_key(cfg: SynthesizeConfig, split: str, index: int) -> tuple[int, int, int]:
    return (cfg.seed, SPLITS.index(split), index)


def _draw_num_frames(rng: np.random.Generator, cfg: SynthesizeConfig) -> int:
    """A sequence's length: the first draw of its generator (so it is known before rendering)."""
    return int(rng.integers(cfg.min_frames, cfg.max_frames + 1))


def total_frames(cfg: SynthesizeConfig) -> int:
    """Frames `synthesize` will render (for its progress)."""
    return sum(_draw_num_frames(np.random.default_rng(list(_scene_key(cfg, split, index))), cfg)
               for split in SPLITS for index in range(cfg.sequences_per_split[split]))


def build_scene(assets: SynthBodyAssets, cfg: SynthesizeConfig, split: str, index: int,
                two_actors: bool) -> Scene:
    """Draw every random choice of one sequence from its own seeded generator."""
    key = _scene_key(cfg, split, index)
    rng = np.random.default_rng(list(key))
    n = _draw_num_frames(rng, cfg)
    K = intrinsics(rng, cfg.width, cfg.height)

    first = make_person(assets, rng, n, {"start_xz": (0.0, 0.0)}, side_cues=cfg.side_cues)
    actors = [first]
    if two_actors:
        # A companion about a metre to the side: walking alongside on a parallel path (so the
        # two never collide), or standing next to a standing first actor.
        side = rng.choice([-1.0, 1.0]) * rng.uniform(0.9, 1.3)
        heading = first.heading_60
        lateral = side * np.stack([np.cos(heading), -np.sin(heading)], -1)  # (2N,2) sideways
        if first.style.startswith("walk"):
            kwargs = {"style": str(rng.choice(["walk", "walk_wave"])),
                      "path": (first.root_xz_60 + lateral, heading)}
        else:
            kwargs = {"style": str(rng.choice(["wave", "squat"])),
                      "start_xz": tuple(first.root_xz_60[0] + lateral[0]),
                      "heading0": float(heading[0] + rng.uniform(-0.8, 0.8))}
        actors.append(make_person(assets, rng, n, kwargs, side_cues=cfg.side_cues))

    cam_poses = _camera_path(rng, actors, n, K, cfg.height)
    centres_xz = _cam_centres(cam_poses)[:, [0, 2]]
    people_xz = [a.joints[:, 0][:, [0, 2]] for a in actors]

    distractors = []
    for _ in range(cfg.distractors):
        for attempt in range(8):
            frame = int(rng.integers(n // 4, max(n // 4 + 1, 3 * n // 4)))
            ranges = ((0.5, 0.8), (1.3, 1.9)) if attempt < 5 else ((1.5, 2.2),)
            point, los = _crossing_point(rng, cam_poses, actors, frame, ranges)
            perp = np.arctan2(los[1], -los[0]) + rng.uniform(-0.5, 0.5)  # heading across the LOS
            if rng.random() < 0.5:
                perp += np.pi
            mot = motion_lib.generate_motion(rng, 2 * n, fps=2 * FPS, style="walk",
                                             heading0=float(perp), turn_rate=0.0)
            mot.root_xz += point - mot.root_xz[2 * frame]  # at the crossing point at `frame`
            path = mot.root_xz[::2]
            covered = _occluding_frames(cam_poses, K, path, 0.25, people_xz).mean()
            if (_clear_of(path, people_xz, 0.7) and _clear_of(path, [centres_xz], 0.6)
                    and covered <= MAX_OCCLUDED_FRACTION):
                distractors.append(make_person(assets, rng, n, motion=mot,
                                               side_cues=cfg.side_cues))
                break

    occluders = []
    for _ in range(cfg.occluders):
        best = None  # (how far the occluded fraction is from the allowed range, mesh)
        for _attempt in range(8):
            frame = int(rng.integers(n // 5, max(n // 5 + 1, 4 * n // 5)))
            point, los = _crossing_point(rng, cam_poses, actors, frame, ((0.4, 0.75),))
            # Off the line of sight by up to ~half a body width: partial occlusions too.
            point = point + rng.uniform(-0.35, 0.35) * np.array([los[1], -los[0]]) / max(
                np.linalg.norm(los), 1e-6)
            if rng.random() < 0.6:  # pole
                size = np.array([rng.uniform(0.12, 0.3), rng.uniform(1.6, 3.0), 0.0])
                size[2] = size[0]
            else:  # panel / sign / low wall
                size = np.array([rng.uniform(0.6, 1.4), rng.uniform(0.7, 1.4),
                                 rng.uniform(0.05, 0.2)])
            radius = 0.5 * np.hypot(size[0], size[2])
            if not (_clear_of(point[None], people_xz, radius + 0.35)
                    and _clear_of(point[None], [centres_xz], radius + 0.4)):
                continue
            yaw = float(np.arctan2(los[0], los[1]))  # face the camera
            verts, faces = box_mesh(np.array([point[0], 0.0, point[1]]), size, yaw)
            color = hsv_color(rng, sat=(0.1, 0.9), val=(0.25, 0.9))
            colors = np.clip(color * rng.uniform(0.9, 1.1, (len(faces), 1)), 0, 255)
            covered = _occluding_frames(cam_poses, K, point, 0.5 * size[0], people_xz).mean()
            miss = max(0.0, covered - MAX_OCCLUDED_FRACTION) + (covered == 0)
            if best is None or miss < best[0]:
                best = (miss, Mesh(verts, faces, colors))
            if miss == 0:
                break
        if best is not None:
            occluders.append(best[1])

    # Frames whose stored camera pose is wrong: the image uses a perturbed camera.
    campose_valid = np.ones(n, bool)
    render_cam_poses = cam_poses.copy()
    bad = int(round(cfg.invalid_campose_fraction * n))
    if cfg.invalid_campose_fraction > 0:
        bad = max(bad, 1)
    if bad:
        start = int(rng.integers(0, n - bad + 1))
        axis = rng.normal(size=3)
        rotvec = axis / np.linalg.norm(axis) * np.deg2rad(rng.uniform(3.0, 6.0))
        shift = rng.uniform(-0.2, 0.2, 3)
        campose_valid[start:start + bad] = False
        for i in range(start, start + bad):
            render_cam_poses[i] = _perturb(cam_poses[i], rotvec, shift)

    name = f"synth_{split}_{index:02d}_{actors[0].style}"
    return Scene(name=name, split=split, key=key, num_frames=n, K=K, cam_poses=cam_poses,
                 render_cam_poses=render_cam_poses, campose_valid=campose_valid, actors=actors,
                 distractors=distractors, occluders=occluders, backdrop=make_backdrop(rng))
