"""`predict_video`: a video (or a folder of frames) -> per-person meshes, an overlay video and
mesh files.

    1. people: detector on every k-th frame + ByteTrack, or a boxes file (ids: tracking skipped);
       short tracks dropped, the longest `max_people` kept              (detect.py, track.py)
    2. crops: boxes squared, smoothed and cut by preprocess's code     (people.py)
    3. model: windows of the clip length, merged per frame as evaluate
       merges, optionally smoothed as evaluate smooths                  (windows.py)
    4. joints from the mesh, camera-space translation                   (camera.py)
    5. DIR/<video>.npz, <video>_track<ID>.glb, <video>_obj/,
       <video>_overlay.mp4, <video>_sheet.png                           (export.py, overlay.py)

The video is read once per pass (detect, crop, draw), so memory holds boxes and crops, not frames.
The output directory is checked writable before the video is opened; all of a run's files are
written into one temporary directory inside it and moved into place together at the end, so a
run that fails (disk full, a bad frame in the last pass) leaves the directory as it was.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from stdformer.data.preprocess_config import PreprocessConfig
from stdformer.devices import resolve_device
from stdformer.evaluation.overlays import png_bytes
from stdformer.scoring.predict import model_predictor
from stdformer.inference import camera, export, people
from stdformer.inference import overlay as ov
from stdformer.inference.config import PredictConfig
from stdformer.inference.blazepose import person_detector
from stdformer.inference.detect import Detector, read_boxes
from stdformer.inference.model import InferenceModel
from stdformer.inference.track import (PersonTrack, min_detections, select_tracks,
                                       track_detections, tracks_from_ids)
from stdformer.model.inputs import InputProtocol
from stdformer.inference.video import FrameSource, write_h264
from stdformer.inference.windows import (TrackOutput, predict_crop_windows, smooth_output,
                                         window_starts)
from stdformer.io import (DataError, atomic_output, check_output_dir, staged_outputs,
                          write_bytes_atomic)
from stdformer.metrics import j14_from_h36m
from stdformer.progress import progress as progress_bar


@dataclass
class PredictResult:
    video: str
    num_frames: int
    track_ids: list[int]
    files: dict[str, Path] = field(default_factory=dict)   # kind -> path (glb: one per track)
    seconds: float = 0.0
    message: str = ""
    warnings: list[str] = field(default_factory=list)      # one line each, naming the file

    @property
    def frames_per_s(self) -> float:
        return self.num_frames / self.seconds if self.seconds > 0 else float("nan")


# --------------------------------------------------------------------------------------------
# Progress: a bar on a terminal, log lines with rates otherwise (stdformer/progress.py)


def progress(total: int | None, desc: str, unit: str = "frame", enabled: bool = True):
    """An object with update(n) and close(); nothing is shown when disabled."""
    return progress_bar(total=total or None, desc=f"predict: {desc}", unit=unit,
                        disable=not enabled)


# --------------------------------------------------------------------------------------------
# Passes over the video


def find_people(source: FrameSource, detector: Detector, cfg: PredictConfig, show: bool
                ) -> tuple[list[PersonTrack], int]:
    """Detect in every `cfg.detector.every`-th frame and track (the tracker bridges the frames
    between). Returns (tracks, number of frames read)."""
    bar = progress(source.frame_count, "detect", enabled=show)
    detections = []
    try:
        for frame in source:
            looked = frame.index % cfg.detector.every == 0
            detections.append(detector(frame.image) if looked else None)
            bar.update()
    finally:
        bar.close()
    return track_detections(detections, source.fps, cfg.tracker), len(detections)


def cut_crops(source: FrameSource, tracks: list[PersonTrack], boxes: dict, crop: PreprocessConfig,
              show: bool) -> tuple[dict[int, np.ndarray], int]:
    """RGB model crops {track id: (T, H, W, 3) uint8} of the smoothed `boxes` {track id:
    BoxTrack}, and the number of frames read."""
    size = crop.crop_size
    out = {t.track_id: np.zeros((len(t), size, size, 3), np.uint8) for t in tracks}
    bar = progress(source.frame_count, "crop", enabled=show)
    count = 0
    try:
        for frame in source:
            count += 1
            for t in tracks:
                i = frame.index - t.first
                if 0 <= i < len(t):
                    box = boxes[t.track_id]
                    out[t.track_id][i] = people.model_crop(
                        frame.pixels, box.centers[i], box.sides[i], crop,
                        str(frame.path or f"{source.path}[frame {frame.index}]"))
            bar.update()
    finally:
        bar.close()
    return out, count


def overlay_frames(source: FrameSource, rows: dict[str, np.ndarray], faces: np.ndarray,
                   K: np.ndarray, keep: set[int], kept: dict[int, np.ndarray], show: bool
                   ) -> Iterator[np.ndarray]:
    """Overlay images of every frame; the ones in `keep` are also stored in `kept`."""
    by_frame: dict[int, list[int]] = {}
    for row, f in enumerate(rows["frame"]):
        by_frame.setdefault(int(f), []).append(row)
    bar = progress(source.frame_count, "draw", enabled=show)
    try:
        for frame in source:
            views = [ov.PersonView(int(rows["track_id"][r]),
                                   rows["vertices"][r] + rows["translation"][r],
                                   rows["bbox_center"][r], float(rows["bbox_side"][r]))
                     for r in by_frame.get(frame.index, [])]
            image = ov.draw_people(frame.image, views, faces, K)
            if frame.index in keep:
                kept[frame.index] = image
            bar.update()
            yield image
    finally:
        bar.close()


# --------------------------------------------------------------------------------------------
# Per-track arrays


def track_rows(track: PersonTrack, output: TrackOutput, boxes, affines: np.ndarray,
               model: InferenceModel, crop_size: int, K: np.ndarray) -> dict[str, np.ndarray]:
    """The .npz rows of one track (export.ROW_ARRAYS)."""
    regressor = model.regressor.double()
    vertices = output.vertices
    h36m = torch.einsum("jv,tvc->tjc", regressor, torch.as_tensor(vertices).double())
    translation = camera.mesh_translation(vertices, output.cam, affines, crop_size, K, regressor)
    t = len(track)
    return {"track_id": np.full(t, track.track_id), "frame": track.frames,
            "detected": track.detected, "box": track.xyxy, "bbox_center": boxes.centers,
            "bbox_side": boxes.sides, "crop_affine": affines, "cam": output.cam,
            "translation": translation, "vertices": vertices,
            "joints_h36m": h36m.numpy(), "joints14": j14_from_h36m(h36m).numpy()}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {"track_id": np.zeros(0)}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# --------------------------------------------------------------------------------------------
# The whole run


def crop_for_model(crop: PreprocessConfig, inputs: InputProtocol | None
                   ) -> tuple[PreprocessConfig, list[str]]:
    """The crop protocol predict uses: the model file's crop size, scale and context (the
    settings the model was trained on), over `crop`; and the settings where `crop` said
    otherwise ("crop_size 64 -> 48"). A model file without a protocol keeps `crop` as it is."""
    if inputs is None:
        return crop, []
    recorded = {"crop_size": inputs.crop_size, "crop_scale": inputs.crop_scale,
                "context": inputs.context}
    recorded = {k: v for k, v in recorded.items() if v is not None}
    differs = [f"{k} {getattr(crop, k)} -> {v}" for k, v in recorded.items()
               if getattr(crop, k) != v]
    return dataclasses.replace(crop, **recorded), differs


def predict_video(video: str | Path, model: InferenceModel, out_dir: str | Path,
                  cfg: PredictConfig | None = None, crop: PreprocessConfig | None = None, *,
                  boxes: str | Path | None = None, detector: Detector | None = None,
                  fps: float | None = None, show_progress: bool = True,
                  strict_frames: bool = False) -> PredictResult:
    """Run the whole pipeline on `video` and write every output to `out_dir` (see the module
    docstring). The crop protocol is the model file's (`crop_for_model`); `crop`, a project's
    preprocess section, may only confirm it (where it differs, a warning says so). A video
    without people gives an empty result (zero rows) and a message, not an error. A video that decodes to fewer frames
    than its container declares (truncated) gives a warning, or with `strict_frames` a
    DataError before the model runs."""
    cfg = cfg or PredictConfig()
    cfg.validate()
    crop_given = crop
    out_dir = Path(out_dir)
    check_output_dir(out_dir)                   # before any decoding: fail in a second, not later
    crop, overridden = crop_for_model(crop or PreprocessConfig(), model.inputs)
    started = time.perf_counter()
    source = FrameSource(video, fps)
    name = source.name

    # 1. people
    num_frames = None
    if boxes is not None:
        table = read_boxes(boxes)
        if table.has_ids:
            found = tracks_from_ids(table)
        else:
            found = track_detections(table.per_frame(int(table.frame.max()) + 1), source.fps,
                                     cfg.tracker)
    else:
        found, num_frames = find_people(source, detector or person_detector(cfg.detector),
                                        cfg, show_progress)
    every = 1 if boxes is not None else cfg.detector.every
    tracks = select_tracks(found, min_detections(cfg.min_track_frames, every), cfg.max_people)

    # 2. crops
    smoothed, affines = {}, {}
    for t in tracks:
        smoothed[t.track_id], affines[t.track_id] = people.person_track_boxes(
            t, cfg.box_scale, crop)
    crops_rgb, read = cut_crops(source, tracks, smoothed, crop, show_progress)
    num_frames = read if num_frames is None else num_frames
    warnings = [] if crop_given is None or not overridden else [
        f"{model.spec}: the preprocess settings given differ from the model file's input "
        f"protocol ({', '.join(overridden)}): the model file's are used"]
    shortfall = source.shortfall(num_frames)
    if shortfall and strict_frames:
        raise DataError(source.path, shortfall)
    if shortfall:
        warnings.append(f"{source.path}: {shortfall}; the result covers the decoded ones")
    if boxes is not None and table.frame.max() >= num_frames:
        raise DataError(boxes, f"a box names frame {int(table.frame.max()) + 1}, the video has "
                        f"{num_frames} frames", field="frame")

    # 3. model
    device = _device(cfg.device)
    stride = cfg.stride or max(model.clip_len // 2, 1)
    outputs: dict[int, TrackOutput] = {}
    if tracks:
        windows = sum(len(window_starts(len(t), model.clip_len, stride)) for t in tracks)
        bar = progress(windows, "model", unit="window", enabled=show_progress)
        try:
            predictor = model_predictor(model.model, device, model.inputs)
            outputs = predict_crop_windows(crops_rgb, predictor, model.clip_len, stride,
                                           cfg.merge, cfg.batch_size, bar.update)
        finally:
            bar.close()
        if cfg.smoothing.enabled:
            outputs = {tid: smooth_output(o, cfg.smoothing.sigma) for tid, o in outputs.items()}

    # 4. joints, translation; 5. files
    K = camera.full_frame_intrinsics(source.width, source.height, cfg.focal)
    rows = _concat([track_rows(t, outputs[t.track_id], smoothed[t.track_id],
                               affines[t.track_id], model, crop.crop_size, K) for t in tracks])
    # File names, not paths: the same video and settings give the same bytes wherever they lie.
    meta = {"video": Path(video).name, "model": model.spec, "body_model_id": model.body_model_id,
            "clip_len": model.clip_len, "stride": stride, "crop_size": crop.crop_size,
            "crop_scale": crop.crop_scale, "context": crop.context,
            "boxes": None if boxes is None else Path(boxes).name,
            "settings": dataclasses.asdict(cfg)}
    arrays = export.result_arrays(rows, faces=model.faces, intrinsics=K, width=source.width,
                                  height=source.height, fps=source.fps, num_frames=num_frames,
                                  meta=meta)
    result = PredictResult(str(video), num_frames, [t.track_id for t in tracks],
                           warnings=warnings)
    npz = f"{name}.npz"              # moved into place last: its presence marks a finished run
    try:
        with staged_outputs(out_dir, npz, last=(npz,)) as stage:
            result.files["npz"] = stage / npz
            export.write_result_npz(result.files["npz"], arrays)
            _write_meshes(result, arrays, tracks, cfg, stage, name, model.faces)
            if cfg.overlay:
                _write_overlay(result, source, arrays, cfg, stage, name, K, show_progress)
    except OSError as e:        # disk full, quota, I/O error: one line, nothing half-written
        raise DataError(out_dir, f"writing the outputs of {Path(video).name} failed "
                        f"({e.strerror or e}): none of this run's files were kept, earlier "
                        "ones are untouched") from e
    result.files = {kind: out_dir / path.name for kind, path in result.files.items()}
    _remove_stale_outputs(out_dir, name, {path.name for path in result.files.values()})
    result.seconds = time.perf_counter() - started
    if not tracks:
        result.message = (f"no person found in {video} ({num_frames} frames"
                          f"{'' if boxes is None else ', boxes from ' + str(boxes)}; tracks "
                          f"need {cfg.min_track_frames} detected frames): the result is empty")
    return result


def _device(name: str) -> torch.device:
    try:
        return resolve_device(name)
    except ValueError as e:
        raise DataError("predict", str(e), field="device") from e


def _write_meshes(result: PredictResult, arrays, tracks, cfg: PredictConfig, out_dir: Path,
                  name: str, faces: np.ndarray) -> None:
    for t in tracks:
        rows = arrays["track_id"] == t.track_id
        vertices = arrays["vertices"][rows] + arrays["translation"][rows][:, None]
        if cfg.glb:
            path = out_dir / f"{name}_track{t.track_id}.glb"
            color = tuple(c / 255.0 for c in ov.track_color(t.track_id)[::-1])   # BGR -> RGB
            export.write_glb(path, vertices, faces, float(arrays["fps"]), color=color,
                             name=f"track{t.track_id}",
                             extras={"track_id": t.track_id, "first_frame": t.first})
            result.files[f"glb{t.track_id}"] = path
    obj_dir = out_dir / f"{name}_obj"
    if cfg.obj_every > 0 and tracks:
        with atomic_output(obj_dir, directory=True) as tmp:
            for t in tracks:
                rows = np.flatnonzero(arrays["track_id"] == t.track_id)
                for r in rows[::cfg.obj_every]:
                    export.write_obj(tmp / f"track{t.track_id}_frame{arrays['frame'][r]:05d}.obj",
                                     arrays["vertices"][r] + arrays["translation"][r], faces)
        result.files["obj"] = obj_dir


def _remove_stale_outputs(out_dir: Path, name: str, written: set[str]) -> None:
    """Meshes an earlier run of this video wrote that this run did not (fewer tracks, no OBJ)."""
    for stale in out_dir.glob(f"{name}_track*.glb"):
        if stale.name not in written:
            stale.unlink()
    obj_dir = out_dir / f"{name}_obj"
    if obj_dir.name not in written and obj_dir.is_dir():
        shutil.rmtree(obj_dir)


def _write_overlay(result: PredictResult, source: FrameSource, arrays, cfg: PredictConfig,
                   out_dir: Path, name: str, K: np.ndarray, show: bool) -> None:
    keep = set(ov.sheet_frames(result.num_frames, arrays["frame"], cfg.sheet_frames))
    kept: dict[int, np.ndarray] = {}
    path = out_dir / f"{name}_overlay.mp4"
    write_h264(path, overlay_frames(source, arrays, arrays["faces"], K, keep, kept,
                                    show), source.fps)
    result.files["overlay"] = path
    frames = sorted(kept)
    sheet = ov.contact_sheet([kept[f] for f in frames], [f"frame {f}" for f in frames])
    result.files["sheet"] = out_dir / f"{name}_sheet.png"
    write_bytes_atomic(result.files["sheet"], png_bytes(sheet))
