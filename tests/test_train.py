"""Training: deterministic resumable data plans, same seed -> same losses, bit-exact resume after
SIGKILL, DDP on CPU (gloo), checkpoints and model files under weights_only, MLflow checks and the
train stage. Everything runs on a tiny procedural body and a tiny synthetic dataset made by the
real synthesize + preprocess code."""

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from stdformer.config import from_dict
from stdformer.io import DataError
from stdformer.losses import LossConfig
from stdformer.model.stdformer import ModelConfig
from stdformer.train import (TrainConfig, TrainPaths, Tracking, TrackingUnavailableError,
                             load_model, model_config_from_section, train)
from stdformer.train import checkpoint as ckpt_io
from stdformer.train.assets import load_body_assets
from stdformer.train.data import (TrainStream, index_shards, make_loader, train_batches)

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


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """(body_dir, shards_dir): procedural body (500 vertices) and 3 + 1 short synthetic
    sequences preprocessed into 64 px clips of 8 frames, 4 clips per shard."""
    from stdformer.body.files import write_body_dir
    from stdformer.body.model import BodyModel
    from stdformer.data.preprocess import PreprocessConfig, preprocess
    from stdformer.data.synthetic import SynthesizeConfig, synthesize

    root = tmp_path_factory.mktemp("traindata")
    body_dir, raw, shards = root / "body", root / "raw", root / "shards"
    write_body_dir(body_dir, resolution=500, factors=(4, 4))
    synthesize(raw, BodyModel.from_dir(body_dir), SynthesizeConfig(
        train_sequences=3, validation_sequences=1, test_sequences=0, min_frames=20,
        max_frames=24, width=160, height=120, distractors=0, occluders=0,
        two_actor_fraction=0.0), progress=False)
    preprocess(raw, body_dir, shards, PreprocessConfig(
        dataset_root=str(raw), splits=["train", "validation"], crop_size=64,
        samples_per_shard=4, workers=1, executor="serial"), progress=False)
    return body_dir, shards


def paths_in(directory: Path, dataset) -> TrainPaths:
    body, shards = dataset
    return TrainPaths(shards=shards, body=body, model=directory / "models" / "stdformer.pt",
                      checkpoints=directory / "checkpoints",
                      metrics=directory / "metrics" / "train.json",
                      curve=directory / "metrics" / "train_curve.csv")


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["weights"]


# --------------------------------------------------------------------------------------------
# Configuration


def test_train_config_is_validated_and_model_profile_applies():
    with pytest.raises(DataError, match=r"train: steps must be >= 1"):
        from_dict(TrainConfig, {"steps": 0}, source="params.yaml", prefix="train")
    with pytest.raises(DataError, match=r"train.resum: unknown key \(did you mean 'resume'"):
        from_dict(TrainConfig, {"resum": "auto"}, source="params.yaml", prefix="train")
    with pytest.raises(DataError, match="train.resume"):
        from_dict(TrainConfig, {"resume": "sometimes"}, source="params.yaml", prefix="train")
    model = model_config_from_section({"profile": "cpu", "heads": 2})
    assert model.heads == 2 and model.widths == ModelConfig.cpu().widths
    with pytest.raises(DataError, match="model.profile"):
        model_config_from_section({"profile": "huge"}, source="params.yaml")


# --------------------------------------------------------------------------------------------
# Data plans


def test_plans_split_ranks_disjointly_and_resume_skips_exactly(dataset):
    _, shards = dataset
    index = index_shards(shards, "train")
    kw = dict(seed=5, epoch=3, batch_size=2, shuffle_window=4)
    ranks = [train_batches(index, rank=r, world_size=2, **kw) for r in range(2)]
    keys = [[c.key for b in plan for c in b] for plan in ranks]
    assert len(ranks[0]) == len(ranks[1]) > 0
    assert not set(keys[0]) & set(keys[1])
    assert train_batches(index, rank=0, world_size=2, **kw) == ranks[0]   # pure function
    assert train_batches(index, rank=0, world_size=1, **{**kw, "epoch": 4}) != \
        train_batches(index, rank=0, world_size=1, **kw)                   # reshuffled per epoch

    assets = load_body_assets(dataset[0])
    common = dict(seed=5, batch_size=2, rank=0, world_size=1, shuffle_window=4,
                  augment=tiny_train().augment, perms=assets.perms)
    full = iter(TrainStream(index, **common))
    first = [next(full) for _ in range(7)]                                 # crosses an epoch
    resumed = iter(TrainStream(index, start_epoch=first[3]["epoch"],
                               start_batch=first[3]["batch"] + 1, **common))
    for expected in first[4:]:
        got = next(resumed)
        assert got["key"] == expected["key"]
        assert torch.equal(got["frames"], expected["frames"])            # same augmentation
        for name, target in expected["targets"].items():                 # augmented alike
            assert torch.equal(got["targets"][name], target), name


