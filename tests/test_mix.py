"""Training on a weighted mix of sources (stdformer/train/mix.py): the schedule's shares and
determinism, exact resume, a weight-0 source left unread, per-source validation, one crop
protocol for all sources, and the mix in the resume identity. Two sources made by today's
preprocess (conftest.py's `mix_data`: <tmp>/shards/3dpw and <tmp>/shards/h36m)."""

import json
import shutil

import numpy as np
import pytest
import torch

from stdformer.config import read_params
from stdformer.data.shard_index import index_shards
from stdformer.data.sources import source_dir, source_names
from stdformer.io import DataError
from stdformer.losses import LossConfig
from stdformer.model.assets import load_body_assets
from stdformer.train import Tracking, train
from stdformer.train.config import params_identity
from stdformer.train.data import make_loader
from stdformer.train.loop import shared_crop_protocol
from stdformer.train.mix import MixStream, mix_schedule, mix_weights
from trainkit import REPO, paths_in, tiny_model, tiny_train

# --------------------------------------------------------------------------------------------
# The schedule


@pytest.mark.parametrize("weights", [[0.6, 0.4], [0.7, 0.3], [0.5, 0.3, 0.2], [0.9, 0.1]])
def test_every_1000_batches_hold_each_source_within_2_percent_of_its_weight(weights):
    schedule = mix_schedule(weights, seed=3, steps=5000)
    for start in (0, 1, 437, 2999, 4000):          # any window, not only the first
        window = schedule[start:start + 1000]
        shares = np.bincount(window, minlength=len(weights)) / len(window)
        assert np.abs(shares - weights).max() <= 0.02, (start, shares)


def test_schedule_is_a_pure_function_of_seed_and_step():
    a = mix_schedule([0.5, 0.5], seed=7, steps=300)
    assert np.array_equal(a, mix_schedule([0.5, 0.5], seed=7, steps=300))
    assert np.array_equal(a[:100], mix_schedule([0.5, 0.5], seed=7, steps=100))   # prefix
    # exact ties (equal weights: every other step) go to a seeded order
    firsts = {int(mix_schedule([0.5, 0.5], seed=s, steps=1)[0]) for s in range(8)}
    assert firsts == {0, 1}


def test_weights_are_normalised_and_zero_weights_dropped():
    assert mix_weights({"3dpw": 3.0, "h36m": 1.0, "mpi": 0.0}, []) == {"3dpw": 0.75,
                                                                        "h36m": 0.25}
    assert mix_weights({}, ["3dpw"]) == {"3dpw": 1.0}
    with pytest.raises(DataError, match=r"train.mix: several sources \(3dpw, h36m\)"):
        mix_weights({}, ["3dpw", "h36m"])


# --------------------------------------------------------------------------------------------
# The stream


def _stream(mix_data, **kw):
    body, parent = mix_data
    sources = {n: index_shards(source_dir(parent, n), "train") for n in ("3dpw", "h36m")}
    common = dict(seed=5, batch_size=2, rank=0, world_size=1, shuffle_window=4,
                  augment=tiny_train().augment, perms=load_body_assets(body).perms, end_step=14)
    return MixStream(sources, [0.6, 0.4], **{**common, **kw})


def test_mix_batches_follow_the_schedule_and_resume_exactly(mix_data):
    assert source_names(mix_data[1]) == ["3dpw", "h36m"]
    full = list(_stream(mix_data))
    names = ["3dpw", "h36m"]
    assert [b["source"] for b in full] == [names[i] for i in mix_schedule([0.6, 0.4], 5, 14)]
    for batch in full:          # really read from that source (its clips' own source tag)
        assert {m["source"] for m in batch["meta"]} == {batch["source"]}
    h36m = [b for b in full if b["source"] == "h36m"]
    assert len({b["epoch"] for b in h36m}) == 1 and len({b["epoch"] for b in full}) == 2
    resumed = list(_stream(mix_data, start_step=5))
    assert [b["step"] for b in resumed] == list(range(5, 14))
    for got, expected in zip(resumed, full[5:], strict=True):
        assert (got["source"], got["epoch"], got["batch"]) == \
            (expected["source"], expected["epoch"], expected["batch"])
        assert got["key"] == expected["key"]
        assert torch.equal(got["frames"], expected["frames"])
    # loader workers split the steps; the batches reach the loop in the same order
    loader = iter(make_loader(_stream(mix_data), 2, seed=0))
    for expected in full:
        got = next(loader)
        assert (got["source"], got["key"]) == (expected["source"], expected["key"])
        assert torch.equal(got["frames"], expected["frames"])
    del loader


