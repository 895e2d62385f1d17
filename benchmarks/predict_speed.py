"""`python benchmarks/predict.py --speed`: frames/s of each phase of `stdformer predict`.

A synthetic two-person scene is rendered at 640x480 and written as H.264 at 640x480 and at
1920x1080 (upscaled: the same people, 9x the pixels). On each video the phases run one at a time,
as predict runs them, and each is timed alone (its frames/s over all the video's frames):

    decode  reading the video (the bound: every pass over the video pays it)
    detect  the detector on every `detector.every`-th frame
    track   ByteTrack + the track filters
    crop    the model crops of every track frame
    model   the network over the windows
    draw    the meshes drawn on every frame (the overlay)
    encode  H.264 encoding of the drawn frames

then the whole `predict_video` run (three passes over the video, files written).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from stdformer.body import BodyModel, write_body_dir
from stdformer.config import read_params, section_config
from stdformer.data.preprocess_config import PreprocessConfig
from stdformer.data.synthetic import render_frame
from stdformer.data.synthetic_assets import SynthBodyAssets
from stdformer.data.synthetic_config import SynthesizeConfig
from stdformer.data.synthetic_scene import build_scene
from stdformer.inference import PredictConfig, load_inference_model, predict_video
from stdformer.inference import overlay as ov
from stdformer.inference import people
from stdformer.inference.blazepose import person_detector
from stdformer.inference.track import min_detections, select_tracks, track_detections
from stdformer.inference.video import FrameSource, write_h264
from stdformer.inference.windows import predict_crop_windows
from stdformer.losses import LossConfig
from stdformer.model.assets import load_body_assets
from stdformer.model.inputs import InputProtocol
from stdformer.model.model_file import write_model_file
from stdformer.model.stdformer import model_config_from_section
from stdformer.scoring.predict import model_predictor
from stdformer.train import TrainConfig
from stdformer.train.loop import build_model

SIZES = ((640, 480), (1920, 1080))
PHASES = ("decode", "detect", "track", "crop", "model", "draw", "encode")


def random_model(params: dict, body_dir: Path, path: Path, crop: PreprocessConfig) -> Path:
    """A model file of params' `model` section with random weights (speed only), cropping as
    `crop` says."""
    assets = load_body_assets(body_dir)
    cfg = model_config_from_section(dict(params.get("model") or {}))
    torch.manual_seed(0)
    write_model_file(path, build_model(cfg, assets), cfg, assets.body_model_id,
                     dataclasses.asdict(TrainConfig()), dataclasses.asdict(LossConfig()), {},
                     InputProtocol(crop.crop_size, crop.crop_scale, crop.context, cfg.clip_len))
    return path


def render_video(body: BodyModel, frames: int) -> list[np.ndarray]:
    """BGR 640x480 frames of a synthetic scene: two people walking, a distractor, an occluder."""
    cfg = SynthesizeConfig(seed=5, test_sequences=1, min_frames=frames, max_frames=frames,
                           width=640, height=480)
    assets = SynthBodyAssets(body)
    scene = build_scene(assets, cfg, "test", 0, two_actors=True)
    return [render_frame(assets, scene, f, 640, 480).image for f in range(scene.num_frames)]


class Clock:
    """Wall and CPU seconds spent inside `with clock:` blocks (CPU: all threads; under other
    load it is the steadier figure)."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu

    def figures(self, frames: int) -> dict:
        return {"frames_per_s": round(frames / max(self.wall, 1e-9), 1),
                "cpu_ms_per_frame": round(1000 * self.cpu / frames, 1)}


