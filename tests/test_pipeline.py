"""The DVC pipeline as users run it: `dvc repro` end to end, cached reruns, targeted reruns."""

import json

import pytest
import webdataset as wds
import yaml

from conftest import dvc

pytestmark = pytest.mark.slow

PREPROCESS = ("preprocess@3dpw", "preprocess@h36m")


@pytest.fixture(scope="module")
def reproduced(tiny_project_factory):
    project = tiny_project_factory()
    dvc(project, "repro", *PREPROCESS)
    return project


@pytest.mark.parametrize("source", ["3dpw", "h36m"])
def test_repro_writes_shards_that_plain_webdataset_reads(reproduced, source):
    report = json.loads((reproduced / f"data/shards/{source}/report.json").read_text())
    assert report["totals"]["clips"] > 0
    shards = sorted((reproduced / f"data/shards/{source}/train").glob("shard-*.tar"))
    sample = next(iter(wds.WebDataset([str(s) for s in shards], shardshuffle=False)))
    assert {"json", "f00.jpg", "f07.jpg", "targets.npz"} <= set(sample)
    meta = json.loads(sample["json"])
    assert meta["split"] == "train" and meta["body_model_id"] and meta["source"] == source


def test_second_repro_is_a_no_op_and_a_param_reruns_only_its_stage(reproduced):
    lock = (reproduced / "dvc.lock").read_text()
    out = dvc(reproduced, "repro", *PREPROCESS)
    assert "didn't change, skipping" in out and "Running stage" not in out
    assert (reproduced / "dvc.lock").read_text() == lock

    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    params["preprocess"]["jpeg_quality"] = 80
    (reproduced / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(reproduced, "repro", *PREPROCESS)
    assert "Running stage 'preprocess@3dpw'" in out and "Running stage 'preprocess@h36m'" in out
    assert "Running stage 'body'" not in out and "Running stage 'synthesize" not in out

    params["datasets"]["h36m"]["stride"] = {"train": 4}   # one source's entry: only its stage
    (reproduced / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(reproduced, "repro", *PREPROCESS)
    assert "Running stage 'preprocess@h36m'" in out
    assert "Running stage 'preprocess@3dpw'" not in out


def test_forced_rerun_gives_identical_output_hashes(reproduced):
    before = yaml.safe_load((reproduced / "dvc.lock").read_text())["stages"]
    dvc(reproduced, "repro", "-f", *PREPROCESS)
    after = yaml.safe_load((reproduced / "dvc.lock").read_text())["stages"]
    for stage in ("body", "synthesize", "synthesize_h36m", *PREPROCESS):
        assert before[stage]["outs"] == after[stage]["outs"], stage