def test_batches_do_not_depend_on_the_number_of_loader_workers(dataset):
    body, shards = dataset
    index = index_shards(shards, "train")
    stream = TrainStream(index, seed=1, batch_size=2, rank=0, world_size=1, shuffle_window=4,
                         augment=tiny_train().augment, perms=load_body_assets(body).perms)
    results = []
    for workers in (0, 2):
        loader = iter(make_loader(stream, workers, seed=0))
        results.append([next(loader) for _ in range(6)])
        del loader
    for a, b in zip(*results):
        assert a["key"] == b["key"] and (a["epoch"], a["batch"]) == (b["epoch"], b["batch"])
        assert torch.equal(a["frames"], b["frames"])
        assert torch.equal(a["targets"]["joints2d"], b["targets"]["joints2d"])


# --------------------------------------------------------------------------------------------
# Determinism and exact resume


def _loss_column(curve: Path) -> list[str]:
    lines = curve.read_text().splitlines()
    column = lines[0].split(",").index("loss/total")
    return [line.split(",")[column] for line in lines[1:]]


def test_same_seed_gives_the_same_loss_sequence(dataset, tmp_path):
    runs = []
    for name in ("a", "b"):
        paths = paths_in(tmp_path / name, dataset)
        train(tiny_train(steps=3, checkpoint_every=3), tiny_model(), LossConfig(), paths,
              Tracking(uri=None), progress=False)
        runs.append(_loss_column(paths.curve))
    assert len(runs[0]) == 3 and runs[0] == runs[1]
    assert len(set(runs[0])) == 3                       # the loss really moves step to step


def _same_size_other_content(src: Path, dst: Path) -> None:
    """A copy of a preprocess output as a rerun with another min_keypoints writes it: the same
    shard names and byte sizes, other `valid` flags (what the manifest check and the resume
    check must tell apart)."""
    import io

    import numpy as np
    import webdataset as wds

    from stdformer.data.manifest import DIGEST_FIELDS, read_manifest, write_manifest
    from stdformer.data.shards import write_shards
    from stdformer.io import npz_bytes

    shutil.copytree(src, dst)
    manifest = read_manifest(dst)
    shards = sorted((dst / "train").glob("shard-*.tar"))
    samples = [s for shard in shards for s in wds.WebDataset(str(shard), shardshuffle=False)]
    for sample in samples:
        with np.load(io.BytesIO(sample["targets.npz"])) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["valid"] = arrays["valid"].copy()
        arrays["valid"][-1] = not arrays["valid"][-1]
        sample["targets.npz"] = npz_bytes(arrays, compress=False)
    for shard in shards:
        shard.unlink()
    write_shards(dst / "train", [{k: v for k, v in s.items() if k in ("__key__",)
                                  or not k.startswith("__")} for s in samples],
                 samples_per_shard=manifest["shard"].count("train/shard-000000.tar"))
    rows = [dict(zip(manifest, values)) for values in zip(*manifest.values())]
    write_manifest(dst, [{k: v for k, v in r.items() if k not in DIGEST_FIELDS} for r in rows])


def test_resume_is_keyed_on_shard_content_not_names_or_sizes(dataset, tmp_path, capsys):
    """Issue 10 item 1: shards rewritten with the same names and sizes (preprocess rerun with
    min_keypoints 6 -> 12) make training start fresh instead of resuming the old model."""
    body, old = dataset
    new = tmp_path / "new_shards"
    _same_size_other_content(old, new)
    def sizes(root):
        return sorted((p.name, p.stat().st_size) for p in (root / "train").glob("*.tar"))

    assert sizes(old) == sizes(new)
    assert index_shards(old, "train").fingerprint() != index_shards(new, "train").fingerprint()

    shutil.copytree(old, tmp_path / "shards")
    paths = paths_in(tmp_path, (body, tmp_path / "shards"))
    train(tiny_train(steps=2, checkpoint_every=2), tiny_model(), LossConfig(), paths,
          Tracking(uri=None), progress=False)
    old_weights = weights_of(paths.model)
    shutil.rmtree(tmp_path / "shards")
    shutil.copytree(new, tmp_path / "shards")                  # "dvc repro" reran preprocess
    capsys.readouterr()
    train(tiny_train(steps=2, checkpoint_every=2), tiny_model(), LossConfig(), paths,
          Tracking(uri=None), progress=False)
    assert "resuming" not in capsys.readouterr().err
    new_weights = weights_of(paths.model)                # trained on the new data, not copied
    assert any(not torch.equal(old_weights[k], new_weights[k]) for k in old_weights)


