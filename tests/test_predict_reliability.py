"""`stdformer predict` on bad videos, bad output places, a full disk and bad models: one line
naming the file and the problem, early, and nothing that looks like a finished result left behind.

Videos are small noise clips written with the project's H.264 writer (no people: the detector
finds none, which keeps the runs short); a boxes file with track ids gives a run with a track
where the outputs must include a .glb. The model is test_predict's tiny random STDFormer.
"""

import errno
import shutil
import socket
import subprocess

import numpy as np
import pytest

from stdformer.cli import main
from stdformer.inference import PredictConfig, load_inference_model, predict_video
from stdformer.inference import run as predict_run
from stdformer.inference.video import FrameSource, write_h264
from stdformer.io import DataError
from test_predict import CROP_CFG, write_tiny_model

FRAMES = 20


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, synth_body_dir):
    return write_tiny_model(tmp_path_factory.mktemp("reliability_model") / "tiny.pt",
                            synth_body_dir)


@pytest.fixture(scope="module")
def model(model_file, synth_body_dir):
    return load_inference_model(model_file, synth_body_dir)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A 20-frame H.264 MP4 of noise, 128x96 (faststart: the frame count is at the front)."""
    rng = np.random.default_rng(0)
    frames = [np.clip(120 + rng.normal(0, 3, (96, 128, 3)), 0, 255).astype(np.uint8)
              for _ in range(FRAMES)]
    return _written(tmp_path_factory.mktemp("reliability_video") / "clip.mp4", frames)


def _written(path, frames):
    write_h264(path, frames, 25.0)
    return path


def truncated(video, dst):
    """The first 40 % of the file's bytes: the container still declares 20 frames."""
    data = video.read_bytes()
    dst.write_bytes(data[: len(data) * 2 // 5])
    return dst


def predict_cli(capsys, *args) -> tuple[int, list[str], str]:
    """(exit status, stderr lines, stdout) of `stdformer predict ...` run in this process, as
    outside a project (no params file: the model file's crop protocol alone)."""
    status = main(["predict", *map(str, args), "--quiet", "--params", "no-such-params.yaml"])
    captured = capsys.readouterr()
    return status, captured.err.strip().splitlines(), captured.out


def output_files(directory):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------------------------
# 4. Truncated videos and unusable output places


def test_a_truncated_video_warns_in_one_line_and_fails_with_strict_frames(
        video, model_file, synth_body_dir, tmp_path, capsys):
    cut = truncated(video, tmp_path / "cut.mp4")
    decoded = sum(1 for _ in FrameSource(cut))
    assert 0 < decoded < FRAMES

    status, err, _ = predict_cli(capsys, cut, "--model", model_file, "--body", synth_body_dir,
                                 "--out", tmp_path / "out")
    assert status == 0
    warnings = [line for line in err if "warning" in line]
    assert warnings == [f"predict: warning: {cut}: only {decoded} of the {FRAMES} frames its "
                        "container declares could be decoded (truncated or damaged file?); "
                        "the result covers the decoded ones"]
    assert not any(line.startswith("[") for line in err)          # no FFmpeg packet noise

    status, err, _ = predict_cli(capsys, cut, "--model", model_file, "--body", synth_body_dir,
                                 "--out", tmp_path / "strict", "--strict-frames")
    assert status == 2
    assert err == [f"error: {cut}: only {decoded} of the {FRAMES} frames its container declares "
                   "could be decoded (truncated or damaged file?)"]
    assert output_files(tmp_path / "strict") == []

    status, err, _ = predict_cli(capsys, video, "--model", model_file, "--body", synth_body_dir,
                                 "--out", tmp_path / "whole", "--strict-frames")
    assert status == 0 and not any("warning" in line for line in err)
    assert FrameSource(cut).declared_frames == FrameSource(video).declared_frames == FRAMES


def _unwritable(directory):
    """Make `directory` unwritable even for root (permission bits, else the immutable flag);
    returns how to undo it, or skips when this machine allows neither."""
    directory.chmod(0o555)
    if _writable(directory):                     # root ignores permission bits
        subprocess.run(["chattr", "+i", str(directory)], capture_output=True)
    if _writable(directory):
        directory.chmod(0o755)
        pytest.skip("cannot make a directory unwritable here (root without chattr)")

    def undo():
        subprocess.run(["chattr", "-i", str(directory)], capture_output=True)
        directory.chmod(0o755)
    return undo


def _writable(directory) -> bool:
    try:
        (directory / "probe").mkdir()
    except OSError:
        return False
    (directory / "probe").rmdir()
    return True


def test_an_unusable_out_is_refused_in_one_line_before_any_work(
        video, model_file, synth_body_dir, tmp_path, capsys, monkeypatch):
    """A file, a path under a file and a read-only directory: refused before the model is
    loaded or a frame decoded (both replaced here by failures)."""
    import stdformer.inference as inference

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output place was checked")

    monkeypatch.setattr(inference, "load_inference_model", no_work)
    monkeypatch.setattr(predict_run, "FrameSource", no_work)
    (tmp_path / "a_file").write_text("x")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    cases = {tmp_path / "a_file": "output directory is a file",
             tmp_path / "a_file" / "sub": f"output directory cannot be made: {tmp_path / 'a_file'} "
                                         "is a file"}
    undo = _unwritable(read_only)
    try:
        for out, problem in cases.items():
            status, err, _ = predict_cli(capsys, video, "--model", model_file, "--body",
                                         synth_body_dir, "--out", out)
            assert (status, err) == (2, [f"error: {out}: {problem}"])
        status, err, _ = predict_cli(capsys, video, "--model", model_file, "--body",
                                     synth_body_dir, "--out", read_only)
        assert status == 2 and len(err) == 1
        assert err[0].startswith(f"error: {read_only}: output directory is not writable: ")
        with pytest.raises(DataError, match="output directory is not writable"):
            predict_video(video, None, read_only / "new", PredictConfig())
    finally:
        undo()
    assert output_files(read_only) == []


# --------------------------------------------------------------------------------------------
# 5. Disk full while writing


def boxes_csv(path):
    """One person box with a track id on every frame: tracking skipped, one track."""
    path.write_text("".join(f"{f},3,40,10,40,80,1\n" for f in range(1, FRAMES + 1)))
    return path


def test_disk_full_leaves_no_output_and_keeps_an_earlier_run(video, model, tmp_path,
                                                            monkeypatch):
    cfg = PredictConfig(min_track_frames=1)
    boxes = boxes_csv(tmp_path / "boxes.csv")
    out = tmp_path / "out"
    earlier = predict_video(video, model, out, cfg, CROP_CFG, boxes=boxes, show_progress=False)
    assert {"npz", "glb3", "overlay", "sheet"} <= set(earlier.files)
    before = {name: (out / name).read_bytes() for name in output_files(out)}

    def disk_full(path, data):                  # the sheet: the last file a run writes
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(predict_run, "write_bytes_atomic", disk_full)
    fresh = tmp_path / "fresh"
    for where in (fresh, out):
        with pytest.raises(DataError) as err:
            predict_video(video, model, where, cfg, CROP_CFG, boxes=boxes, show_progress=False)
        assert str(err.value) == (f"{where}: writing the outputs of clip.mp4 failed (No space "
                                  "left on device): none of this run's files were kept, "
                                  "earlier ones are untouched")
    assert output_files(fresh) == []
    assert {name: (out / name).read_bytes() for name in output_files(out)} == before


def test_disk_full_is_one_line_from_the_cli(video, model_file, synth_body_dir, tmp_path,
                                            capsys, monkeypatch):
    def disk_full(*args, **kwargs):             # the overlay video
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(predict_run, "write_h264", disk_full)
    status, err, _ = predict_cli(capsys, video, "--model", model_file, "--body", synth_body_dir,
                                 "--out", tmp_path / "out")
    assert status == 2
    assert err == [f"error: {tmp_path / 'out'}: writing the outputs of clip.mp4 failed (No space "
                   "left on device): none of this run's files were kept, earlier ones are "
                   "untouched"]
    assert output_files(tmp_path / "out") == []


def test_a_later_run_with_fewer_outputs_removes_the_earlier_runs_extra_meshes(video, model,
                                                                              tmp_path):
    boxes = boxes_csv(tmp_path / "boxes.csv")
    out = tmp_path / "out"
    predict_video(video, model, out, PredictConfig(min_track_frames=1, obj_every=5), CROP_CFG,
                  boxes=boxes, show_progress=False)
    assert {"clip_track3.glb", "clip_obj"} <= set(output_files(out))
    result = predict_video(video, model, out, PredictConfig(min_track_frames=1, glb=False),
                           CROP_CFG, boxes=boxes, show_progress=False)
    assert output_files(out) == ["clip.npz", "clip_overlay.mp4", "clip_sheet.png"]
    assert sorted(p.name for p in result.files.values()) == output_files(out)


# --------------------------------------------------------------------------------------------
# 6. Models: a moved store, an unreachable server, a file that would run code


def test_a_model_file_that_would_run_code_is_refused_in_one_line_by_every_loader(
        tmp_path, synth_body_dir, video, capsys):
    import torch

    from realfiles import Evil
    from stdformer.model.backbone import load_backbone_weights
    from stdformer.model.pretrained import read_checkpoint
    from stdformer.train.checkpoint import load_checkpoint
    from stdformer.model.model_file import read_model_file

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"weights": Evil(marker)}, evil)
    loaders = {"model file": read_model_file, "training checkpoint": load_checkpoint,
               "checkpoint": read_checkpoint,
               "backbone weight file": lambda p: load_backbone_weights(torch.nn.Linear(1, 1), p)}
    for what, load in loaders.items():
        with pytest.raises(DataError) as err:
            load(evil)
        assert str(err.value) == (
            f"{evil}: refusing to load: it holds code or Python objects not allowed in a {what} "
            "(it asks for 'posix.system'; only tensors and plain containers are allowed): the "
            "file may try to run code, and nothing in it was run")
    status, err, _ = predict_cli(capsys, video, "--model", evil, "--body", synth_body_dir,
                                 "--out", tmp_path / "out")
    assert status == 2 and len(err) == 1 and "weights_only" not in err[0]
    assert err[0].startswith(f"error: {evil}: refusing to load: it holds code")
    assert not marker.exists()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_tracking_server_is_one_line_without_mlflows_retries(
        video, tmp_path, capsys, monkeypatch):
    """As train and register: the server is probed once (stdformer.tracking); MLflow's
    own client, which retries for minutes, is never called."""
    import mlflow.artifacts

    def retrying(*args, **kwargs):
        raise AssertionError("MLflow's retrying client was called")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", retrying)
    monkeypatch.setattr(mlflow.MlflowClient, "__init__", retrying)
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    status, err, _ = predict_cli(capsys, video, "--model", "models:/stdformer@champion", "--out",
                                 tmp_path / "out")
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"error: MLFLOW_TRACKING_URI={uri}: MLflow tracking server not "
                             "reachable")


def test_a_registered_model_whose_artifacts_are_gone_names_where_they_should_be(
        tmp_path, model_file, synth_body_dir, monkeypatch):
    import mlflow

    from stdformer.registry.store import ModelRegistry, fluent_tracking_uri
    from stdformer.serving import log_pyfunc_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with fluent_tracking_uri(uri):
        experiment = mlflow.create_experiment(
            "t", artifact_location=(tmp_path / "mlartifacts" / "t").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            info = log_pyfunc_model(model_file, synth_body_dir)
    registry = ModelRegistry(uri, "tiny")
    registry.make_champion(registry.create_version(info.model_uri, run_id=run.info.run_id,
                                                   model_id=info.model_id, tags={}).version)
    shutil.rmtree(tmp_path / "mlartifacts")
    with pytest.raises(DataError) as err:
        load_inference_model("models:/tiny@champion", tracking_uri=uri)
    where = tmp_path / "mlartifacts" / "t" / "models" / info.model_id / "artifacts"
    assert str(err.value) == (
        f"models:/tiny@champion: the model's files should be in {where}, which does not exist "
        "(local tracking stores record absolute paths: was the project or its mlartifacts/ "
        "moved or removed?)")
