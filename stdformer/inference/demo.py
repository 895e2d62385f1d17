"""The `demo` stage: one synthetic test sequence written as a video, run through `predict` with
the registered champion (people found by the detector, not taken from the annotations), and
`plots/demo/` written as a whole: the input video, the overlay video, the contact sheet, the .npz.
"""

from __future__ import annotations

from pathlib import Path

import cv2

from stdformer.data.crops import keypoint_boxes
from stdformer.data.preprocess_config import PreprocessConfig
from stdformer.data.threedpw import IMAGE_DIR, image_path, list_sequences, read_sequence
from stdformer.inference.config import DemoConfig
from stdformer.inference.model import load_inference_model
from stdformer.inference.run import PredictResult, predict_video
from stdformer.inference.video import DEFAULT_FPS, write_h264
from stdformer.io import DataError, atomic_output


def pick_sequence(dataset_root, split: str, sequence: str | None) -> Path:
    """The sequence file of `sequence`, or with None the one with the most visible annotated
    people per frame (keypoint boxes as preprocess finds them; ties: the first by name)."""
    files = {p.stem: p for p in list_sequences(dataset_root, split)}
    if not files:
        raise DataError(f"{dataset_root}/sequenceFiles/{split}", "no sequence files")
    if sequence is None:
        def visible_per_frame(path: Path) -> float:
            seq = read_sequence(path)
            return sum(keypoint_boxes(kp.transpose(0, 2, 1))[2].mean() for kp in seq["poses2d"])

        score = {name: visible_per_frame(path) for name, path in files.items()}
        return files[min(files, key=lambda name: (-score[name], name))]
    if sequence not in files:
        raise DataError(f"{dataset_root}/sequenceFiles/{split}", f"no sequence {sequence!r} "
                        f"(there are: {', '.join(sorted(files))})", field="demo.sequence")
    return files[sequence]


def sequence_frames(dataset_root, sequence_file: Path):
    """BGR frames of one sequence of a 3DPW-layout root, in annotation order."""
    sequence = read_sequence(sequence_file)
    for frame_id in sequence["img_frame_ids"]:
        path = image_path(dataset_root, sequence["sequence"], frame_id)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(path, f"not a readable image (under {IMAGE_DIR}/)")
        yield image


def run_demo(cfg: DemoConfig, crop: PreprocessConfig, dataset_root, out_dir,
             tracking_uri: str | None = None, show_progress: bool = True) -> PredictResult:
    """Write `out_dir` (replaced as a whole): <sequence>.mp4 (the input), and predict's outputs."""
    sequence_file = pick_sequence(dataset_root, cfg.split, cfg.sequence)
    model = load_inference_model(cfg.model, tracking_uri=tracking_uri)
    with atomic_output(out_dir, directory=True) as tmp:
        video = tmp / f"{sequence_file.stem}.mp4"
        write_h264(video, sequence_frames(dataset_root, sequence_file), DEFAULT_FPS)
        result = predict_video(video, model, tmp, cfg.predict, crop, show_progress=show_progress)
    return result
