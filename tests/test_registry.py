"""Model registry: the promotion gate (pure), eval/lineage inputs, the register flow against a
temporary sqlite MLflow store (aliases, registry.json, version tags), the pyfunc model loaded
through `models:/stdformer@champion` (in this process and in a fresh one, where the stdformer
code must come from the logged model), the `registry` commands, and fail-fast tracking checks.

Everything uses a tiny procedural body (800 vertices) and randomly initialised tiny STDFormers
written in the released model-file format."""

import argparse
import dataclasses
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stdformer.config import from_dict
from stdformer.io import DataError, file_digest
from stdformer.registry import (ModelRegistry, RegisterConfig, RegisterPaths, add_registry_commands,
                                decide, dvc_lineage, read_eval_metrics, register)
from stdformer.serving import check_frames, fit_crop_size
from stdformer.tracking import TrackingUnavailableError

TINY_MODEL = {"profile": "cpu", "backbone_width": 8, "widths": [32, 16], "ffn_dims": [32, 16],
              "heads": 2}
CROP = 64
PARAMS = {"model": TINY_MODEL, "train": {"steps": 4, "lr": 1e-4}, "loss": {},
          "preprocess": {"crop_size": CROP}, "register": {"primary_metric": "pa_mpjpe"}}


# --------------------------------------------------------------------------------------------
# The gate (pure)

CFG = RegisterConfig(tolerances={"mpjpe": 1.0, "mpvpe": 1.0, "accel": 0.5})
CHAMP = {"mpjpe": 90.0, "pa_mpjpe": 55.0, "mpvpe": 110.0, "accel": 20.0, "frames": 100}


def metrics(**changes):
    return {**CHAMP, **changes}


@pytest.mark.parametrize("candidate, champion, promote, words", [
    (metrics(), None, True, "no champion yet"),
    (metrics(pa_mpjpe=54.0), CHAMP, True, "improved"),
    (metrics(pa_mpjpe=54.0, mpjpe=90.9, accel=20.5), CHAMP, True, "improved"),  # within tol
    (metrics(pa_mpjpe=56.0), CHAMP, False, "worse"),
    (metrics(pa_mpjpe=55.0), CHAMP, False, "tie"),
    (metrics(pa_mpjpe=54.0, mpvpe=111.5), CHAMP, False, "mpvpe regressed by 1.50"),
    (metrics(pa_mpjpe=54.0, accel=20.6), CHAMP, False, "accel regressed"),
    (metrics(pa_mpjpe=float("nan")), CHAMP, False, "candidate has no finite pa_mpjpe"),
    (metrics(pa_mpjpe=None), None, False, "candidate has no finite pa_mpjpe"),
    (metrics(pa_mpjpe=54.0, accel=None), CHAMP, False, "accel is missing"),
    # a champion evaluated without accel is not compared on it
    (metrics(pa_mpjpe=54.0, accel=99.0), {**CHAMP, "accel": None}, True, "improved"),
])
def test_gate(candidate, champion, promote, words):
    decision = decide(candidate, champion, CFG)
    assert decision.promote is promote, decision.reason
    assert decision.alias == ("champion" if promote else "challenger")
    assert words in decision.reason
    assert set(decision.to_dict()["compared"]) == {"pa_mpjpe", "mpjpe", "mpvpe", "accel"}


def test_gate_min_improvement_and_primary_choice():
    cfg = RegisterConfig(min_improvement=0.5)
    assert not decide(metrics(pa_mpjpe=54.6), CHAMP, cfg).promote      # 0.4 mm is not enough
    assert decide(metrics(pa_mpjpe=54.4), CHAMP, cfg).promote
    by_mpjpe = RegisterConfig(primary_metric="mpjpe", tolerances={"pa_mpjpe": 0.0})
    assert decide(metrics(mpjpe=89.0), CHAMP, by_mpjpe).promote
    assert not decide(metrics(mpjpe=89.0, pa_mpjpe=55.1), CHAMP, by_mpjpe).promote


