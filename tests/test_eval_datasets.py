"""Evaluation per dataset (`evaluate.datasets`): one row per (model, dataset), a camera filter
for Human3.6M protocol 2, MPVPE against fitted meshes labelled pseudo ground truth, and the
promotion gate reading its primary dataset. Sources laid out as the pipeline's data/shards
(`<parent>/3dpw`, `<parent>/h36m`) from evalkit's hand-made data (known ground truth)."""

import dataclasses
import json
import shutil

import pytest
import torch

from evalkit import perfect, valid_frames
from stdformer.evaluation import DatasetSpec, EvaluateConfig, EvaluatePaths, evaluate
from stdformer.io import DataError
from stdformer.registry import RegisterConfig, decide, read_eval_metrics
from stdformer.scoring.run import evaluate_predictors
from trainkit import set_cameras

CAMERAS = {"seqA": 1, "seqB": 4, "trainA": 2, "trainB": 4}   # seqB: the frontal camera


@pytest.fixture(scope="module")
def two_sources(eval_data, tmp_path_factory):
    """(parent, eval_data): evalkit's shards as source 3dpw and, with cameras per sequence and
    the h36m layout in its report.json, as source h36m."""
    parent = tmp_path_factory.mktemp("datasets") / "shards"
    shards = eval_data[1]
    for name in ("3dpw", "h36m"):
        shutil.copytree(shards, parent / name)
    set_cameras(parent / "h36m", CAMERAS.get)
    (parent / "h36m" / "report.json").write_text(json.dumps({"layout": "h36m"}))
    return parent, eval_data


def paths_under(root, shards, body_dir) -> EvaluatePaths:
    """The evaluate stage's outputs under `root` (named as dvc.yaml names them)."""
    out = {f.name: root / "metrics" / name for f, name in zip(
        dataclasses.fields(EvaluatePaths)[2:-1],
        ("eval.json", "eval", "eval_diagnostics.json", "per_frame.parquet",
         "eval_per_sequence.csv", "eval_error_over_time.csv"))}
    return EvaluatePaths(shards=shards, body=body_dir, plots=root / "plots", **out)


def _frames_of(truth, sequences) -> int:
    return sum(int(v["valid"].sum()) for (split, seq, _), v in truth.items()
               if split == "test" and seq in sequences)


def test_camera_filter_scores_only_that_cameras_clips(two_sources):
    parent, (_, _, body, truth) = two_sources
    result = evaluate_predictors({"perfect": perfect}, parent / "h36m", "test", body, camera=4,
                                 batch_size=2)
    assert set(result.per_sequence["perfect"]) == {"seqB"}
    assert result.overall["perfect"]["frames"] == _frames_of(truth, {"seqB"})
    assert result.overall["perfect"]["mpjpe"] < 1e-3
    with pytest.raises(DataError, match=r"h36m/manifest.parquet: camera: no clip of camera 3 "
                                        r"\(cameras here: \[1, 2, 4\]\)"):
        evaluate_predictors({"perfect": perfect}, parent / "h36m", "test", body, camera=3)


def test_evaluate_writes_one_row_per_model_and_dataset(two_sources, tmp_path):
    parent, (body_dir, _, body, truth) = two_sources
    datasets = {"3dpw": {"source": "3dpw"}, "h36m_p1": {"source": "h36m"},
                "h36m_p2": {"source": "h36m", "camera": 4}}
    cfg = EvaluateConfig(models={}, overlays=0, batch_size=2,
                         datasets={n: DatasetSpec(**d) for n, d in datasets.items()})
    paths = paths_under(tmp_path, parent, body_dir)
    metrics = tmp_path / "metrics"
    run = evaluate(cfg, paths, progress=False)
    doc = json.loads(paths.metrics.read_text())
    assert list(doc["datasets"]) == list(datasets)
    frames = {d: t["mean_pose"]["frames"] for d, t in doc["datasets"].items()}
    assert frames == {"3dpw": valid_frames(truth), "h36m_p1": valid_frames(truth),
                      "h36m_p2": _frames_of(truth, {"seqB"})}
    # P1 and 3DPW are the same clips here: the same numbers; P2 scores a subset
    assert doc["datasets"]["h36m_p1"] == doc["datasets"]["3dpw"]
    assert doc["datasets"]["h36m_p2"]["mean_pose"] != doc["datasets"]["h36m_p1"]["mean_pose"]
    # MPVPE of the h36m rows is pseudo ground truth: noted, and its own column
    assert "mpvpe" in doc["notes"]["h36m_p2"] and "mpvpe" not in doc["notes"]["3dpw"]
    assert doc["notes"]["h36m_p2"]["camera"] == 4
    row = json.loads((metrics / "eval" / "h36m_p2" / "mean_pose.json").read_text())
    assert "mpvpe_pseudo" in row and "mpvpe" not in row
    assert "mpvpe" in json.loads((metrics / "eval" / "3dpw" / "mean_pose.json").read_text())
    table = run.markdown()
    assert "| h36m_p2 | mean_pose |" in table and "pseudo ground truth" in table
    per_sequence = paths.per_sequence_csv.read_text().splitlines()[1:]
    assert {line.split(",")[1] for line in per_sequence if line.startswith("h36m_p2,")} == \
        {"h36m_p2/seqB"}
    assert sorted(p.name for p in paths.plots.iterdir()) == ["3dpw", "h36m_p1", "h36m_p2"]
    # the gate compares the primary dataset's rows
    eval_rows = {d: {"stdformer": t["mean_pose"]} for d, t in doc["datasets"].items()}
    paths.metrics.write_text(json.dumps({"datasets": eval_rows}))
    gate = RegisterConfig(primary_dataset="h36m_p2")
    p2 = read_eval_metrics(paths.metrics, gate.gated_metrics, dataset=gate.primary_dataset)
    assert p2["stdformer"]["mpjpe"] == doc["datasets"]["h36m_p2"]["mean_pose"]["mpjpe"]
    p1 = read_eval_metrics(paths.metrics, gate.gated_metrics, dataset="h36m_p1")
    decision = decide(p2["stdformer"], p1["stdformer"], gate)
    assert decision.compared["pa_mpjpe"].candidate == p2["stdformer"]["pa_mpjpe"]
    with pytest.raises(DataError, match=r"datasets.mpi: no dataset 'mpi' \(scored: 3dpw, "
                                        r"h36m_p1, h36m_p2\)"):
        read_eval_metrics(paths.metrics, dataset="mpi")


def test_default_datasets_are_the_sources(two_sources, tmp_path):
    parent, (body_dir, _, _, truth) = two_sources
    cfg = EvaluateConfig(models={}, overlays=0, batch_size=2)
    paths = paths_under(tmp_path, parent, body_dir)
    run = evaluate(cfg, paths, progress=False)
    assert list(run.results) == ["3dpw", "h36m"]
    assert torch.isfinite(torch.tensor(run.results["h36m"].overall["mean_pose"]["mpjpe"]))
