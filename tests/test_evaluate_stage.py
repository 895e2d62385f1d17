"""The evaluate outputs (documented schema, charts, overlays) and the stage (models, baseline and
smoothing scored on the same frames; config errors naming the field), on evalkit's hand-made
data (conftest.py's `eval_data`) and on a preprocessed tiny project."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from evalkit import REPO, S, noisy, perfect, run, valid_frames
from stdformer.config import from_dict
from stdformer.evaluation import EvaluateConfig, EvaluatePaths, write_outputs
from stdformer.evaluation.overlays import LEGEND_HEIGHT as LEGEND_BAND
from stdformer.evaluation.report import PER_FRAME_SCHEMA
from stdformer.data.sources import source_dir
from stdformer.io import DataError


# --------------------------------------------------------------------------------------------
# Outputs and the stage


def test_outputs_have_the_documented_schema(eval_data, tmp_path):
    body_dir, shards, body, truth = eval_data
    result = run({"perfect": perfect, "noisy": noisy}, eval_data, smoothed=["noisy"],
                 overlay_keys=["seqA__a0__00004", "seqB__a0__00000"],
                 part_labels=body.part_labels.numpy())
    paths = EvaluatePaths(shards=shards, body=body_dir,
                          metrics=tmp_path / "metrics/eval.json",
                          model_metrics=tmp_path / "metrics/eval",
                          diagnostics=tmp_path / "metrics/eval_diagnostics.json",
                          per_frame=tmp_path / "metrics/per_frame.parquet",
                          per_sequence_csv=tmp_path / "metrics/eval_per_sequence.csv",
                          over_time_csv=tmp_path / "metrics/eval_error_over_time.csv",
                          plots=tmp_path / "plots/eval")
    notes = {"3dpw": {"source": "3dpw", "camera": None},
             "fits": {"source": "h36m", "camera": 4, "mpvpe": "pseudo ground truth"}}
    worst = write_outputs({"3dpw": result, "fits": result}, paths, body.faces.numpy(), "noisy",
                          worst=1, overlay_size=64, overlay_frames=2, notes=notes)
    assert len(worst["3dpw"]) == 1
    # eval.json: the headline numbers per dataset only (`dvc metrics show`), no per-sequence
    # table; the notes say what each dataset is and which MPVPE is pseudo ground truth
    doc = json.loads(paths.metrics.read_text())
    assert list(doc) == ["datasets", "notes"] and doc["notes"] == notes
    assert list(doc["datasets"]) == ["3dpw", "fits"]
    overall = doc["datasets"]["3dpw"]
    assert list(overall) == ["perfect", "noisy", "noisy_smooth"]
    assert set(overall["noisy"]) == {"mpjpe", "pa_mpjpe", "mpvpe", "accel", "yaw_median",
                                     "frames"}
    assert overall["perfect"]["yaw_median"] == 0.0
    # one small file per (dataset, model): `dvc metrics show` lists them as rows of five columns
    assert sorted(p.relative_to(tmp_path / "metrics/eval").as_posix()
                  for p in (tmp_path / "metrics/eval").rglob("*.json")) == [
        f"{d}/{m}.json" for d in ("3dpw", "fits") for m in ("noisy", "noisy_smooth", "perfect")]
    headline = json.loads((tmp_path / "metrics/eval/3dpw/noisy.json").read_text())
    assert list(headline) == ["mpjpe", "pa_mpjpe", "mpvpe", "accel", "yaw_median"]
    assert headline["mpjpe"] == pytest.approx(overall["noisy"]["mpjpe"], abs=0.01)
    pseudo = json.loads((tmp_path / "metrics/eval/fits/noisy.json").read_text())
    assert list(pseudo) == ["mpjpe", "pa_mpjpe", "mpvpe_pseudo", "accel", "yaw_median"]
    diagnostics = json.loads(paths.diagnostics.read_text())["3dpw"]
    assert diagnostics["perfect"]["width_ratio"] == pytest.approx(1.0)
    assert diagnostics["perfect"]["part_head"] < 0.01       # mm (float32 rounding)
    assert diagnostics["noisy"]["part_hands"] > 0
    table = pq.read_table(paths.per_frame)
    assert table.schema.equals(PER_FRAME_SCHEMA)
    assert table.num_rows == 2 * 3 * valid_frames(truth)
    assert table.column("dataset").to_pylist().count("fits") == 3 * valid_frames(truth)
    assert table.column("accel").null_count > 0               # track ends carry no term
    assert table.column("yaw").null_count == 0
    per_seq = paths.per_sequence_csv.read_text().splitlines()
    assert per_seq[0] == "dataset,sequence,model,mpjpe,pa_mpjpe,mpvpe,accel,frames"
    assert len(per_seq) == 1 + 2 * 2 * 3
    over_time = paths.over_time_csv.read_text().splitlines()
    assert over_time[0] == "dataset,sequence,actor,model,frame,mpjpe,accel"
    assert {line.split(",")[1] for line in over_time[1:] if line.startswith("3dpw,")} == \
        {f"3dpw/{seq}" for seq in worst["3dpw"]}
    pngs = sorted(p.relative_to(paths.plots / "3dpw").as_posix()
                  for p in (paths.plots / "3dpw").rglob("*.png"))
    assert pngs == ["error_over_time.png", "overlays/seqA__a0__00004.png",
                    "overlays/seqB__a0__00000.png", "per_sequence.png", "yaw_error.png"]
    assert (paths.plots / "fits" / "per_sequence.png").is_file()
    import cv2

    grid = cv2.imread(str(paths.plots / "3dpw/overlays/seqA__a0__00004.png"))
    # a colour legend (its lines wrap on a grid this narrow), then rows: input, perfect (it has
    # a camera; noisy has none, so no row), ground truth
    legend = grid.shape[0] - 3 * 64
    assert grid.shape[1:] == (2 * 64, 3) and legend >= LEGEND_BAND and legend % LEGEND_BAND == 0
    # the clip's image frame numbers travel with it (printed on the input row)
    clip = next(c for c in result.overlay_clips if c.key == "seqA__a0__00004")
    assert clip.frame_ids == list(range(104, 104 + S))


def test_config_validation_names_the_field():
    cfg = from_dict(EvaluateConfig, {"models": ["models/a.pt", "x/b.pt"],
                                     "smoothing": {"enabled": True, "models": ["b"]}})
    assert cfg.model_files() == {"a": "models/a.pt", "b": "x/b.pt"}
    assert cfg.smoothed_models() == ["b"]
    with pytest.raises(DataError, match=r"params.yaml: evaluate: merge must be one of"):
        from_dict(EvaluateConfig, {"merge": "median"}, source="params.yaml", prefix="evaluate")
    with pytest.raises(DataError, match="smoothing.models"):
        from_dict(EvaluateConfig, {"smoothing": {"models": ["nope"]}})
    with pytest.raises(DataError, match="sigma"):
        from_dict(EvaluateConfig, {"smoothing": {"sigma": 0}})
    with pytest.raises(DataError, match=r"evaluate.smothing: unknown key"):
        from_dict(EvaluateConfig, {"smothing": {}}, prefix="evaluate")
    with pytest.raises(DataError, match="mean_pose"):
        from_dict(EvaluateConfig, {"models": {"mean_pose": "m.pt"}})


def write_random_model(path: Path, body_dir: Path, clip_len: int) -> None:
    """A models/*.pt file (stdformer/model/model_file.py format) with random weights."""
    from stdformer.model.stdformer import STDFormer
    from stdformer.model.model_file import MODEL_FORMAT
    from stdformer.model.stdformer import model_config_from_section
    from stdformer.model.assets import load_body_assets

    cfg = model_config_from_section({"profile": "cpu", "backbone_width": 8, "widths": [32, 16],
                                     "ffn_dims": [32, 16], "heads": 2, "clip_len": clip_len})
    assets = load_body_assets(body_dir)
    torch.manual_seed(0)
    model = STDFormer.from_hierarchy(cfg, assets.hierarchy)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": MODEL_FORMAT, "weights": model.state_dict(),
                "model_config": dataclasses.asdict(cfg), "body_model_id": assets.body_model_id,
                "train_config": {}, "loss_config": {}, "metrics": {}}, path)


@pytest.mark.slow  # the stage on three models in a subprocess (~25 s)
def test_stage_compares_models_baseline_and_smoothing_on_the_same_frames(eval_data, tmp_path):
    body_dir, shards, _, truth = eval_data
    write_random_model(tmp_path / "models/stdformer.pt", body_dir, S)
    params = {"evaluate": {"models": {"stdformer": str(tmp_path / "models/stdformer.pt")},
                           "smoothing": {"enabled": True, "sigma": 1.0}, "overlays": 1,
                           "overlay_size": 64, "batch_size": 4, "device": "cpu"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "stages.evaluate", "--params", str(tmp_path / "params.yaml"),
         "--shards", str(shards), "--body", str(body_dir), "--no-progress",
         "--metrics", str(tmp_path / "m/eval.json"), "--per-frame", str(tmp_path / "m/pf.parquet"),
         "--diagnostics", str(tmp_path / "m/diagnostics.json"),
         "--model-metrics", str(tmp_path / "m/eval"),
         "--per-sequence-csv", str(tmp_path / "m/seq.csv"),
         "--over-time-csv", str(tmp_path / "m/time.csv"), "--plots", str(tmp_path / "plots")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| stdformer |" in done.stdout and "| mean_pose |" in done.stdout
    # no evaluate.datasets: the one source there is, named after it (evalkit's "test")
    overall = json.loads((tmp_path / "m/eval.json").read_text())["datasets"]["test"]
    assert list(overall) == ["stdformer", "stdformer_smooth", "mean_pose"]
    assert {o["frames"] for o in overall.values()} == {valid_frames(truth)}
    assert set(json.loads((tmp_path / "m/diagnostics.json").read_text())["test"]) == \
        set(overall)
    assert len(list((tmp_path / "plots/test/overlays").glob("*.png"))) == 1

    # a model trained for another clip length is refused, naming the file and the field
    write_random_model(tmp_path / "models/stdformer.pt", body_dir, 8)
    done = subprocess.run(done.args, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    assert "stdformer.pt: model_config.clip_len" in done.stderr

    # a truncated test shard (issue 10 item 7): one line naming it and exit 2, as train does
    write_random_model(tmp_path / "models/stdformer.pt", body_dir, S)
    cut = tmp_path / "shards"
    shutil.copytree(shards, cut)
    shard = cut / "test" / "shard-000000.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    args = [str(cut) if a == str(shards) else a for a in done.args]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert f"error: {shard}: " in done.stderr


@pytest.mark.slow
def test_stage_on_a_preprocessed_tiny_project(tiny_project_factory):
    """The stage as the pipeline will run it: real preprocess shards (8-frame clips with the
    camera extras), a model file in models/, outputs at dvc.yaml's paths."""
    from conftest import project_env, stage_command

    project = tiny_project_factory({"evaluate": {
        "models": ["models/stdformer.pt"], "smoothing": {"enabled": True},
        "overlays": 2, "overlay_size": 64, "worst_sequences": 1, "device": "cpu"}})
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["datasets"] = {}                # every source, named after it
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = project_env()
    done = subprocess.run(["dvc", "repro", "preprocess"], cwd=project, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    write_random_model(project / "models/stdformer.pt", project / "data/body", 8)
    done = subprocess.run([*stage_command("evaluate", project), "--no-progress"],
                          cwd=project, env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    doc = json.loads((project / "metrics/eval.json").read_text())
    for dataset, overall in doc["datasets"].items():      # every source, named after it
        where = source_dir(project / "data/shards", doc["notes"][dataset]["source"])
        report = json.loads((where / "report.json").read_text())
        assert {o["frames"] for o in overall.values()} == \
            {report["splits"]["test"]["valid_frames"]}
        assert list(overall) == ["stdformer", "stdformer_smooth", "mean_pose"]
        assert len(list((project / "plots/eval" / dataset / "overlays").glob("*.png"))) == 2
    for name in ("per_frame.parquet", "eval_per_sequence.csv", "eval_error_over_time.csv"):
        assert (project / "metrics" / name).stat().st_size > 0