def test_joint_warmup_trains_the_joint_tokens_alone_then_the_full_loss(dataset, tmp_path):
    paths = paths_in(tmp_path, dataset)
    train(tiny_train(steps=3, checkpoint_every=3, joint_warmup_steps=2), tiny_model(),
          LossConfig(), paths, Tracking(uri=None), progress=False)
    rows = list(csv.DictReader(paths.curve.read_text().splitlines()))
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    for warm in rows[:2]:
        assert warm["loss/joints3d_tokens"] and not warm["loss/vertices_fine"]
        assert float(warm["loss/total"]) == pytest.approx(1000 * float(warm["loss/joints3d_tokens"]),
                                                          rel=1e-4)
    assert rows[2]["loss/vertices_fine"] and rows[2]["loss/joints2d_tokens"]


WORKER = textwrap.dedent("""
    import hashlib, json, os, sys, threading
    from pathlib import Path
    from stdformer.config import from_dict
    from stdformer.losses import LossConfig
    from stdformer.train import (TrainConfig, TrainPaths, Tracking, model_config_from_section,
                                 train)
    from stdformer.train import checkpoint as ckpt_io

    if __name__ == "__main__":   # loader workers start from a forkserver
        spec = json.loads(sys.argv[1])
        if spec.get("block_after_checkpoint"):
            save = ckpt_io.save_checkpoint
            def save_then_block(*args, **kwargs):
                path = save(*args, **kwargs)
                print("CHECKPOINT", path, flush=True)
                threading.Event().wait()            # stay mid-run until the test kills us
            ckpt_io.save_checkpoint = save_then_block
        result = train(from_dict(TrainConfig, spec["train"]),
                       model_config_from_section(spec["model"]), LossConfig(),
                       TrainPaths(**{k: Path(v) for k, v in spec["paths"].items()}),
                       Tracking(uri=None), progress=False)
        if "dump" in spec:
            weights = result.model.state_dict()
            digest = hashlib.sha256()
            for name in sorted(weights):
                digest.update(name.encode()); digest.update(weights[name].cpu().numpy().tobytes())
            rank = int(os.environ.get("RANK", "0"))
            Path(spec["dump"], f"rank{rank}.json").write_text(json.dumps(
                {"sha256": digest.hexdigest(), "keys": sorted(SEEN)}))
""")

# Records the clip keys a rank trains on (loader without workers: consumed == yielded).
RECORD_KEYS = textwrap.dedent("""
    SEEN = set()
    from stdformer.train import data as _data
    _iter = _data.TrainStream.__iter__
    def _recording(self):
        for batch in _iter(self):
            SEEN.update(batch["key"])
            yield batch
    _data.TrainStream.__iter__ = _recording
""")


def _spec(directory: Path, dataset, **train_overrides) -> dict:
    paths = paths_in(directory, dataset)
    base = dict(steps=6, batch_size=2, warmup_steps=1, checkpoint_every=2, val_every=3,
                log_every=1, num_workers=0, shuffle_buffer=4)
    return {"train": {**base, **train_overrides}, "model": TINY_MODEL,
            "paths": {k: str(v) for k, v in dataclasses.asdict(paths).items()}}


def _run_worker(tmp_path: Path, spec: dict, prefix: str = "") -> subprocess.CompletedProcess:
    script = tmp_path / "worker.py"
    script.write_text(prefix + WORKER)
    return subprocess.run([PYTHON, str(script), json.dumps(spec)], env=CHILD_ENV,
                          capture_output=True, text=True, timeout=600)


def _only_config_dir(root: Path) -> Path:
    (config,) = ckpt_io.list_configs(root)
    return config.directory


