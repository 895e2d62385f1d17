"""The train stage: model files under weights_only, MLflow checks (an unreachable server fails
before training), the same model bytes whatever the cores, and validation scored exactly as
evaluate scores, on conftest.py's tiny `train_data`."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from stdformer.losses import LossConfig
from stdformer.model.model_file import load_model
from stdformer.tracking import TrackingUnavailableError
from stdformer.train import Tracking, train
from stdformer.model.assets import load_body_assets
from stdformer.data.shard_index import index_shards
from trainkit import (CHILD_ENV, PYTHON, TINY_MODEL, only_config_dir, paths_in, tiny_model,
                      tiny_train)


def test_unreachable_tracking_server_fails_before_training(train_data, tmp_path):
    paths = paths_in(tmp_path, train_data)
    with pytest.raises(TrackingUnavailableError, match=r"127\.0\.0\.1:9.*not reachable"):
        train(tiny_train(), tiny_model(), LossConfig(), paths,
              Tracking(uri="http://127.0.0.1:9"), progress=False)
    assert not paths.checkpoints.exists() and not paths.model.exists()


def _write_params(directory: Path, **train_overrides) -> Path:
    params = {
        "train": {"steps": 3, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2,
                  "val_every": 2, "log_every": 1, "num_workers": 0, "shuffle_buffer": 4,
                  **train_overrides},
        "model": TINY_MODEL,
        "loss": {"normal": False},
    }
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _run_stage(cwd: Path, train_data, env: dict) -> subprocess.CompletedProcess:
    body, shards = train_data
    return subprocess.run(
        [PYTHON, "-m", "stages.train", "--params", "params.yaml", "--shards", str(shards),
         "--body", str(body), "--out", "models/stdformer.pt", "--checkpoints", "checkpoints",
         "--metrics", "metrics/train.json", "--curve", "metrics/train_curve.csv",
         "--no-progress"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_stage_refuses_an_unreachable_mlflow_with_one_line(train_data, tmp_path):
    _write_params(tmp_path)
    proc = _run_stage(tmp_path, train_data, {**CHILD_ENV, "MLFLOW_TRACKING_URI":
                                          "http://127.0.0.1:9"})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: MLFLOW_TRACKING_URI=http://127.0.0.1:9: MLflow "
                                  "tracking server not reachable")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow  # the stage trains and resumes (~25 s)
def test_stage_trains_logs_to_mlflow_and_writes_loadable_files(train_data, tmp_path):
    _write_params(tmp_path)
    env = {k: v for k, v in CHILD_ENV.items() if k != "MLFLOW_TRACKING_URI"}
    proc = _run_stage(tmp_path, train_data, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "mean-pose baseline MPJPE" in proc.stderr

    metrics = json.loads((tmp_path / "metrics" / "train.json").read_text())
    for key in ("val_mpjpe", "val_pa_mpjpe", "val_mpvpe", "baseline_val_mpjpe", "train_loss"):
        assert metrics[key] > 0, key
    curve = (tmp_path / "metrics" / "train_curve.csv").read_text().splitlines()
    header = curve[0].split(",")
    assert header[0] == "step" and "loss/total" in header and "val_mpjpe" in header
    assert [line.split(",")[0] for line in curve[1:]] == ["1", "2", "3"]

    model_file = torch.load(tmp_path / "models" / "stdformer.pt", weights_only=True)
    assert {"weights", "model_config", "body_model_id", "train_config", "metrics"} <= \
        model_file.keys()
    assert model_file["metrics"]["val_mpjpe"] == metrics["val_mpjpe"]
    checkpoint = torch.load(only_config_dir(tmp_path / "checkpoints") / "step-00000003.pt",
                            weights_only=True)
    assert checkpoint["step"] == 3 and checkpoint["optimizer"]["state"]

    model = load_model(tmp_path / "models" / "stdformer.pt", train_data[0])
    frames = torch.zeros(1, 8, 3, 64, 64)
    with torch.no_grad():
        out = model(frames)
    num_vertices = load_body_assets(train_data[0]).hierarchy.num_vertices[0]
    assert out["vertices"].shape == (1, 8, num_vertices, 3)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("stdformer")
    assert experiment.artifact_location.startswith((tmp_path / "mlartifacts").as_uri())
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "3"
    losses = client.get_metric_history(run.info.run_id, "loss/total")
    assert [m.step for m in losses] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_mpjpe")] == [2, 3]


@pytest.mark.slow  # two trainings in subprocesses (~35 s)
def test_stage_writes_the_same_model_bytes_whatever_the_cores_and_instruction_set(train_data,
                                                                                   tmp_path):
    # What differs between machines, as environment variables: the thread count torch would
    # take from the cores, and the ISA of ATen's kernels, oneDNN's convolutions and MKL's
    # BLAS. Each of these alone changes the weights when the stage does not pin them.
    machines = {
        "one_core_avx512": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        "two_cores_sse41": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
                            "ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default",
                            "MKL_CBWR": "AUTO"},
    }
    models = {}
    for name, env in machines.items():
        (tmp_path / name).mkdir()
        _write_params(tmp_path / name, steps=2, val_every=0)
        proc = _run_stage(tmp_path / name, train_data, {**CHILD_ENV, **env})
        assert proc.returncode == 0, proc.stderr[-4000:]
        models[name] = (tmp_path / name / "models" / "stdformer.pt").read_bytes()
    assert models["one_core_avx512"] == models["two_cores_sse41"]
    recorded = torch.load(tmp_path / "one_core_avx512" / "models" / "stdformer.pt",
                          weights_only=True)["numerics"]
    assert recorded["threads"] == 2 and recorded["aten_cpu_capability"] == "AVX2"
    assert recorded["onednn_max_cpu_isa"] == "AVX2" and recorded["mkl_cbwr"] == "COMPATIBLE"
    assert recorded["deterministic_algorithms"] is True


def test_validation_scores_every_frame_once_exactly_as_evaluate_does(train_data, tmp_path):
    from stdformer.scoring.predict import model_predictor
    from stdformer.scoring.run import evaluate_predictors
    from stdformer.data.shard_index import iter_targets

    body, shards = train_data
    paths = paths_in(tmp_path, train_data)
    metrics = train(tiny_train(steps=1, checkpoint_every=1), tiny_model(), LossConfig(), paths,
                    Tracking(uri=None), progress=False).metrics

    # The validation track's last clip overlaps the one before it: counted per clip, the
    # overlapping frames would count twice.
    clip_frames, unique_frames = 0, set()
    for key, arrays in iter_targets(index_shards(shards, "validation"), ["valid"]):
        track, start = key.rsplit("__", 1)
        clip_frames += int(arrays["valid"].sum())
        unique_frames |= {(track, int(start) + i) for i in range(len(arrays["valid"]))
                          if arrays["valid"][i]}
    assert clip_frames > len(unique_frames)
    assert metrics["val_frames"] == len(unique_frames)

    predictor = model_predictor(load_model(paths.model, body), torch.device("cpu"))
    evaluated = evaluate_predictors({"model": predictor}, shards, "validation",
                                    load_body_assets(body).body).overall["model"]
    for name in ("mpjpe", "pa_mpjpe", "mpvpe", "accel", "frames"):
        assert metrics[f"val_{name}"] == pytest.approx(evaluated[name], rel=1e-6), name
    assert metrics["baseline_val_mpjpe"] > 0