@pytest.mark.parametrize("section, problem", [
    ({"primary_metric": "pve"}, "primary_metric"),
    ({"tolerances": {"pa_mpjpe": 1.0}}, "is the primary metric"),
    ({"tolerances": {"mpjpe": -1.0}}, ">= 0"),
    ({"tolerances": {"mpjep": 1.0}}, "unknown metric"),
    ({"model_name": "my model"}, "model_name"),
    ({"tolerance": {}}, "did you mean 'tolerances'"),
])
def test_register_config_rejects(section, problem):
    with pytest.raises(DataError, match=problem):
        from_dict(RegisterConfig, section, source="params.yaml", prefix="register")


# --------------------------------------------------------------------------------------------
# Inputs: eval.json and dvc.lock


def write_eval(path: Path, **stdformer_metrics) -> Path:
    row = {**CHAMP, **stdformer_metrics}
    doc = {"overall": {"stdformer": row, "mean_pose": {k: v * 2 for k, v in CHAMP.items()}},
           "per_sequence": {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def write_lock(project: Path, model: Path) -> Path:
    lock = {"schema": "2.0", "stages": {
        "preprocess": {"outs": [{"path": "data/shards", "hash": "md5",
                                 "md5": "cc2e5c2f3eabbba942b5ba1638998011.dir"}]},
        "train": {"deps": [{"path": "data/shards", "md5": "cc2e5c2f3eabbba942b5ba1638998011.dir"}],
                  "params": {"params.yaml": {"model": TINY_MODEL, "train": PARAMS["train"]}},
                  "outs": [{"path": model.relative_to(project).as_posix(), "hash": "md5",
                            "md5": file_digest(model, "md5")}]}}}
    (project / "dvc.lock").write_text(yaml.safe_dump(lock))
    return project / "dvc.lock"


def test_read_eval_metrics_errors(tmp_path):
    good = write_eval(tmp_path / "eval.json")
    assert read_eval_metrics(good, ("accel",))["stdformer"]["pa_mpjpe"] == 55.0
    (tmp_path / "bad.json").write_text(json.dumps({"overall": {"mean_pose": CHAMP}}))
    with pytest.raises(DataError, match=r"bad.json: overall.stdformer: missing"):
        read_eval_metrics(tmp_path / "bad.json")
    (tmp_path / "no_accel.json").write_text(json.dumps(
        {"overall": {"stdformer": {"pa_mpjpe": 1.0}}}))
    with pytest.raises(DataError, match=r"overall.stdformer.accel: missing metric"):
        read_eval_metrics(tmp_path / "no_accel.json", ("pa_mpjpe", "accel"))


def test_dvc_lineage_tags_and_stale_lock(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "models" / "stdformer.pt"
    model.parent.mkdir()
    model.write_bytes(b"weights v1")
    write_lock(tmp_path, model)
    tags = dvc_lineage("dvc.lock", data_path="data/shards", model_path="models/stdformer.pt")
    assert tags["dvc.data_md5"] == "cc2e5c2f3eabbba942b5ba1638998011.dir"
    assert tags["dvc.model_md5"] == file_digest(model, "md5")
    assert tags["dvc.params_sections"] == "model,train"
    assert len(tags["dvc.params_md5"]) == 32 and "dvc.params.train_md5" in tags
    model.write_bytes(b"weights v2")                 # retrained outside DVC: the lock is stale
    with pytest.raises(DataError, match="the lock is stale"):
        dvc_lineage("dvc.lock", data_path="data/shards", model_path="models/stdformer.pt")


def test_check_frames_shapes_and_short_errors():
    clip = np.zeros((8, CROP, CROP, 3), np.uint8)
    assert check_frames(clip, 8).shape == (1, 8, CROP, CROP, 3)        # a single clip
    assert check_frames(np.stack([clip, clip]), 8).shape == (2, 8, CROP, CROP, 3)
    assert check_frames(clip.astype(np.int64), 8).dtype == np.uint8   # a JSON request's ints
    big = np.random.default_rng(0).random((4, 8, 224, 224, 3))        # float frames, 10 MB
    for frames, words in ((big, "must be uint8"), (clip[:4], "clips of 8 frames"),
                          (clip[:, :40], "must be square"), (clip.astype(np.int64) + 300,
                                                             "must be uint8")):
        with pytest.raises(ValueError, match=words) as err:
            check_frames(frames, 8)
        assert len(str(err.value)) < 300 and str(frames.shape) in str(err.value)


def test_crops_of_another_size_are_resized_with_a_warning():
    import cv2

    frames = frames_batch(0, clips=1, size=96)
    with pytest.warns(UserWarning, match="resizing 96x96 crops to the training crop size 64x64"):
        resized = fit_crop_size(frames, 64)
    assert resized.shape == (1, 8, 64, 64, 3) and resized.dtype == np.uint8
    np.testing.assert_array_equal(resized[0, 3], cv2.resize(frames[0, 3], (64, 64),
                                                            interpolation=cv2.INTER_AREA))
    assert fit_crop_size(resized, 64) is resized                        # the training size
    assert fit_crop_size(frames, None) is frames                        # size not recorded
    with pytest.raises(ValueError, match="multiple of 32"):
        fit_crop_size(frames[:, :, :40, :40], None)


# --------------------------------------------------------------------------------------------
# Register, serve, promote, roll back (one temporary MLflow store)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny project: body dir (800 vertices), two model files (random tiny STDFormers with
    different seeds), eval.json, params; returns (dir, paths factory)."""
    from stdformer.body import write_body_dir
    from stdformer.losses import LossConfig
    from stdformer.model.stdformer import model_config_from_section
    from stdformer.train import TrainConfig
    from stdformer.model.assets import load_body_assets
    from stdformer.model.inputs import InputProtocol
    from stdformer.model.model_file import write_model_file
    from stdformer.train.loop import build_model

    root = tmp_path_factory.mktemp("registry_project")
    write_body_dir(root / "data" / "body", source="procedural", resolution=800)
    assets = load_body_assets(root / "data" / "body")
    cfg = model_config_from_section(dict(TINY_MODEL))
    for seed in (1, 2):
        torch.manual_seed(seed)
        write_model_file(root / f"model{seed}.pt", build_model(cfg, assets), cfg,
                         assets.body_model_id, dataclasses.asdict(TrainConfig()),
                         dataclasses.asdict(LossConfig()), {},
                         InputProtocol(crop_size=CROP, crop_scale=1.2, context=1.25, clip_len=8))
    return root


def stage_inputs(root: Path, seed: int, **eval_metrics) -> RegisterPaths:
    """What a pipeline run leaves before `register`: the model file, eval.json, dvc.lock."""
    model = root / "models" / "stdformer.pt"
    model.parent.mkdir(exist_ok=True)
    model.write_bytes((root / f"model{seed}.pt").read_bytes())
    write_lock(root, model)
    return RegisterPaths(model=model, body=root / "data" / "body",
                         eval=write_eval(root / "metrics" / "eval.json", **eval_metrics),
                         lock=root / "dvc.lock", data=root / "data" / "shards",
                         out=root / "metrics" / "registry.json")


def registry_cli(argv: list[str]) -> tuple[int, str]:
    """`stdformer registry ...` as stdformer.cli.main runs it: (exit status, stdout|error)."""
    import contextlib
    import io

    parser = argparse.ArgumentParser(prog="stdformer")
    add_registry_commands(parser.add_subparsers(dest="group", required=True))
    args = parser.parse_args(["registry", *argv])
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            args.func(args)
    except DataError as e:
        return 2, str(e)
    return 0, out.getvalue()


def frames_batch(seed: int, clips: int = 2, size: int = CROP) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (clips, 8, size, size, 3), np.uint8)


def torch_reference(model_file: Path, body: Path, frames: np.ndarray) -> dict[str, np.ndarray]:
    """What the pyfunc model must return, computed straight from the torch model."""
    from stdformer.io import load_npz
    from stdformer.metrics import j14_from_h36m
    from stdformer.model.model_file import load_model
    from stdformer.model.inputs import normalize_frames

    model = load_model(model_file, body)
    regressor = torch.as_tensor(load_npz(body / "regressors.npz")["J_regressor_h36m"]).float()
    with torch.no_grad():
        out = model(normalize_frames(torch.from_numpy(frames).permute(0, 1, 4, 2, 3)))
    h36m = regressor @ out["vertices"]
    return {"vertices": out["vertices"].numpy(), "joints_h36m": h36m.numpy(),
            "joints14": j14_from_h36m(h36m).numpy(), "cam": out["cam"].numpy()}


def test_register_gate_serve_promote_rollback(project, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(project)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = RegisterConfig()
    artifacts = tmp_path / "mlartifacts"

    # v1: the first version becomes champion
    first = register(stage_inputs(project, 1, pa_mpjpe=55.0), cfg, PARAMS, uri, artifacts)
    assert (first["version"], first["decision"], first["aliases"]) == (1, "champion",
                                                                       ["champion"])
    record_bytes = (project / "metrics" / "registry.json").read_bytes()
    assert json.loads(record_bytes) == first
    # registry.json is a DVC output: a fresh store must write the same bytes (no run id, no time)
    again = register(stage_inputs(project, 1, pa_mpjpe=55.0), cfg, PARAMS,
                     f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path / "fresh-artifacts")
    assert (project / "metrics" / "registry.json").read_bytes() == record_bytes, again
    # v2: better primary but MPVPE regressed beyond tolerance -> challenger
    second = register(stage_inputs(project, 2, pa_mpjpe=54.0, mpvpe=112.0), cfg, PARAMS, uri,
                      artifacts)
    assert (second["version"], second["decision"], second["aliases"]) == (2, "challenger",
                                                                          ["challenger"])
    assert second["champion_version"] == 1
    assert second["champion"] == {"version": 1, "metrics": {
        k: v for k, v in CHAMP.items() if k in ("mpjpe", "pa_mpjpe", "mpvpe", "accel")}}
    assert second["candidate"]["metrics"]["mpvpe"] == 112.0
    assert "mpvpe regressed" in second["reason"]
    assert second["compared"]["mpvpe"] == {"candidate": 112.0, "champion": 110.0, "delta": 2.0,
                                           "allowed": 1.0, "ok": False}
    saved = json.loads((project / "metrics" / "registry.json").read_text())
    assert saved["version"] == 2 and saved["decision"] == "challenger"
    assert os.environ["MLFLOW_TRACKING_URI"] == uri          # the fluent URI was restored

    # the version: headline metrics (exact), model md5, lineage, decision, and descriptions;
    # the run: every param and metric
    registry = ModelRegistry(uri, "stdformer")
    mv = registry.version(2)
    assert sorted(mv.tags) == ["decision", "dvc.data_md5", "dvc.params_md5", "metric.accel",
                               "metric.mpjpe", "metric.mpvpe", "metric.pa_mpjpe", "model_md5"]
    assert mv.tags["metric.pa_mpjpe"] == "54.0"
    assert mv.tags["model_md5"] == file_digest(project / "model2.pt", "md5")
    assert mv.tags["dvc.data_md5"].endswith(".dir") and mv.tags["decision"] == "challenger"
    assert "PA-MPJPE 54.00 mm" in mv.description and "Gate: challenger" in mv.description
    assert "mpvpe regressed" in mv.description
    assert mv.tags["model_md5"] in mv.description and "cc2e5c2f" in mv.description
    assert "models:/stdformer@champion" in registry.client.get_registered_model(
        "stdformer").description
    run = mlflow.MlflowClient(uri).get_run(mv.run_id)
    assert run.data.metrics["pa_mpjpe"] == 54.0 and run.data.metrics["mean_pose.mpjpe"] == 180.0
    assert run.data.params["model.heads"] == "2" and run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.0001" and "dvc.params.train_md5" in run.data.tags
    logged = {p.name for p in artifacts.rglob("*") if p.is_file()}
    assert {"model.npz", "hierarchy.npz", "regressors.npz", "meta.json", "stdformer.pt"} <= logged
    assert "SMPL_NEUTRAL.pkl" not in logged and not any(n.endswith(".pkl") for n in logged)

    # serve the champion (v1, seed 1): predictions equal the torch model's
    model = mlflow.pyfunc.load_model("models:/stdformer@champion")
    assert model.metadata.get_input_schema() is None       # checked by check_frames instead
    assert [s.name for s in model.metadata.get_output_schema().inputs] == [
        "vertices", "joints_h36m", "joints14", "cam"]
    frames = frames_batch(0)
    out = model.predict(frames)
    want = torch_reference(project / "model1.pt", project / "data" / "body", frames)
    assert out["vertices"].shape == (2, 8, 799, 3) and out["vertices"].dtype == np.float32
    assert out["joints14"].shape == (2, 8, 14, 3) and out["joints_h36m"].shape == (2, 8, 17, 3)
    for name, value in want.items():
        np.testing.assert_allclose(out[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    other = torch_reference(project / "model2.pt", project / "data" / "body", frames)
    assert not np.allclose(out["vertices"], other["vertices"])     # really v1's weights
    # a wrong input: one short line, not the array; other crop sizes: resized, with a warning
    with pytest.raises(ValueError, match="must be uint8") as err:
        model.predict(frames.astype(np.float32) / 255)
    assert len(str(err.value)) < 300
    with pytest.warns(UserWarning, match="resizing 96x96 crops to the training crop size"):
        bigger = model.predict(frames_batch(0, size=96))
    assert bigger["vertices"].shape == (2, 8, 799, 3)

    # promote / rollback through the commands
    status, text = registry_cli(["list"])
    assert status == 0 and text.splitlines()[1].split()[:2] == ["1", "champion"]
    assert text.splitlines()[2].split()[:3] == ["2", "challenger", "90.00"]
    assert registry_cli(["promote", "2"]) == (0, "champion: version 1 -> 2\n")
    assert registry.aliases() == {"champion": "2"}                  # no longer a challenger
    assert registry.version(2).tags["previous_champion"] == "1"
    assert registry_cli(["promote", "2"])[1].startswith("version 2 already is the champion")
    assert registry_cli(["rollback"]) == (0, "champion: version 2 -> 1 (rollback)\n")
    assert registry.aliases() == {"champion": "1"}
    assert registry.version(2).tags["rolled_back_to"] == "1"
    status, error = registry_cli(["rollback"])
    assert status == 2 and "no previous champion" in error
    status, error = registry_cli(["promote", "7"])
    assert status == 2 and "version 7 does not exist (versions: 1, 2)" in error
    status, error = registry_cli(["promote", "latest"])
    assert status == 2 and "version must be a number" in error
    rows = json.loads(registry_cli(["list", "--json"])[1])
    assert [(r["version"], r["aliases"]) for r in rows] == [(1, ["champion"]), (2, [])]

    # v3: same model and metrics as the champion -> a tie, challenger
    third = register(stage_inputs(project, 1, pa_mpjpe=55.0), cfg, PARAMS, uri, artifacts)
    assert third["decision"] == "challenger" and "tie" in third["reason"]
    assert registry.aliases() == {"champion": "1", "challenger": "3"}

    # a fresh process loads the champion with the stdformer code logged in the model
    np.save(tmp_path / "frames.npy", frames)
    np.save(tmp_path / "want.npy", want["vertices"])
    script = (
        "import sys, numpy as np, mlflow\n"
        # hide the editable install: the code must come from the model's code_paths
        "sys.meta_path[:] = [f for f in sys.meta_path if 'Editable' not in type(f).__name__]\n"
        "m = mlflow.pyfunc.load_model('models:/stdformer@champion')\n"
        "import stdformer\n"
        "assert 'code' in stdformer.__file__ and 'artifacts' in stdformer.__file__, "
        "stdformer.__file__\n"
        f"out = m.predict(np.load({str(tmp_path / 'frames.npy')!r}))\n"
        f"np.testing.assert_allclose(out['vertices'], np.load({str(tmp_path / 'want.npy')!r}),"
        " rtol=1e-5, atol=1e-6)\n"
        "print('ok')\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONPATH": "", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_registering_the_champion_again_is_a_tie(project, tmp_path, monkeypatch):
    """`dvc repro -f register`: the same model and eval.json again. Metrics compare exactly
    (158.309996 was stored as "158.31" and looked 0.000004 better), and the champion's own
    weights are a tie even when its evaluation changed."""
    monkeypatch.chdir(project)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = tmp_path / "mlartifacts"
    first = register(stage_inputs(project, 1, pa_mpjpe=158.309996), RegisterConfig(), PARAMS,
                     uri, artifacts)
    assert first["decision"] == "champion"
    again = register(stage_inputs(project, 1, pa_mpjpe=158.309996), RegisterConfig(), PARAMS,
                     uri, artifacts)
    assert again["decision"] == "challenger" and "(+0.00)" in again["reason"]
    assert "tie" in again["reason"] and again["compared"]["pa_mpjpe"]["delta"] == 0.0
    reevaluated = register(stage_inputs(project, 1, pa_mpjpe=150.0), RegisterConfig(), PARAMS,
                           uri, artifacts)
    assert reevaluated["decision"] == "challenger"
    assert "same weights hash" in reevaluated["reason"]
    assert ModelRegistry(uri, "stdformer").aliases()["champion"] == "1"


def test_a_server_failure_while_gating_leaves_no_half_registered_version(project, tmp_path,
                                                                          monkeypatch):
    """The store fails after the new version was made and made champion (a database that
    stops mid-register): one clear error, the version deleted again, `champion` back."""
    from mlflow.exceptions import MlflowException

    monkeypatch.chdir(project)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = tmp_path / "mlartifacts"
    register(stage_inputs(project, 1, pa_mpjpe=160.0), RegisterConfig(), PARAMS, uri, artifacts)

    def store_fails(self, *args, **kwargs):
        raise MlflowException("connection to the database lost")

    monkeypatch.setattr(ModelRegistry, "describe", store_fails)   # after the gate moved aliases
    with pytest.raises(TrackingUnavailableError, match=r"failed while gating version 2, which "
                                                       r"was deleted again: nothing was"):
        register(stage_inputs(project, 2, pa_mpjpe=150.0), RegisterConfig(), PARAMS, uri,
                 artifacts)
    registry = ModelRegistry(uri, "stdformer")
    assert [str(mv.version) for mv in registry.versions()] == ["1"]
    assert registry.aliases() == {"champion": "1"}


def test_a_killed_registration_is_marked_failed_by_the_next(project, tmp_path, monkeypatch):
    import socket

    import mlflow

    from stdformer.tracking import MlflowTracker

    monkeypatch.chdir(project)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = tmp_path / "mlartifacts"
    register(stage_inputs(project, 1), RegisterConfig(), PARAMS, uri, artifacts)
    gone = subprocess.Popen(["true"])
    gone.wait()                                  # a register process that no longer exists

    def left_running(host: str, pid: int) -> str:
        return MlflowTracker(uri, "stdformer", artifacts, run_name="register-stdformer", tags={
            "stdformer.stage": "register", "stdformer.host": host,
            "stdformer.pid": str(pid)}).run_id

    killed = left_running(socket.gethostname(), gone.pid)
    alive = left_running(socket.gethostname(), os.getpid())      # still running: untouched
    elsewhere = left_running("another-host", gone.pid)          # cannot tell: untouched
    register(stage_inputs(project, 2), RegisterConfig(), PARAMS, uri, artifacts)
    client = mlflow.MlflowClient(uri)
    assert client.get_run(killed).info.status == "FAILED"
    assert client.get_run(alive).info.status == "RUNNING"
    assert client.get_run(elsewhere).info.status == "RUNNING"


def test_a_moved_project_is_told_where_its_artifacts_went(project, tmp_path, monkeypatch,
                                                          caplog):
    """Local stores record absolute artifact paths: after a move they point at the old place."""
    import shutil

    monkeypatch.chdir(project)
    old, new = tmp_path / "old", tmp_path / "new"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register(stage_inputs(project, 1), RegisterConfig(), PARAMS, uri, old / "mlartifacts")
    shutil.copytree(old, new)                    # a copy: works, but says where artifacts go
    register(stage_inputs(project, 2), RegisterConfig(), PARAMS, uri, new / "mlartifacts")
    assert "keeps its artifacts in " + str(old / "mlartifacts") in caplog.text
    shutil.rmtree(old)                           # moved: the old place is gone
    with pytest.raises(DataError, match=r"mlartifacts does not exist.*moved project"):
        register(stage_inputs(project, 2), RegisterConfig(), PARAMS, uri, new / "mlartifacts")
    status, error = registry_cli(["promote", "2", "--tracking-uri", uri])
    assert status == 2 and "model files are not at " + str(old) in error


def test_unsupported_tracking_uri_is_one_line_and_exit_2(tmp_path):
    from conftest import project_env, stage_command

    status, error = registry_cli(["list", "--tracking-uri", "garbage://nowhere"])
    assert status == 2 and "MLFLOW_TRACKING_URI=garbage://nowhere: MLflow cannot use" in error
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    done = subprocess.run(stage_command("register"), cwd=tmp_path,
                          env={**project_env(), "MLFLOW_TRACKING_URI": "garbage://nowhere",
                               "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "unsupported URI 'garbage://nowhere'" in done.stderr


def test_register_refuses_bad_inputs_before_logging(project, tmp_path, monkeypatch):
    monkeypatch.chdir(project)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    paths = stage_inputs(project, 1)
    (project / "metrics" / "registry.json").unlink(missing_ok=True)
    paths.model.write_bytes(b"retrained, but dvc.lock not updated")
    with pytest.raises(DataError, match="the lock is stale"):
        register(paths, RegisterConfig(), PARAMS, uri, tmp_path / "mlartifacts")
    with sqlite3.connect(tmp_path / "mlflow.db") as db:          # MLflow was never touched
        assert db.execute("select count(*) from sqlite_master").fetchone() == (0,)
    assert not (project / "metrics" / "registry.json").exists()


def test_model_and_body_checked_before_logging(project, tmp_path):
    import shutil

    from stdformer.serving import check_servable

    payload, num_vertices = check_servable(project / "model1.pt", project / "data" / "body")
    assert num_vertices == 799 and payload["model_config"]["clip_len"] == 8
    other = tmp_path / "body"
    shutil.copytree(project / "data" / "body", other)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "body_model_id": "another"}))
    with pytest.raises(DataError, match="meta.json: body_model_id: body model 'another'"):
        check_servable(project / "model1.pt", other)
    (other / "regressors.npz").unlink()
    with pytest.raises(DataError, match="regressors.npz: file not found"):
        check_servable(project / "model1.pt", other)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(DataError, match="junk.pt: not a readable model file"):
        check_servable(tmp_path / "junk.pt", project / "data" / "body")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_server_fails_fast(project, tmp_path, monkeypatch):
    monkeypatch.chdir(project)
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    paths = stage_inputs(project, 1)
    paths.eval.unlink()                       # the tracking check comes before any input
    (project / "metrics" / "registry.json").unlink(missing_ok=True)
    start = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match="not reachable"):
        register(paths, RegisterConfig(), PARAMS, uri, tmp_path / "mlartifacts")
    status, error = registry_cli(["list"])
    assert status == 2 and "MLflow tracking server not reachable" in error and uri in error
    assert time.monotonic() - start < 10
    assert not (project / "metrics" / "registry.json").exists()
