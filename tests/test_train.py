"""Training: deterministic resumable data plans, same seed -> same losses, bit-exact resume after
SIGKILL, DDP on CPU (gloo), checkpoints under weights_only. Everything runs on a tiny procedural
body and a tiny synthetic dataset made by the real synthesize + preprocess code (conftest.py's
`train_data`); the stage, model files and MLflow are in test_train_stage.py."""

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch

from stdformer.config import from_dict
from stdformer.io import DataError
from stdformer.losses import LossConfig
from stdformer.model.stdformer import ModelConfig
from stdformer.model.stdformer import model_config_from_section
from stdformer.train import TrainConfig, Tracking, train
from stdformer.train import checkpoint as ckpt_io
from stdformer.model.assets import load_body_assets
from stdformer.data.shard_index import index_shards
from stdformer.train.data import TrainStream, make_loader, train_batches
from trainkit import (CHILD_ENV, PYTHON, TINY_MODEL, only_config_dir, paths_in, tiny_model,
                      tiny_train, weights_of)


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


def test_plans_split_ranks_disjointly_and_resume_skips_exactly(train_data):
    _, shards = train_data
    index = index_shards(shards, "train")
    kw = dict(seed=5, epoch=3, batch_size=2, shuffle_window=4)
    ranks = [train_batches(index, rank=r, world_size=2, **kw) for r in range(2)]
    keys = [[c.key for b in plan for c in b] for plan in ranks]
    assert len(ranks[0]) == len(ranks[1]) > 0
    assert not set(keys[0]) & set(keys[1])
    assert train_batches(index, rank=0, world_size=2, **kw) == ranks[0]   # pure function
    assert train_batches(index, rank=0, world_size=1, **{**kw, "epoch": 4}) != \
        train_batches(index, rank=0, world_size=1, **kw)                   # reshuffled per epoch

    assets = load_body_assets(train_data[0])
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


def test_batches_do_not_depend_on_the_number_of_loader_workers(train_data):
    body, shards = train_data
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


def test_same_seed_gives_the_same_loss_sequence(train_data, tmp_path):
    runs = []
    for name in ("a", "b"):
        paths = paths_in(tmp_path / name, train_data)
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


def test_resume_is_keyed_on_shard_content_not_names_or_sizes(train_data, tmp_path, capsys):
    """Issue 10 item 1: shards rewritten with the same names and sizes (preprocess rerun with
    min_keypoints 6 -> 12) make training start fresh instead of resuming the old model."""
    body, old = train_data
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


def test_joint_warmup_trains_the_joint_tokens_alone_then_the_full_loss(train_data, tmp_path):
    paths = paths_in(tmp_path, train_data)
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
    from stdformer.model.stdformer import model_config_from_section
    from stdformer.train import TrainConfig, TrainPaths, Tracking, train
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
    from stdformer.train import mix as _mix
    _iter = _mix.MixStream.__iter__
    def _recording(self):
        for batch in _iter(self):
            SEEN.update(batch["key"])
            yield batch
    _mix.MixStream.__iter__ = _recording
""")


def _spec(directory: Path, train_data, **train_overrides) -> dict:
    paths = paths_in(directory, train_data)
    base = dict(steps=6, batch_size=2, warmup_steps=1, checkpoint_every=2, val_every=3,
                log_every=1, num_workers=0, shuffle_buffer=4)
    return {"train": {**base, **train_overrides}, "model": TINY_MODEL,
            "paths": {k: str(v) for k, v in dataclasses.asdict(paths).items()}}


def _run_worker(tmp_path: Path, spec: dict, prefix: str = "") -> subprocess.CompletedProcess:
    script = tmp_path / "worker.py"
    script.write_text(prefix + WORKER)
    return subprocess.run([PYTHON, str(script), json.dumps(spec)], env=CHILD_ENV,
                          capture_output=True, text=True, timeout=600)


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


@pytest.mark.slow  # trains, is killed and resumes in subprocesses (~40 s)
def test_sigkilled_run_resumes_to_bit_identical_weights(train_data, tmp_path):
    reference = _spec(tmp_path / "reference", train_data)
    done = _run_worker(tmp_path, reference)
    assert done.returncode == 0, done.stderr

    interrupted = _spec(tmp_path / "interrupted", train_data, num_workers=1)
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
    checkpoints = only_config_dir(Path(interrupted["paths"]["checkpoints"]))
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


@pytest.mark.slow  # two torchrun ranks and a single-process run (~30 s)
def test_ddp_two_cpu_ranks_agree_on_weights_and_split_the_clips(train_data, tmp_path):
    spec = _spec(tmp_path / "ddp", train_data, steps=3, val_every=0)
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
    ckpt = torch.load(ckpt_io.checkpoint_path(only_config_dir(Path(spec["paths"]["checkpoints"])),
                                              3), weights_only=True)
    assert len(ckpt["rng"]) == 2
    assert json.loads(Path(spec["paths"]["metrics"]).read_text())["steps"] == 3


