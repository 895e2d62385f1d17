"""What `dvc metrics show` and `dvc plots show` make of the pipeline's outputs: the declarations
in dvc.yaml and the templates in .dvc/plots/, on output files written by the project's own
writers (no stage runs)."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import yaml

from conftest import REPO, dvc, project_env
from stdformer.evaluation import report
from stdformer.tracking import curve_csv

VARIANTS = list(yaml.safe_load((REPO / "params.yaml").read_text())["variants"])  # trained
MODELS = [*VARIANTS, *(f"{v}_smooth" for v in VARIANTS), "mean_pose"]             # evaluated
SEQUENCES = [f"synth_test_{i:02d}_walk" for i in range(24)]
DATASETS = {"3dpw": False, "h36m_p1": True, "h36m_p2": True}   # name -> MPVPE pseudo GT


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvcout") / "repo"
    root.mkdir()
    env = project_env()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")
    rng = np.random.default_rng(0)
    summary = {m: {"mpjpe": 150.0 + k, "pa_mpjpe": 120.0, "mpvpe": 160.0, "accel": 10.0,
                   "yaw_median": 25.0, "frames": 500} for k, m in enumerate(MODELS)}
    per_sequence = {m: {s: {**summary[m], "frames": 20} for s in SEQUENCES} for m in MODELS}
    metrics = root / "metrics"
    (metrics / "train").mkdir(parents=True)
    for d, pseudo in DATASETS.items():
        (metrics / "eval" / d).mkdir(parents=True)
        for m in MODELS:
            (metrics / "eval" / d / f"{m}.json").write_text(
                report.model_metrics_json(summary[m], pseudo_mesh=pseudo))
    (metrics / "eval.json").write_text(report.eval_json({d: summary for d in DATASETS}))
    (metrics / "eval_diagnostics.json").write_text("{}\n")
    (metrics / "registry.json").write_text(json.dumps({"decision": "promoted", "reason": "x"}))
    (metrics / "eval_per_sequence.csv").write_text(report.per_sequence_csv(
        {d: per_sequence for d in DATASETS}))
    n = 10
    rows = {"sequence": np.array([SEQUENCES[0]] * n * len(MODELS), object),
            "actor": np.zeros(n * len(MODELS), np.int32),
            "model": np.repeat(np.array(MODELS, object), n),
            "frame": np.tile(np.arange(n), len(MODELS)).astype(np.int32),
            "mpjpe": rng.uniform(100, 200, n * len(MODELS)),
            "accel": rng.uniform(0, 10, n * len(MODELS))}
    (metrics / "eval_error_over_time.csv").write_text(
        report.error_over_time_csv({"3dpw": rows}, {"3dpw": SEQUENCES[:1]}))
    for v in VARIANTS:
        curve = [{"step": s, "loss/total": 10.0 / s, "lr": 1e-3} for s in range(10, 90, 10)]
        for row in (curve[3], curve[-1]):        # validation on some steps only
            row.update(val_mpjpe=150.0, val_pa_mpjpe=120.0, val_mpvpe=160.0, val_frames=50)
        (metrics / "train" / f"{v}_curve.csv").write_text(curve_csv(curve))
        (metrics / "train" / f"{v}.json").write_text(json.dumps(
            {"steps": 80, "val_mpjpe": 150.0, "baseline_val_mpjpe": 200.0, "train_loss": 1.0}))
    (root / "plots" / "eval").mkdir(parents=True)
    (root / "plots" / "eval" / "yaw_error.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


def test_metrics_show_is_one_row_per_model_and_dataset_that_fits_a_terminal(project):
    table = dvc(project, "metrics", "show")
    lines = table.strip().splitlines()
    # 110: the pseudo-GT MPVPE's own column (Human3.6M) next to 3DPW's measured one
    assert max(len(line) for line in lines) <= 110, table
    assert lines[0].split() == ["Path", "accel", "mpjpe", "mpvpe", "mpvpe_pseudo", "pa_mpjpe",
                                "yaw_median"]
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(
        f"metrics/eval/{d}/{m}.json" for d in DATASETS for m in MODELS)
    for line in lines[1:]:        # each row fills the MPVPE column its dataset measures
        path, _, _, mpvpe, pseudo, *_ = line.split()
        assert (mpvpe == "-") == DATASETS[path.split("/")[2]] == (pseudo != "-")
    # the training run's numbers are one command away, not in the default table
    assert "val_mpjpe" in dvc(project, "metrics", "show", "metrics/train/stdformer.json")


def test_plots_show_draws_what_each_title_says(project):
    doc = json.loads(dvc(project, "plots", "show", "--json"))
    assert not doc.get("errors"), doc.get("errors")
    plots = {name: entries[0]["content"] for name, entries in doc["data"].items()
             if entries and entries[0]["type"] == "vega"}
    assert len(plots) == 5, sorted(plots)

    def one(prefix):
        return next(spec for name, spec in plots.items() if name.startswith(prefix))

    loss = one("Training loss")
    assert loss["encoding"]["y"]["field"] == "loss/total"
    assert len(loss["data"]["values"]) == 8 * len(VARIANTS)               # every logged step
    val = one("Validation MPJPE")
    # the blank cells of non-validation steps are filtered out, not drawn as 0
    assert "!== ''" in val["transform"][0]["filter"] and "val_mpjpe" in val["transform"][0][
        "filter"]
    assert sum(d["val_mpjpe"] != "" for d in val["data"]["values"]) == 2 * len(VARIANTS)
    bars = one("Test MPJPE per sequence")
    enc = bars["encoding"]
    assert (enc["y"]["field"], enc["y"]["type"]) == ("sequence", "nominal")
    assert (enc["x"]["field"], enc["x"]["type"]) == ("mpjpe", "quantitative")
    assert enc["color"]["field"] == enc["yOffset"]["field"] == "model"     # a bar per model
    assert len(bars["data"]["values"]) == len(DATASETS) * len(SEQUENCES) * len(MODELS)
    lines = one("Test MPJPE over time")
    assert lines["facet"]["row"]["field"] == "track"                     # a panel per track
    assert lines["spec"]["encoding"]["color"]["field"] == "model"         # a line per model
    assert lines["spec"]["encoding"]["x"]["field"] == "frame"
