"""Shared pieces of the evaluation tests (test_evaluate.py, test_evaluate_stage.py): a hand-made
data set with exactly known ground truth (conftest.py's `eval_data`) and predictors built from
it.

The data is hand-made: a 500-vertex procedural body posed with smooth random motion, cut into
4-frame clips at stride 4 plus the last 4 frames (as preprocess does), written with the real
shard writer. Ground truth is therefore known exactly, so predictors built from it (perfect,
noisy, per-track constant) have known scores.
"""

from pathlib import Path

import numpy as np
import torch

from stdformer.data.manifest import write_manifest
from stdformer.data.preprocess_config import clip_starts
from stdformer.data.shards import clip_key, encode_clip, write_shards
from stdformer.evaluation.overlays import OverlayCollector
from stdformer.scoring.run import evaluate_predictors

REPO = Path(__file__).resolve().parents[1]
S = 4                 # clip length
CROP = 32
F_PIX = 45.0          # crop intrinsics focal length (pixels); body 3 m away
ROOT_CAM = np.array([0.0, 0.1, 3.0], np.float32)
# split -> [(sequence, actor, frames, invalid frame indices)]
TRACKS = {
    "test": [("seqA", 0, 13, (5,)), ("seqA", 1, 10, ()), ("seqB", 0, 9, (0, 7))],
    "train": [("trainA", 0, 8, ()), ("trainB", 0, 8, (3,))],
}


# --------------------------------------------------------------------------------------------
# Data


def _track_targets(body, frames: int, seed: int) -> dict[str, np.ndarray]:
    """Smooth random motion in the camera frame (y down, facing the camera), root-relative."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None]
    amplitude, phase = rng.uniform(0.1, 0.4, (1, 69)), rng.uniform(0, 2 * np.pi, (1, 69))
    pose = np.zeros((frames, 72))
    pose[:, 0] = np.pi                                         # SMPL y-up -> camera y-down
    pose[:, 3:] = amplitude * np.sin(0.12 * t + phase)      # ~0.6 Hz at 30 fps
    betas = np.tile(rng.normal(0, 0.5, (1, 10)), (frames, 1))
    with torch.no_grad():
        out = body(torch.tensor(pose, dtype=torch.float32),
                   torch.tensor(betas, dtype=torch.float32))
    root = out.joints[:, :1]
    vertices = (out.vertices - root).numpy()
    h36m = (out.joints_h36m - root).numpy()
    K = np.array([[F_PIX, 0, (CROP - 1) / 2], [0, F_PIX, (CROP - 1) / 2], [0, 0, 1]])
    cam_points = h36m + ROOT_CAM
    uv = cam_points @ K.T
    joints2d = np.concatenate([uv[..., :2] / uv[..., 2:], np.ones((frames, 17, 1))], -1)
    return {"vertices": vertices, "joints3d": (out.joints[:, :24] - root).numpy(),
            "joints_h36m": h36m, "joints2d": joints2d, "keypoints2d": np.zeros((frames, 18, 3)),
            "pose": pose, "betas": betas,
            "affine": np.tile(np.array([[1, 0, 0], [0, 1, 0]], np.float32), (frames, 1, 1)),
            "root_cam": np.tile(ROOT_CAM, (frames, 1)), "intrinsics": K.astype(np.float32)}


def make_eval_data(root: Path):
    """(body_dir, shards_dir, body, ground truth {(split, seq, actor): targets + valid})."""
    import cv2

    from stdformer.body.files import write_body_dir
    from stdformer.body.model import BodyModel

    body_dir, shards = root / "body", root / "shards"
    write_body_dir(body_dir, resolution=500)
    body = BodyModel.from_dir(body_dir)
    truth, rows = {}, []
    for split, tracks in TRACKS.items():
        samples = []
        for k, (seq, actor, n, invalid) in enumerate(tracks):
            targets = _track_targets(body, n, seed=100 * len(split) + k)
            valid = np.ones(n, bool)
            valid[list(invalid)] = False
            targets["valid"] = valid
            truth[(split, seq, actor)] = targets
            rng = np.random.default_rng(k)
            for start in clip_starts(n, S, S):
                sl = slice(start, start + S)
                jpegs = [cv2.imencode(".jpg", rng.integers(0, 255, (CROP, CROP, 3), np.uint8))[1]
                         .tobytes() for _ in range(S)]
                clip = {name: (a if name == "intrinsics" else a[sl]) for name, a in
                        targets.items() if name != "vertices"}   # posed by evaluate
                key = clip_key(seq, actor, start)
                samples.append(encode_clip(key, jpegs, clip, {
                    "sequence": seq, "actor": actor, "split": split, "source": "test",
                    "clip_start": start, "frame_ids": list(range(100 + start, 100 + start + S)),
                    "crop_size": CROP, "context_size": CROP,
                    "body_model_id": body.body_model_id}))
                rows.append({"key": key, "split": split, "sequence": seq, "actor": actor,
                             "frame_start": start, "frame_end": start + S, "num_frames": S,
                             "num_valid": int(valid[sl].sum()), "valid": valid[sl].tolist(),
                             "source": "test", "camera": 0, "crop_size": CROP,
                             "context_size": CROP})
        placed = write_shards(shards / split, samples, samples_per_shard=3)
        shard_of = dict(placed)
        for row in rows:
            if row["split"] == split:
                row["shard"] = f"{split}/{shard_of[row['key']]}"
    write_manifest(shards, rows)
    return body_dir, shards, body, truth


def regressor_of(body) -> torch.Tensor:
    return body.J_regressor_h36m.double()


def valid_frames(truth, split="test") -> int:
    return sum(int(v["valid"].sum()) for (s, *_), v in truth.items() if s == split)


def perfect(batch):
    b, s = batch["frames"].shape[:2]
    cam = torch.tensor([0.5, 0.0, 0.0]).expand(b, s, 3)
    return {"vertices": batch["targets"]["vertices"], "cam": cam}


def noisy(batch, sigma=0.02):
    """Ground truth with i.i.d. per-frame jitter that root alignment does not remove: a random
    scale and per-vertex noise (seeded by the clip: deterministic)."""
    out = []
    for verts, meta in zip(batch["targets"]["vertices"], batch["meta"]):
        gen = torch.Generator().manual_seed(1000 * meta["actor"] + meta["clip_start"])
        scale = 1 + torch.randn(verts.shape[0], 1, 1, generator=gen) * 0.03   # per frame
        wobble = torch.randn(verts.shape, generator=gen) * sigma
        out.append(verts * scale + wobble)
    return {"vertices": torch.stack(out)}


def run(predictors, eval_data, overlay_keys=(), **kw):
    """evaluate_predictors on the test split, collecting `overlay_keys` as the stage does."""
    body_dir, shards, body, _ = eval_data
    collector = OverlayCollector(overlay_keys)
    result = evaluate_predictors(predictors, shards, "test", body, batch_size=3,
                                 observers=[collector], **kw)
    result.overlay_clips = collector.ordered()
    return result