def test_sources_must_share_one_crop_protocol(mix_data, tmp_path):
    parent = tmp_path / "shards"
    shutil.copytree(mix_data[1], parent)
    assert shared_crop_protocol({n: parent / n for n in ("3dpw", "h36m")})["crop_size"] == 64
    report = parent / "h36m" / "report.json"
    doc = json.loads(report.read_text())
    doc["settings"]["crop_scale"] = 1.5
    report.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"h36m/report.json: settings: cropped otherwise than "
                                        r"source '3dpw'"):
        shared_crop_protocol({n: parent / n for n in ("3dpw", "h36m")})


# --------------------------------------------------------------------------------------------
# Training runs


def test_training_on_the_mix_validates_per_source(mix_data, tmp_path):
    paths = paths_in(tmp_path / "run", mix_data)
    result = train(tiny_train(steps=3, checkpoint_every=3, mix={"3dpw": 0.6, "h36m": 0.4}),
                   tiny_model(), LossConfig(), paths, Tracking(uri=None), progress=False)
    metrics = json.loads(paths.metrics.read_text())
    assert metrics == pytest.approx(result.metrics, nan_ok=True)
    for source in ("3dpw", "h36m"):
        for metric in ("mpjpe", "pa_mpjpe", "mpvpe", "accel", "frames"):
            assert f"val/{source}/{metric}" in metrics
            assert f"baseline_val/{source}/{metric}" in metrics or metric == "frames"
    # the overall keys stay: every validation frame of both sources, each counted once
    assert metrics["val_frames"] == metrics["val/3dpw/frames"] + metrics["val/h36m/frames"]
    low, high = sorted([metrics["val/3dpw/mpjpe"], metrics["val/h36m/mpjpe"]])
    assert low <= metrics["val_mpjpe"] <= high
    header = paths.curve.read_text().splitlines()[0].split(",")
    assert {"val_mpjpe", "val/3dpw/mpjpe", "val/h36m/pa_mpjpe"} <= set(header)


def test_a_source_with_weight_zero_is_not_read(mix_data, tmp_path):
    parent = tmp_path / "shards"
    shutil.copytree(mix_data[1], parent)
    (parent / "h36m" / "manifest.parquet").write_bytes(b"not a manifest")   # unreadable
    paths = paths_in(tmp_path / "run", (mix_data[0], parent))
    train(tiny_train(steps=2, checkpoint_every=2, mix={"3dpw": 1.0, "h36m": 0.0}), tiny_model(),
          LossConfig(), paths, Tracking(uri=None), progress=False)
    metrics = json.loads(paths.metrics.read_text())
    assert "val/3dpw/mpjpe" in metrics and not any("h36m" in k for k in metrics)
    # the same source with a weight is read, and its broken manifest named
    with pytest.raises(DataError, match=r"h36m/manifest.parquet: not a readable parquet"):
        train(tiny_train(steps=2, mix={"3dpw": 1.0, "h36m": 0.5}), tiny_model(), LossConfig(),
              paths_in(tmp_path / "run2", (mix_data[0], parent)), Tracking(uri=None),
              progress=False)


def test_changing_the_mix_changes_the_resume_identity():
    params = read_params(REPO / "params.yaml")
    base = params_identity(params, "stdformer", "params.yaml")
    other = {**params, "train": {**params["train"], "mix": {"3dpw": 0.5, "h36m": 0.5}}}
    assert params_identity(other, "stdformer", "params.yaml") != base
    assert base["train"]["mix"] == params["train"]["mix"]
