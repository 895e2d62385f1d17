"""`stdformer predict` on the synthetic test videos, scored against the annotations.

    python benchmarks/predict.py                       # after `dvc repro` (data/, models/)
    python benchmarks/predict.py --model models:/stdformer@champion --device cuda
    python benchmarks/predict.py --detector-sweep      # recall and speed of HOG settings
    python benchmarks/predict.py --speed               # frames/s per phase, 640x480 + 1920x1080

`--speed` needs no data: it renders a synthetic two-person video, writes it at each size, and
times predict's phases one by one (decode, detect, track, crop, model, draw, encode: each phase
alone, its frames/s over all the video's frames) beside decode alone (the bound of every pass that
reads the video), then the whole `predict_video` run. Without --model's file a randomly
initialised model of params.yaml's `model` section runs (speed does not depend on the weights).

Each test sequence of the synthetic set is written as an H.264 video and run through predict with
the default detector (not the annotations). Printed per sequence and overall:

* recall: annotated people (visible: more than `min_keypoints` confident keypoints, as preprocess
  counts them) whose full-body box (the projected body) has a detection with IoU >= 0.5;
* tracks and identity switches: per person, the track whose box matches it (IoU >= 0.5) changes;
* placement: IoU of the box of predict's mesh, placed by its translation and projected through
  the assumed full-frame camera, with the annotated body's box (median; pose-independent-ish);
* MPJPE / PA-MPJPE of predict's meshes on the frames where a track covers an annotated person
  (the track matched to that person most often), next to evaluate's merged predictions of the
  same model on the same frames (crops from the annotations);
* end-to-end frames/s of predict (reading, detection, tracking, crops, model, files, overlay),
  and CPU seconds per frame (all threads; meaningful when other work shares the machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stdformer.body import BodyModel, PosingArrays  # noqa: E402
from stdformer.data import crops  # noqa: E402
from stdformer.data.preprocess_config import PreprocessConfig  # noqa: E402
from stdformer.data.render import project_points  # noqa: E402
from stdformer.data.targets import body_targets, camera_mesh, project  # noqa: E402
from stdformer.data.threedpw import iter_tracks  # noqa: E402
from stdformer.inference import HOGConfig, PredictConfig, load_inference_model  # noqa: E402
from stdformer.inference import predict_video  # noqa: E402
from stdformer.inference.demo import pick_sequence, sequence_frames  # noqa: E402
from stdformer.inference.blazepose import person_detector  # noqa: E402
from stdformer.inference.detect import HOGPeopleDetector  # noqa: E402
from stdformer.inference.video import FrameSource, write_h264  # noqa: E402
from predict_speed import speed_main  # noqa: E402

IOU = 0.5


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """box (4,) vs boxes (N, 4), xyxy -> (N,)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    lo, hi = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda b: np.prod(b[..., 2:] - b[..., :2], axis=-1)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def annotations(root: Path, body_dir: Path, body, split: str, cfg: PreprocessConfig) -> dict:
    """sequence -> [{actor, box (N, 4) projected body, visible (N,)}]; `body` the BodyModel of
    body_dir."""
    arrays = PosingArrays.load(body_dir)
    out: dict[str, list] = {}
    for track in iter_tracks(root, split):
        targets = body_targets(track, arrays, str(track.pkl_path))
        uv, _ = project(camera_mesh(body, targets), track.intrinsics)
        visible = crops.keypoint_boxes(track.poses2d, cfg.keypoint_conf, cfg.min_keypoints)[2]
        out.setdefault(track.sequence, []).append(
            {"actor": track.actor, "box": np.concatenate([uv.min(1), uv.max(1)], 1),
             "visible": visible})
    return out


# --------------------------------------------------------------------------------------------
# Detector sweep


