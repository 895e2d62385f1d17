"""Procedural SMPL motion: walking gaits, arm waves and squats over a ground plane.

Conventions (SMPL rest pose): world y is up, the body faces +z, the body's left is +x. A joint's
axis-angle rotates its child bones in the parent frame, so with the T-pose rest frame:
* leg / downward arm swing forward  = rotation about x by a *negative* angle;
* knee flexion (shin backwards)     = rotation about x by a *positive* angle;
* lowering the arms from the T-pose = rotation about z: left arm -angle, right arm +angle;
* elbow flexion (forearm forwards)  = rotation about y: left -angle, right +angle.
Angles stay inside ordinary human joint ranges (hip -0.5..1.6 rad, knee 0..2.3 rad, ...).

`generate_motion` returns poses (T,72) and a root path on the ground (T,2) = (x, z); the
height of the root is set later from the body's lowest vertex (feet on the ground), because it
depends on the body shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

STYLES = ("walk", "walk_wave", "wave", "squat")
STYLE_WEIGHTS = (0.55, 0.15, 0.12, 0.18)

# SMPL joint indices used below.
L_HIP, R_HIP, SPINE1, L_KNEE, R_KNEE, SPINE2, L_ANKLE, R_ANKLE, SPINE3 = 1, 2, 3, 4, 5, 6, 7, 8, 9
NECK, L_COLLAR, R_COLLAR, HEAD, L_SHOULDER, R_SHOULDER = 12, 13, 14, 15, 16, 17
L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 18, 19, 20, 21


@dataclass
class Motion:
    """poses (T,72) axis-angle, root_xz (T,2) pelvis path on the ground, heading (T,) rad
    (facing direction (sin h, 0, cos h)), style name."""

    poses: np.ndarray
    root_xz: np.ndarray
    heading: np.ndarray
    style: str


def smooth_noise(rng: np.random.Generator, num_frames: int, sigma_frames: float,
                 dims: int = 1) -> np.ndarray:
    """Low-pass Gaussian noise (T, dims), unit standard deviation in expectation.

    Scaled by the theoretical std of Gaussian-filtered white noise (1 / sqrt(2 sqrt(pi) sigma)),
    not the sample std, so a short sequence does not blow a nearly constant offset up.
    """
    pad = int(4 * sigma_frames) + 1
    white = rng.standard_normal((num_frames + 2 * pad, dims))
    smooth = gaussian_filter1d(white, sigma_frames, axis=0, mode="nearest")[pad:pad + num_frames]
    return smooth * np.sqrt(2.0 * np.sqrt(np.pi) * max(sigma_frames, 1e-3))


def _rx(a):
    a = np.asarray(a, np.float64)
    return Rotation.from_rotvec(np.stack([a, 0 * a, 0 * a], -1))


def _ry(a):
    a = np.asarray(a, np.float64)
    return Rotation.from_rotvec(np.stack([0 * a, a, 0 * a], -1))


def _rz(a):
    a = np.asarray(a, np.float64)
    return Rotation.from_rotvec(np.stack([0 * a, 0 * a, a], -1))


def generate_motion(rng: np.random.Generator, num_frames: int, fps: float = 60.0,
                    style: str | None = None, start_xz=(0.0, 0.0), heading0: float | None = None,
                    speed: float | None = None, turn_rate: float | None = None,
                    path: tuple[np.ndarray, np.ndarray] | None = None) -> Motion:
    """Smooth, plausible motion of `num_frames` frames at `fps`.

    style: one of STYLES (random when None). Walking styles move along a gently turning path;
    "wave" and "squat" stand (small sway, slow heading drift). path: optional (root_xz (T,2),
    heading (T,)) to follow instead (e.g. walking next to someone).
    """
    if style is None:
        style = str(rng.choice(STYLES, p=STYLE_WEIGHTS))
    if style not in STYLES:
        raise ValueError(f"unknown motion style {style!r}; choose from {STYLES}")
    T = num_frames
    t = np.arange(T) / fps
    walking = style in ("walk", "walk_wave")
    heading0 = float(rng.uniform(-np.pi, np.pi)) if heading0 is None else heading0
    if speed is None:
        speed = float(rng.uniform(0.9, 1.4)) if walking else 0.0
    if turn_rate is None:
        turn_rate = float(rng.uniform(-0.45, 0.45)) if walking else float(rng.uniform(-0.1, 0.1))
    cadence = float(rng.uniform(0.85, 1.0))  # strides per second

    # Root path: heading integrates a smoothly varying turn rate; position integrates velocity.
    turn = turn_rate + 0.15 * smooth_noise(rng, T, fps * 0.8)[:, 0]
    heading = heading0 + np.cumsum(turn) / fps
    step = speed / fps
    velocity = np.stack([np.sin(heading), np.cos(heading)], -1) * step
    root_xz = np.asarray(start_xz, np.float64) + np.cumsum(velocity, 0) - velocity[0]
    if path is not None:
        root_xz, heading = np.asarray(path[0], np.float64), np.asarray(path[1], np.float64)

    phase = 2 * np.pi * cadence * t + rng.uniform(0, 2 * np.pi)  # left leg phase
    gait = 1.0 if walking else 0.0
    rot = {j: Rotation.identity(T) for j in range(24)}

    # ---- legs
    hip_amp, knee_amp = rng.uniform(0.32, 0.45), rng.uniform(0.85, 1.1)
    squat = np.zeros(T)
    if style == "squat":
        period = rng.uniform(2.0, 3.2)
        depth = rng.uniform(0.55, 1.0)
        squat = depth * (0.5 - 0.5 * np.cos(2 * np.pi * t / period + rng.uniform(0, np.pi)))
    for hip, knee, ankle, ph, side in ((L_HIP, L_KNEE, L_ANKLE, phase, 1.0),
                                       (R_HIP, R_KNEE, R_ANKLE, phase + np.pi, -1.0)):
        hip_flex = gait * (0.05 + hip_amp * np.sin(ph)) + 1.4 * squat
        knee_flex = gait * (0.08 + knee_amp * np.maximum(0.0, np.cos(ph + 0.3)) ** 2) + 2.1 * squat
        ankle_flex = gait * 0.15 * np.sin(ph - 0.5) - (2.1 - 1.4) * squat
        abduct = side * (0.06 + 0.03 * np.sin(ph)) * gait + side * 0.12 * squat
        if not walking:
            abduct = abduct + side * 0.05
        rot[hip] = _rz(abduct) * _rx(-np.clip(hip_flex, -0.5, 1.6))
        rot[knee] = _rx(np.clip(knee_flex, 0.0, 2.3))
        rot[ankle] = _rx(np.clip(ankle_flex, -0.6, 0.6))

    # ---- trunk and head: counter-rotation against the pelvis while walking, lean in squats
    pelvis_yaw = gait * 0.08 * np.sin(phase)
    lean = 0.05 * gait + 0.25 * squat
    rot[SPINE1] = _rx(lean) * _ry(-0.5 * pelvis_yaw)
    rot[SPINE2] = _rx(0.5 * lean) * _ry(-0.5 * pelvis_yaw)
    rot[SPINE3] = _rx(0.02 * np.ones(T))
    look = smooth_noise(rng, T, fps * 0.7, 2)
    rot[NECK] = _rx(0.05 + 0.05 * look[:, 0])
    rot[HEAD] = _ry(0.25 * look[:, 1]) * _rx(-0.08 * squat)

    # ---- arms: lowered from the T-pose, swinging opposite to the legs
    arm_amp = rng.uniform(0.2, 0.4)
    down = rng.uniform(1.2, 1.35)
    wave_env = np.zeros(T)
    if style == "wave":
        wave_env = np.ones(T)
    elif style == "walk_wave":
        start = rng.uniform(0.1, 0.5) * T / fps
        wave_env = 0.5 - 0.5 * np.cos(np.pi * np.clip((t - start) / 0.6, 0.0, 1.0))
    wave_side = 1.0 if rng.random() < 0.5 else -1.0  # +1: left arm waves
    wave_freq = rng.uniform(1.2, 2.0)
    wave = 1.3 + 0.45 * np.sin(2 * np.pi * wave_freq * t)
    for shoulder, elbow, collar, ph, side in (
            (L_SHOULDER, L_ELBOW, L_COLLAR, phase + np.pi, 1.0),
            (R_SHOULDER, R_ELBOW, R_COLLAR, phase, -1.0)):
        env = wave_env if side == wave_side else np.zeros(T)
        swing = gait * arm_amp * np.sin(ph) + 1.1 * squat
        bend = 0.25 + gait * 0.12 * (1 + np.sin(ph)) + 0.3 * squat
        lowered = (1 - env) * down + env * -0.35  # raised slightly above horizontal to wave
        rot[shoulder] = _rx(-(1 - env) * swing) * _rz(-side * lowered)
        rot[elbow] = _rz(side * env * wave) * _ry(-side * (1 - env) * bend)
        rot[collar] = _rz(-side * 0.05 * np.ones(T))

    # ---- global orientation: heading, small pelvis yaw
    rot[0] = _ry(heading + pelvis_yaw)

    rotvecs = np.stack([rot[j].as_rotvec() for j in range(24)], axis=1)  # (T,24,3)
    # Person-specific variety: small smooth perturbations of every body joint.
    jitter = 0.035 * smooth_noise(rng, T, fps * 0.5, 23 * 3).reshape(T, 23, 3)
    rotvecs[:, 1:] += jitter
    return Motion(rotvecs.reshape(T, 72), root_xz, heading, style)
