"""Training checkpoints: weights_only files, resuming only the matching configuration, one
directory per configuration (a changed param never deletes another's steps), and the
`stdformer checkpoint list | prune` commands."""

import dataclasses
import os
from pathlib import Path

import torch

from stdformer.train import TrainConfig
from stdformer.train import checkpoint as ckpt_io


def test_checkpoints_resume_only_with_a_matching_hash(tmp_path):
    state = ckpt_io.TrainingCheckpoint(step=4, epoch=1, batches_in_epoch=2, config_hash="a" * 64,
                               model={"w": torch.ones(2)}, optimizer={}, scheduler={},
                               rng=[ckpt_io.capture_rng()], curve=[{"step": 4, "loss": 1.0}])
    ckpt_io.save_checkpoint(tmp_path, state, keep=2)
    raw = torch.load(ckpt_io.checkpoint_path(tmp_path, 4), weights_only=True)
    assert raw["step"] == 4 and torch.equal(raw["model"]["w"], torch.ones(2))
    found, notes = ckpt_io.find_resumable(tmp_path, "a" * 64)
    assert found is not None and found.batches_in_epoch == 2
    found, notes = ckpt_io.find_resumable(tmp_path, "b" * 64)
    assert found is None and "another configuration" in notes[0]
    # restoring RNG states replays the same random numbers
    ckpt_io.restore_rng(raw["rng"][0])
    first = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    ckpt_io.restore_rng(raw["rng"][0])
    assert torch.equal(torch.rand(3), first[0])
    assert __import__("numpy").random.rand() == first[1]
    assert __import__("random").random() == first[2]
    for step in (6, 8):
        ckpt_io.save_checkpoint(tmp_path, dataclasses.replace(state, step=step), keep=2)
    assert [s for s, _ in ckpt_io.list_checkpoints(tmp_path)] == [6, 8]


def _fake_checkpoint(root: Path, config_hash: str, step: int, lr: float) -> Path:
    state = ckpt_io.TrainingCheckpoint(step=step, epoch=0, batches_in_epoch=step,
                               config_hash=config_hash, model={}, optimizer={}, scheduler={},
                               rng=[], curve=[])
    directory = ckpt_io.config_dir(root, config_hash)
    ckpt_io.save_checkpoint(directory, state, keep=2, identity={"train": {"lr": lr}})
    return directory


def test_another_configuration_keeps_old_checkpoints_and_changing_back_resumes(tmp_path,
                                                                               capsys):
    from stdformer.cli import main as cli
    from stdformer.train.distributed import Dist
    from stdformer.train.loop import _resume_or_start

    root = tmp_path / "checkpoints" / "stdformer"
    old = _fake_checkpoint(root, "a" * 64, step=2, lr=0.001)
    solo = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert _resume_or_start(TrainConfig(), root, "a" * 64, solo).step == 2
    assert _resume_or_start(TrainConfig(), root, "b" * 64, solo) is None      # a param changed
    err = capsys.readouterr().err
    assert f"starting fresh in {root / ('b' * 16)}" in err
    assert "kept 1 other configuration(s)" in err and "stdformer checkpoint prune" in err
    new = _fake_checkpoint(root, "b" * 64, step=4, lr=0.002)
    assert [s for s, _ in ckpt_io.list_checkpoints(old)] == [2]               # nothing deleted
    assert _resume_or_start(TrainConfig(), root, "a" * 64, solo).step == 2     # changed back

    os.utime(ckpt_io.checkpoint_path(old, 2), (1e9, 1e9))                    # `old` is older
    assert cli(["checkpoint", "list", str(tmp_path / "checkpoints")]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listing] == [str(new), str(old)]
    assert "(newest)" in listing[0] and "train.lr 0.001 -> 0.002" in listing[1]
    assert cli(["checkpoint", "prune", str(tmp_path / "checkpoints"), "--dry-run"]) == 0
    assert f"would remove {old}" in capsys.readouterr().out and old.is_dir()
    assert cli(["checkpoint", "prune", str(tmp_path / "checkpoints")]) == 0
    assert not old.exists() and [s for s, _ in ckpt_io.list_checkpoints(new)] == [4]

    # resume: never restarts this configuration only
    _fake_checkpoint(root, "a" * 64, step=2, lr=0.001)
    assert _resume_or_start(TrainConfig(resume="never"), root, "a" * 64, solo) is None
    assert ckpt_io.list_checkpoints(ckpt_io.config_dir(root, "a" * 64)) == []
    assert [s for s, _ in ckpt_io.list_checkpoints(new)] == [4]


def test_prune_keeps_the_configuration_the_current_params_resume(tmp_path, capsys):
    """Switching a param back: the configuration of the current params.yaml is older than the
    abandoned one, and prune keeps it; list marks it and summarises shard hashes."""
    import shutil

    from stdformer.cli import main as cli
    from stdformer.config import read_params
    from stdformer.train.config import params_identity

    repo = Path(__file__).resolve().parents[1]
    params_path = tmp_path / "params.yaml"
    shutil.copy(repo / "params.yaml", params_path)
    params = read_params(params_path)
    shards = [[f"shard-{i:06d}.tar", f"{i:064x}"] for i in range(12)]
    current = {**params_identity(params, "stdformer", str(params_path)), "train_data": shards}
    abandoned = {**current, "train": {**current["train"], "lr": 0.002},
                 "train_data": [[n, "f" * 64 if i < 2 else h] for i, (n, h) in enumerate(shards)]}
    root = tmp_path / "checkpoints" / "stdformer"
    dirs = {}
    for age, (name, identity) in enumerate((("current", current), ("abandoned", abandoned))):
        digest = name[0] * 64
        state = ckpt_io.TrainingCheckpoint(step=2, epoch=0, batches_in_epoch=2, config_hash=digest,
                                   model={}, optimizer={}, scheduler={}, rng=[], curve=[])
        dirs[name] = ckpt_io.config_dir(root, digest)
        ckpt_io.save_checkpoint(dirs[name], state, keep=2, identity=identity)
        os.utime(ckpt_io.checkpoint_path(dirs[name], 2), (1e9 + age, 1e9 + age))

    assert cli(["checkpoint", "list", str(tmp_path / "checkpoints"),
                "--params", str(params_path)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listing] == [str(dirs["abandoned"]), str(dirs["current"])]
    assert "current params" not in listing[0] and "(current params; newest differs: " in listing[1]
    assert "train.lr 0.001 -> 0.002" in listing[1]
    assert "train_data 2 of 12 shards changed" in listing[1] and "f" * 64 not in listing[1]

    assert cli(["checkpoint", "prune", str(tmp_path / "checkpoints"),
                "--params", str(params_path)]) == 0
    assert "nothing to remove" in capsys.readouterr().out
    assert dirs["current"].is_dir() and dirs["abandoned"].is_dir()
    assert cli(["checkpoint", "prune", str(tmp_path / "checkpoints"), "--keep", "0",
                "--params", str(params_path)]) == 0
    assert f"removed {dirs['abandoned']}" in capsys.readouterr().out
    assert dirs["current"].is_dir() and not dirs["abandoned"].exists()