def _kill_group_and_reap(child: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGKILL a child started with start_new_session=True and every process of its group
    (its loader workers' forkserver and resource tracker outlive it otherwise), then wait
    until none is left."""
    import time

    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.killpg(child.pid, 0)              # anyone of the group left (not yet reaped)?
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"processes of group {child.pid} outlived SIGKILL")
        time.sleep(0.1)


def test_sigkilled_run_resumes_to_bit_identical_weights(dataset, tmp_path):
    reference = _spec(tmp_path / "reference", dataset)
    done = _run_worker(tmp_path, reference)
    assert done.returncode == 0, done.stderr

    interrupted = _spec(tmp_path / "interrupted", dataset, num_workers=1)
    script = tmp_path / "worker.py"
    with open(tmp_path / "interrupted.err", "w") as err:
        child = subprocess.Popen(
            [PYTHON, str(script), json.dumps({**interrupted, "block_after_checkpoint": True})],
            env=CHILD_ENV, stdout=subprocess.PIPE, stderr=err, text=True,
            start_new_session=True)
    try:
        marker = child.stdout.readline()            # blocks until the first checkpoint is saved
    finally:
        _kill_group_and_reap(child)
        child.stdout.close()
    assert marker.startswith("CHECKPOINT"), (tmp_path / "interrupted.err").read_text()[-3000:]
    checkpoints = _only_config_dir(Path(interrupted["paths"]["checkpoints"]))
    assert [s for s, _ in ckpt_io.list_checkpoints(checkpoints)] == [2]
    assert not Path(interrupted["paths"]["model"]).exists()
    (checkpoints / ".step-00000004.pt.x1.tmp").write_bytes(b"half a checkpoint")  # a torn write

    resumed = _run_worker(tmp_path, interrupted)    # same config; 1 loader worker is allowed
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and "step 2" in resumed.stderr
    want, got = weights_of(Path(reference["paths"]["model"])), weights_of(
        Path(interrupted["paths"]["model"]))
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert Path(reference["paths"]["curve"]).read_text() == \
        Path(interrupted["paths"]["curve"]).read_text()
    assert Path(reference["paths"]["metrics"]).read_text() == \
        Path(interrupted["paths"]["metrics"]).read_text()


def test_ddp_two_cpu_ranks_agree_on_weights_and_split_the_clips(dataset, tmp_path):
    spec = _spec(tmp_path / "ddp", dataset, steps=3, val_every=0)
    dump = tmp_path / "dump"
    dump.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(RECORD_KEYS + WORKER)
    proc = subprocess.run(
        [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), json.dumps({**spec, "dump": str(dump)})],
        env=CHILD_ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((dump / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    assert ranks[0]["keys"] and ranks[1]["keys"]
    assert not set(ranks[0]["keys"]) & set(ranks[1]["keys"])
    # only rank 0 wrote outputs; the checkpoint holds both ranks' RNG states
    ckpt = torch.load(ckpt_io.checkpoint_path(_only_config_dir(Path(spec["paths"]["checkpoints"])),
                                              3), weights_only=True)
    assert len(ckpt["rng"]) == 2
    assert json.loads(Path(spec["paths"]["metrics"]).read_text())["steps"] == 3


# --------------------------------------------------------------------------------------------
# Files, MLflow and the stage


def test_unreachable_tracking_server_fails_before_training(dataset, tmp_path):
    paths = paths_in(tmp_path, dataset)
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


def _run_stage(cwd: Path, dataset, env: dict) -> subprocess.CompletedProcess:
    body, shards = dataset
    return subprocess.run(
        [PYTHON, "-m", "stages.train", "--params", "params.yaml", "--shards", str(shards),
         "--body", str(body), "--out", "models/stdformer.pt", "--no-progress"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_stage_refuses_an_unreachable_mlflow_with_one_line(dataset, tmp_path):
    _write_params(tmp_path)
    proc = _run_stage(tmp_path, dataset, {**CHILD_ENV, "MLFLOW_TRACKING_URI":
                                          "http://127.0.0.1:9"})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: MLFLOW_TRACKING_URI=http://127.0.0.1:9: MLflow "
                                  "tracking server not reachable")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_stage_trains_logs_to_mlflow_and_writes_loadable_files(dataset, tmp_path):
    _write_params(tmp_path)
    env = {k: v for k, v in CHILD_ENV.items() if k != "MLFLOW_TRACKING_URI"}
    proc = _run_stage(tmp_path, dataset, env)
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
    checkpoint = torch.load(_only_config_dir(tmp_path / "checkpoints") / "step-00000003.pt",
                            weights_only=True)
    assert checkpoint["step"] == 3 and checkpoint["optimizer"]["state"]

    model = load_model(tmp_path / "models" / "stdformer.pt", dataset[0])
    frames = torch.zeros(1, 8, 3, 64, 64)
    with torch.no_grad():
        out = model(frames)
    num_vertices = load_body_assets(dataset[0]).hierarchy.num_vertices[0]
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


def test_stage_writes_the_same_model_bytes_whatever_the_cores_and_instruction_set(dataset,
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
        proc = _run_stage(tmp_path / name, dataset, {**CHILD_ENV, **env})
        assert proc.returncode == 0, proc.stderr[-4000:]
        models[name] = (tmp_path / name / "models" / "stdformer.pt").read_bytes()
    assert models["one_core_avx512"] == models["two_cores_sse41"]
    recorded = torch.load(tmp_path / "one_core_avx512" / "models" / "stdformer.pt",
                          weights_only=True)["numerics"]
    assert recorded["threads"] == 2 and recorded["aten_cpu_capability"] == "AVX2"
    assert recorded["onednn_max_cpu_isa"] == "AVX2" and recorded["mkl_cbwr"] == "COMPATIBLE"
    assert recorded["deterministic_algorithms"] is True


def test_validation_scores_every_frame_once_exactly_as_evaluate_does(dataset, tmp_path):
    from stdformer.evaluation import evaluate_predictors, model_predictor
    from stdformer.train.data import iter_targets

    body, shards = dataset
    paths = paths_in(tmp_path, dataset)
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