def detector_sweep(root: Path, people: dict, settings: list[dict]) -> list[dict]:
    rows = []
    for setting in settings:
        detector = HOGPeopleDetector(HOGConfig(**setting))
        found = total = found_all = total_all = 0
        start, frames = time.perf_counter(), 0
        for sequence, actors in sorted(people.items()):
            for frame in FrameSource(root / "imageFiles" / sequence):
                boxes = detector(frame.image).xyxy
                frames += 1
                for a in actors:
                    hit = len(boxes) > 0 and iou(a["box"][frame.index], boxes).max() >= IOU
                    total_all += 1
                    found_all += hit
                    if a["visible"][frame.index]:
                        total += 1
                        found += hit
        rows.append({**setting, "recall_visible": found / max(total, 1),
                     "recall_all": found_all / max(total_all, 1), "visible": total,
                     "frames_per_s": frames / (time.perf_counter() - start)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# --------------------------------------------------------------------------------------------
# Predict vs annotations vs evaluate


def evaluate_tracks(shards: Path, model, split: str, body) -> dict:
    """(sequence, actor) -> evaluate's TrackPrediction of the model (merged windows); `body`
    (a BodyModel) poses the ground truth."""
    from stdformer.data.manifest import read_manifest
    from stdformer.data.shards import list_shards, make_clip_loader
    from stdformer.scoring.predict import (model_predictor, predict_tracks, track_layout,
                                              with_mesh)

    layout = track_layout(read_manifest(shards), split)
    loader = make_clip_loader(list_shards(shards, split), batch_size=8, frames_dtype="uint8",
                              num_workers=0)
    return {(p.sequence, p.actor): p for p in predict_tracks(
        with_mesh(loader, body),
        {"m": model_predictor(model.model, torch.device("cpu"))}, layout)}


def score_sequence(out: dict, actors: list, evaluated: dict, sequence: str, regressor) -> dict:
    """Recall, switches and errors of one sequence's predict output (npz arrays)."""
    from stdformer.scoring.track_scores import track_errors

    result = {"people": len(actors), "tracks": int(len(np.unique(out["track_id"]))),
              "switches": 0, "predict": [], "evaluate": [], "pa_predict": [], "pa_evaluate": [],
              "mesh_box_iou": []}
    for a in actors:
        n = len(a["box"])
        matched = np.full(n, -1)
        for f in range(n):
            rows = np.flatnonzero((out["frame"] == f) & out["detected"])
            if len(rows) and a["visible"][f]:
                overlap = iou(a["box"][f], out["box"][rows])
                if overlap.max() >= IOU:
                    matched[f] = out["track_id"][rows[overlap.argmax()]]
        ids = matched[matched >= 0]
        result["switches"] += int((ids[1:] != ids[:-1]).sum())
        ref = evaluated.get((sequence, a["actor"]))
        if not len(ids) or ref is None:
            continue
        track = np.bincount(ids).argmax()                     # the person's track
        rows = np.flatnonzero(out["track_id"] == track)
        frames = out["frame"][rows]
        frames, rows = frames[frames < len(ref.valid)], rows[frames < len(ref.valid)]
        valid = ref.valid[frames]
        if not valid.any():
            continue
        placed = out["vertices"][rows] + out["translation"][rows][:, None]   # camera frame
        uv = project_points(placed, out["intrinsics"])
        mesh_boxes = np.concatenate([uv.min(1), uv.max(1)], axis=1)
        result["mesh_box_iou"] += [float(iou(a["box"][f], mesh_boxes[i:i + 1])[0])
                                   for i, f in enumerate(frames) if valid[i]]
        for name, vertices in (("predict", out["vertices"][rows]),
                               ("evaluate", ref.vertices["m"][frames])):
            errors = track_errors(vertices, ref.gt_vertices[frames], ref.gt_h36m[frames], valid,
                                  regressor)
            result[name] += errors["mpjpe"][valid].tolist()
            result[f"pa_{name}"] += errors["pa_mpjpe"][valid].tolist()
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/raw/synthetic")
    parser.add_argument("--body", default="data/body")
    parser.add_argument("--shards", default="data/shards/3dpw")
    parser.add_argument("--model", default="models/stdformer.pt")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", default="test")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--detector-sweep", action="store_true")
    parser.add_argument("--speed", action="store_true", help="frames/s per phase (no data needed)")
    parser.add_argument("--frames", type=int, default=90, help="--speed: frames of the video")
    parser.add_argument("--threads", type=int, default=2, help="--speed: CPU threads")
    args = parser.parse_args(argv)
    if args.speed:
        return speed_main(args)

    from stdformer.config import load_section

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    crop = load_section("preprocess", PreprocessConfig, args.params)
    root = Path(args.root)
    body = BodyModel.from_dir(args.body)
    people = annotations(root, Path(args.body), body, args.split, crop)
    if args.detector_sweep:
        settings = [dict(upscale=1.0, win_stride=8, scale=1.05),
                    dict(upscale=1.5, win_stride=8, scale=1.05),
                    dict(upscale=2.0, win_stride=8, scale=1.05),
                    dict(upscale=2.0, win_stride=8, scale=1.1),
                    dict(upscale=2.0, win_stride=4, scale=1.1),
                    dict(upscale=2.0, win_stride=4, scale=1.05),
                    dict(upscale=2.0, win_stride=8, scale=1.05, hit_threshold=-0.3),
                    dict(upscale=2.5, win_stride=4, scale=1.1)]
        return {"sweep": detector_sweep(root, people, settings)}

    model = load_inference_model(args.model, args.body, device=args.device)
    evaluated = evaluate_tracks(Path(args.shards), model, args.split, body)
    regressor = model.regressor.double()
    cfg = PredictConfig(device=args.device, glb=False)
    detector = person_detector(cfg.detector)
    per_sequence, seconds, cpu_seconds, frames = {}, 0.0, 0.0, 0
    found = total = 0
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        for sequence, actors in sorted(people.items()):
            video = Path(tmp) / f"{sequence}.mp4"
            write_h264(video, sequence_frames(root, pick_sequence(root, args.split, sequence)),
                       30.0)
            for frame in FrameSource(video):                          # raw detector recall
                boxes = detector(frame.image).xyxy
                for a in actors:
                    if a["visible"][frame.index]:
                        total += 1
                        found += len(boxes) > 0 and iou(a["box"][frame.index], boxes).max() >= IOU
            cpu = time.process_time()
            result = predict_video(video, model, Path(tmp) / "out", cfg, crop,
                                   show_progress=False)
            cpu_seconds += time.process_time() - cpu
            seconds += result.seconds
            frames += result.num_frames
            with np.load(result.files["npz"]) as z:
                out = {k: z[k] for k in z.files}
            per_sequence[sequence] = score_sequence(out, actors, evaluated, sequence, regressor)
    mean = lambda key: float(np.mean([v for s in per_sequence.values() for v in s[key]]))  # noqa
    summary = {
        "detector_recall_visible": found / max(total, 1), "visible_person_frames": total,
        "people": sum(s["people"] for s in per_sequence.values()),
        "tracks": sum(s["tracks"] for s in per_sequence.values()),
        "identity_switches": sum(s["switches"] for s in per_sequence.values()),
        "scored_frames": sum(len(s["predict"]) for s in per_sequence.values()),
        "mpjpe_predict": mean("predict"), "mpjpe_evaluate_same_frames": mean("evaluate"),
        "pa_mpjpe_predict": mean("pa_predict"), "pa_mpjpe_evaluate_same_frames":
            mean("pa_evaluate"),
        "mesh_box_iou_median": float(np.median([v for s in per_sequence.values()
                                                for v in s["mesh_box_iou"]])),
        "frames_per_s": frames / seconds, "cpu_seconds_per_frame": cpu_seconds / frames,
        "load_average": __import__("os").getloadavg()[0], "device": args.device, "model": args.model}
    for name, s in per_sequence.items():
        print(f"{name}: {s['people']} people, {s['tracks']} tracks, {s['switches']} switches, "
              f"{len(s['predict'])} scored frames")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
