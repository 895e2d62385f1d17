"""Person detection and tracking of `stdformer predict` on synthetic videos with known people.

    python benchmarks/detector.py                          # BlazePose, detect every 2nd frame
    python benchmarks/detector.py --kind hog --every 1     # the HOG fallback
    python benchmarks/detector.py --sequences 2 --frames 40   # quicker

Scenes are rendered in memory by the synthetic-data renderer (procedural bodies), so every
person's full-body box (its projected mesh) and visible fraction (its pixels in the frame over
its pixels rendered alone) are known, the unannotated distractor people included. Cases:

* base:      the project's default scenes (1 distractor person, 1 occluding box or pole);
* clutter:   4 occluders and 2 distractor people per scene;
* occlusion: 3 occluders placed to cover the people part of the time;
* enter_leave: a window 1/2.5 of a wider frame pans across it, so people enter the picture on
  one side and leave on the other.

Figures (IoU on boxes clipped to the frame):

* recall: visible people (>= 40% of the body visible) with a detection of IoU >= 0.5, over the
  frames the detector ran on (recall_actors: the annotated people only, not the distractors,
  who are often far away and small);
* false boxes a frame: detections overlapping no person (IoU < 0.3);
* tracks (after ByteTrack and predict's track filters), false tracks (tracks overlapping no
  person in most of their frames), identity switches (a person's matched track id changes),
  coverage (a person's visible frames inside the span of its main track);
* detector ms a frame it runs on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stdformer.body import BodyModel, write_body_dir  # noqa: E402
from stdformer.data.render import Mesh, project_points, rasterize  # noqa: E402
from stdformer.data.synthetic import render_frame  # noqa: E402
from stdformer.data.synthetic_assets import SynthBodyAssets  # noqa: E402
from stdformer.data.synthetic_config import SynthesizeConfig  # noqa: E402
from stdformer.data.synthetic_scene import build_scene  # noqa: E402
from stdformer.inference.blazepose import box_iou, person_detector  # noqa: E402
from stdformer.inference.config import PredictConfig  # noqa: E402
from stdformer.inference.track import (min_detections, select_tracks,  # noqa: E402
                                       track_detections)

CASES = {
    "base": dict(distractors=1, occluders=1),
    "clutter": dict(distractors=2, occluders=4),
    "occlusion": dict(distractors=0, occluders=3),
    "enter_leave": dict(distractors=1, occluders=1),
}
PAN_WIDTH = 2.5         # enter_leave: the scene is rendered this many times wider than the video
VISIBLE = 0.4
MATCH, FALSE = 0.5, 0.3


def clipped_iou(box: np.ndarray, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """IoU of box (4,) with boxes (N, 4), xyxy, both clipped to the frame -> (N,)."""
    hi = np.array([width, height, width, height], np.float64)
    return box_iou(np.clip(box, 0, hi),
                   np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0, hi))


def render_case(assets, case: str, index: int, frames: int, width: int, height: int):
    """(images (T, H, W, 3) BGR, boxes (T, P, 4) full-body, visible (T, P), number of actors)
    of one scene; P people: the annotated actors, then the distractors."""
    wide = int(width * PAN_WIDTH) if case == "enter_leave" else width
    cfg = SynthesizeConfig(seed=11, test_sequences=index + 1, min_frames=frames,
                           max_frames=frames, width=wide, height=height, **CASES[case])
    scene = build_scene(assets, cfg, "test", index, two_actors=index % 2 == 1)
    people = scene.actors + scene.distractors
    images, boxes, visible = [], [], []
    for f in range(scene.num_frames):
        frame = render_frame(assets, scene, f, wide, height)
        cam = scene.render_cam_poses[f]
        row_boxes, row_visible = [], []
        for i, p in enumerate(people):
            vertices = p.vertices[f] @ cam[:3, :3].T + cam[:3, 3]
            uv = project_points(vertices, scene.K)
            alone = rasterize([Mesh(vertices, assets.faces, p.face_colors)], scene.K, height,
                              wide).mask
            row_boxes.append(np.concatenate([uv.min(0), uv.max(0)]))
            row_visible.append((frame.mesh_id == i, alone))
        x0 = 0
        if case == "enter_leave":            # the window pans from the left edge to the right
            x0 = int(round(f / max(scene.num_frames - 1, 1) * (wide - width)))
        images.append(frame.image[:, x0:x0 + width])
        boxes.append(np.array(row_boxes) - [x0, 0, x0, 0])
        visible.append([mine[:, x0:x0 + width].sum() >= VISIBLE * max(alone.sum(), 1)
                        and alone.sum() > 0 for mine, alone in row_visible])
    return np.array(images), np.array(boxes), np.array(visible, bool), len(scene.actors)


def score_case(images, boxes, visible, actors: int, detector, cfg: PredictConfig) -> dict:
    height, width = images.shape[1:3]
    every = cfg.detector.every
    detections, seconds = [], 0.0
    for f, image in enumerate(images):
        if f % every:
            detections.append(None)
            continue
        start = time.perf_counter()
        detections.append(detector(image))
        seconds += time.perf_counter() - start
    out = {"frames": len(images), "detected_frames": 0, "visible": 0, "found": 0,
           "visible_actors": 0, "found_actors": 0,
           "false_boxes": 0, "tracks": 0, "false_tracks": 0, "switches": 0,
           "covered": 0, "seconds": seconds}
    for f, found in enumerate(detections):
        if found is None:
            continue
        out["detected_frames"] += 1
        for p in range(boxes.shape[1]):
            if visible[f, p]:
                hit = bool(len(found)) and \
                    clipped_iou(boxes[f, p], found.xyxy, width, height).max() >= MATCH
                out["visible"] += 1
                out["found"] += hit
                out["visible_actors"] += p < actors
                out["found_actors"] += hit and p < actors
        for box in found.xyxy:
            out["false_boxes"] += clipped_iou(box, boxes[f], width, height).max() < FALSE
    tracks = select_tracks(track_detections(detections, 30.0, cfg.tracker),
                           min_detections(cfg.min_track_frames, cfg.detector.every),
                           cfg.max_people)
    out["tracks"] = len(tracks)
    matched = np.full(boxes.shape[:2], -1)                 # (T, P) track id matched per frame
    for t in tracks:
        hits = 0
        for i, f in enumerate(t.frames):
            if not t.detected[i]:
                continue
            overlap = clipped_iou(t.xyxy[i], boxes[f], width, height)
            hits += overlap.max() >= FALSE
            if overlap.max() >= MATCH:
                matched[f, overlap.argmax()] = t.track_id
        out["false_tracks"] += hits * 2 < int(t.detected.sum())
    spans = {t.track_id: (t.first, t.first + len(t) - 1) for t in tracks}
    for p in range(boxes.shape[1]):
        ids = matched[:, p][matched[:, p] >= 0]
        out["switches"] += int((ids[1:] != ids[:-1]).sum())
        if len(ids):
            first, last = spans[int(np.bincount(ids).argmax())]
            seen = np.flatnonzero(visible[:, p])
            out["covered"] += int(((seen >= first) & (seen <= last)).sum())
    out["visible_all"] = int(visible.sum())
    return out


def summary(rows: list[dict]) -> dict:
    total = {k: float(sum(r[k] for r in rows)) for k in rows[0]}
    return {"recall": round(total["found"] / max(total["visible"], 1), 3),
            "recall_actors": round(total["found_actors"] / max(total["visible_actors"], 1), 3),
            "false_boxes_per_frame": round(total["false_boxes"] / max(total["detected_frames"], 1),
                                           3),
            "tracks": int(total["tracks"]), "false_tracks": int(total["false_tracks"]),
            "identity_switches": int(total["switches"]),
            "coverage": round(total["covered"] / max(total["visible_all"], 1), 3),
            "people": None, "frames": int(total["frames"]),
            "detector_ms_per_detected_frame": round(1000 * total["seconds"]
                                                    / max(total["detected_frames"], 1), 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="blazepose", help="blazepose | hog")
    parser.add_argument("--every", type=int, default=PredictConfig().detector.every)
    parser.add_argument("--tiles", type=int, default=PredictConfig().detector.blazepose.tiles,
                        help="BlazePose tile rows (0: the whole frame only)")
    parser.add_argument("--sequences", type=int, default=4, help="scenes per case")
    parser.add_argument("--frames", type=int, default=90, help="frames per scene")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--body", help="body directory (default: a procedural body, built here)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    cfg = PredictConfig()
    cfg.detector = dataclasses.replace(
        cfg.detector, kind=args.kind, every=args.every,
        blazepose=dataclasses.replace(cfg.detector.blazepose, tiles=args.tiles))
    cfg.validate()
    detector = person_detector(cfg.detector)
    if args.body:
        body = BodyModel.from_dir(args.body)
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            write_body_dir(Path(tmp) / "body", source="procedural", seed=0)
            body = BodyModel.from_dir(Path(tmp) / "body")
    assets = SynthBodyAssets(body)
    result = {"kind": args.kind, "every": args.every, "tiles": args.tiles, "cases": {}}
    for case in args.cases.split(","):
        rows, people = [], 0
        for index in range(args.sequences):
            images, boxes, visible, actors = render_case(assets, case, index, args.frames,
                                                         args.width, args.height)
            people += boxes.shape[1]
            rows.append(score_case(images, boxes, visible, actors, detector, cfg))
        result["cases"][case] = {**summary(rows), "people": people}
        print(case, json.dumps(result["cases"][case]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