def phase_speeds(video: Path, model, cfg: PredictConfig, crop: PreprocessConfig,
                 out_dir: Path) -> dict:
    """Each phase alone ({phase: frames/s, CPU ms a frame}) and the whole run, on one video."""
    source = FrameSource(video)
    clocks = {phase: Clock() for phase in PHASES}
    n = 0
    with clocks["decode"]:
        for frame in source:
            frame.image                                                # noqa: B018 (decodes)
            n += 1

    detector, detections = person_detector(cfg.detector), []
    for frame in source:
        image = frame.image
        with clocks["detect"]:
            looked = frame.index % cfg.detector.every == 0
            detections.append(detector(image) if looked else None)

    with clocks["track"]:
        tracks = select_tracks(track_detections(detections, source.fps, cfg.tracker),
                               min_detections(cfg.min_track_frames, cfg.detector.every),
                               cfg.max_people)

    boxes = {t.track_id: people.person_track_boxes(t, cfg.box_scale, crop)[0] for t in tracks}
    crops = {t.track_id: np.zeros((len(t), crop.crop_size, crop.crop_size, 3), np.uint8)
             for t in tracks}
    for frame in source:
        pixels = frame.pixels
        with clocks["crop"]:
            for t in tracks:
                i = frame.index - t.first
                if 0 <= i < len(t):
                    box = boxes[t.track_id]
                    crops[t.track_id][i] = people.model_crop(pixels, box.centers[i],
                                                             box.sides[i], crop)

    with clocks["model"]:
        if crops:
            predict_crop_windows(crops, model_predictor(model.model, torch.device("cpu")),
                           model.clip_len, cfg.stride or max(model.clip_len // 2, 1), cfg.merge,
                           cfg.batch_size)

    whole = Clock()
    with whole:
        result = predict_video(video, model, out_dir, cfg, crop, show_progress=False)
    with np.load(result.files["npz"]) as z:
        arrays = {k: z[k] for k in ("track_id", "frame", "vertices", "translation",
                                    "bbox_center", "bbox_side", "faces", "intrinsics")}
    drawn = []
    for frame in source:
        image = frame.image
        with clocks["draw"]:
            views = [ov.PersonView(int(arrays["track_id"][r]),
                                   arrays["vertices"][r] + arrays["translation"][r],
                                   arrays["bbox_center"][r], float(arrays["bbox_side"][r]))
                     for r in np.flatnonzero(arrays["frame"] == frame.index)]
            drawn.append(ov.draw_people(image, views, arrays["faces"], arrays["intrinsics"]))
    with clocks["encode"]:
        write_h264(out_dir / "encode.mp4", drawn, source.fps)
    return {"frames": n, "tracks": len(tracks),
            **{phase: clock.figures(n) for phase, clock in clocks.items()},
            "whole_run": whole.figures(n)}


def table(report: dict) -> str:
    """Markdown: a row per phase, a column pair per video size, decode (the bound) beside."""
    sizes = [f"{w}x{h}" for w, h in SIZES]
    lines = ["| phase | " + " | ".join(f"{s} frames/s (CPU ms/frame)" for s in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for phase in (*PHASES, "whole_run"):
        cells = [f"{report[s][phase]['frames_per_s']} ({report[s][phase]['cpu_ms_per_frame']})"
                 for s in sizes]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines.append("| bound: decode alone | " + " | ".join(
        str(report[s]["decode"]["frames_per_s"]) for s in sizes) + " |")
    return "\n".join(lines)


def speed_main(args) -> dict:
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    params = read_params(args.params)
    crop = section_config(params, "preprocess", PreprocessConfig, args.params)
    cfg = section_config(params.get("demo") or {}, "predict", PredictConfig, args.params,
                         required=False)
    cfg.device, cfg.glb = "cpu", False
    report = {"threads": args.threads, "cpu_count": os.cpu_count(),
              "detector": {"kind": cfg.detector.kind, "every": cfg.detector.every,
                           "tiles": cfg.detector.blazepose.tiles}}
    with tempfile.TemporaryDirectory(prefix="predict-speed-") as tmp:
        tmp = Path(tmp)
        body_dir = Path(args.body)
        if not body_dir.is_dir():                       # no `dvc repro` here: a procedural body
            body_dir = tmp / "body"
            write_body_dir(body_dir, source="procedural", seed=0)
        model_file = Path(args.model)
        if not model_file.is_file():
            model_file = random_model(params, body_dir, tmp / "random.pt", crop)
            report["model"] = "random weights, params.yaml model section"
        else:
            report["model"] = str(model_file)
        model = load_inference_model(model_file, body_dir, device="cpu")
        frames = render_video(BodyModel.from_dir(body_dir), args.frames)
        for width, height in SIZES:
            video = tmp / f"speed_{width}x{height}.mp4"
            sized = frames if (width, height) == (640, 480) else \
                (cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) for f in frames)
            write_h264(video, sized, 30.0)
            speeds = phase_speeds(video, model, cfg, crop, tmp / f"out_{width}")
            report[f"{width}x{height}"] = speeds
            print(f"{width}x{height}: {json.dumps(speeds)}", flush=True)
    report["load_average"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))
    print(table(report))
    return report
