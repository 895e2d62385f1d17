"""Shared pieces of the training tests (test_train.py, test_train_stage.py): tiny configs,
the tiny data set they train on (conftest.py's `train_data`), paths and weights."""

import os
import sys
from pathlib import Path

import torch

from stdformer.config import from_dict
from stdformer.model.stdformer import ModelConfig
from stdformer.model.stdformer import model_config_from_section
from stdformer.train import TrainConfig, TrainPaths
from stdformer.train import checkpoint as ckpt_io

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# Same threads everywhere: bit-exact comparisons across processes need the same CPU kernels.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
             "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}

TINY_MODEL = {"profile": "cpu", "backbone_width": 8, "widths": [32, 16], "ffn_dims": [32, 16],
              "heads": 2}


def tiny_train(**overrides) -> TrainConfig:
    base = dict(steps=4, batch_size=2, warmup_steps=1, checkpoint_every=2, val_every=0,
                log_every=1, num_workers=0, shuffle_buffer=4)
    return from_dict(TrainConfig, {**base, **overrides})


def tiny_model() -> ModelConfig:
    return model_config_from_section(dict(TINY_MODEL))


def make_train_data(root: Path) -> tuple[Path, Path]:
    """(body_dir, shards_dir): procedural body (500 vertices) and 3 + 1 short synthetic
    sequences preprocessed into 64 px clips of 8 frames, 4 clips per shard."""
    from stdformer.body.files import write_body_dir
    from stdformer.body.model import BodyModel
    from stdformer.data.datasets import ThreeDPWDataset
    from stdformer.data.preprocess import preprocess
    from stdformer.data.preprocess_config import PreprocessConfig
    from stdformer.data.synthetic import synthesize
    from stdformer.data.synthetic_config import SynthesizeConfig

    body_dir, raw, shards = root / "body", root / "raw", root / "shards"
    write_body_dir(body_dir, resolution=500, factors=(4, 4))
    synthesize(raw, BodyModel.from_dir(body_dir), SynthesizeConfig(
        train_sequences=3, validation_sequences=1, test_sequences=0, min_frames=20,
        max_frames=24, width=160, height=120, distractors=0, occluders=0,
        two_actor_fraction=0.0), progress=False)
    preprocess(ThreeDPWDataset(root=str(raw), splits=["train", "validation"]), body_dir, shards,
               PreprocessConfig(crop_size=64, samples_per_shard=4, workers=1, executor="serial"),
               progress=False)
    return body_dir, shards


def paths_in(directory: Path, train_data) -> TrainPaths:
    body, shards = train_data
    return TrainPaths(shards=shards, body=body, model=directory / "models" / "stdformer.pt",
                      checkpoints=directory / "checkpoints",
                      metrics=directory / "metrics" / "train.json",
                      curve=directory / "metrics" / "train_curve.csv")


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["weights"]


def only_config_dir(root: Path) -> Path:
    """The one run-config directory under a checkpoints root."""
    (config,) = ckpt_io.list_configs(root)
    return config.directory


def set_cameras(source: Path, camera_of_sequence) -> None:
    """Rewrite a preprocess output's manifest with a `camera` per clip (camera_of_sequence:
    sequence name -> camera), as a Human3.6M source's manifest carries them."""
    from stdformer.data.manifest import read_manifest, write_manifest

    columns = read_manifest(source)
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    write_manifest(source, [{**row, "camera": camera_of_sequence(row["sequence"])}
                            for row in rows])


def make_mix_data(root: Path, train_data) -> tuple[Path, Path]:
    """(body_dir, shards parent) with two sources as the pipeline lays them out:
    `<root>/shards/3dpw` and `<root>/shards/h36m`, both today's preprocess output of
    `make_train_data`'s synthetic set, tagged with their own source names; h36m cut at stride 4
    (more, overlapping training clips, so its epochs differ in length from 3dpw's), its clips
    given cameras 1-4 by sequence and its report.json the h36m layout."""
    import json

    from stdformer.data.manifest import read_manifest
    from stdformer.data.datasets import ThreeDPWDataset
    from stdformer.data.preprocess import preprocess
    from stdformer.data.preprocess_config import PreprocessConfig

    body_dir, shards = train_data
    raw = shards.parent / "raw"
    parent = root / "shards"
    for name, stride in (("3dpw", {}), ("h36m", {"train": 4})):
        dataset = ThreeDPWDataset(root=str(raw), splits=["train", "validation"], stride=stride)
        preprocess(dataset, body_dir, parent / name, PreprocessConfig(
            crop_size=64, samples_per_shard=4, workers=1, executor="serial"), progress=False,
            name=name)
    sequences = sorted(set(read_manifest(parent / "h36m")["sequence"]))
    set_cameras(parent / "h36m", lambda seq: 1 + sequences.index(seq) % 4)
    report = parent / "h36m" / "report.json"
    report.write_text(json.dumps({**json.loads(report.read_text()), "layout": "h36m"}))
    return body_dir, parent
