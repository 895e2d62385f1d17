"""Training checkpoints: written atomically, loaded with `torch.load(weights_only=True)`.

A checkpoint holds everything an exact resume needs: model, optimizer and scheduler state, the
RNG states of every rank (python, numpy, torch, cuda; stored as tensors and plain types so the
weights-only unpickler accepts them), the data position (epoch, batches consumed in it), the
step, the learning curve so far, the MLflow run id and the config hash that guards resuming.

Every configuration has its own directory, named after its config hash, under the variant's
checkpoint root:

    checkpoints/stdformer/3f2a9c0e5b1d7a44/config.json          # the run identity (readable)
    checkpoints/stdformer/3f2a9c0e5b1d7a44/step-00000050.pt      # the newest `keep` steps

so a run with other params starts fresh in its own directory and never touches another
configuration's steps; changing a param back resumes the old ones. Nothing is deleted but the
older steps of one configuration (`keep`) and what `stdformer checkpoint prune` is told to,
which never removes a configuration the current params.yaml would resume (`current_configs`).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stdformer.io import DataError, cut_for_message, write_bytes_atomic, write_text_atomic
from stdformer.safe_loading import load_torch_file
from stdformer.model.model_file import torch_save_bytes

FORMAT = "stdformer-train-checkpoint/1"
CONFIG_FILE = "config.json"
_NAME = re.compile(r"step-(\d{8})\.pt")
_HASH_CHARS = 16


def config_dir(root: str | Path, config_hash: str) -> Path:
    """The directory of one configuration's checkpoints under a variant's root."""
    return Path(root) / config_hash[:_HASH_CHARS]


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"step-{step:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoint files in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.fullmatch(p.name))]
    return sorted(found)


# --------------------------------------------------------------------------------------------
# RNG states as weights_only-safe values


def capture_rng() -> dict[str, Any]:
    """This process's RNG states: python (tuple of ints), numpy's legacy global generator
    (key as an int64 tensor), torch CPU and every CUDA device (uint8 tensors)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# Save / load


@dataclass
class TrainingCheckpoint:
    step: int
    epoch: int
    batches_in_epoch: int
    config_hash: str
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: list[dict[str, Any]]          # one entry per rank
    curve: list[dict[str, float]]      # learning-curve rows so far
    run_id: str | None = None          # MLflow run to continue
    path: Path | None = None


def save_checkpoint(directory: str | Path, ckpt: TrainingCheckpoint, keep: int,
                    identity: dict[str, Any] | None = None) -> Path:
    """Write atomically (and the run identity as config.json, once), then delete all but the
    newest `keep` checkpoints of this directory."""
    path = checkpoint_path(directory, ckpt.step)
    payload = {
        "format": FORMAT, "step": ckpt.step, "epoch": ckpt.epoch,
        "batches_in_epoch": ckpt.batches_in_epoch, "config_hash": ckpt.config_hash,
        "model": ckpt.model, "optimizer": ckpt.optimizer, "scheduler": ckpt.scheduler,
        "rng": ckpt.rng, "curve": ckpt.curve, "run_id": ckpt.run_id,
    }
    write_bytes_atomic(path, torch_save_bytes(payload))
    if identity is not None and not (Path(directory) / CONFIG_FILE).is_file():
        write_text_atomic(Path(directory) / CONFIG_FILE, json.dumps(
            {"config_hash": ckpt.config_hash, "identity": identity}, indent=2,
            sort_keys=True) + "\n")
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> TrainingCheckpoint:
    path = Path(path)
    payload = load_torch_file(path, "training checkpoint", map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(path, f"not a {FORMAT} file", field="format")
    return TrainingCheckpoint(
        step=payload["step"], epoch=payload["epoch"],
        batches_in_epoch=payload["batches_in_epoch"], config_hash=payload["config_hash"],
        model=payload["model"], optimizer=payload["optimizer"], scheduler=payload["scheduler"],
        rng=payload["rng"], curve=payload["curve"], run_id=payload["run_id"], path=path)


def find_resumable(directory: str | Path, config_hash: str
                   ) -> tuple[TrainingCheckpoint | None, list[str]]:
    """The newest loadable checkpoint with a matching hash, and notes on what was skipped
    (unreadable files, other configurations) for the log."""
    notes = []
    for step, path in reversed(list_checkpoints(directory)):
        try:
            ckpt = load_checkpoint(path)
        except DataError as e:
            notes.append(f"skipping unreadable checkpoint {e}")
            continue
        if ckpt.config_hash != config_hash:
            notes.append(f"{path} was written with another configuration (hash "
                         f"{ckpt.config_hash[:12]} != {config_hash[:12]})")
            continue
        return ckpt, notes
    return None, notes


def clear_checkpoints(directory: str | Path) -> list[Path]:
    """Remove every checkpoint file of one directory (`resume: never` restarts a configuration:
    its old steps must not outlive the new run's and be resumed later)."""
    removed = []
    for _, path in list_checkpoints(directory):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


# --------------------------------------------------------------------------------------------
# Configurations under a root (`stdformer checkpoint list | prune`)


@dataclass
class ConfigCheckpoints:
    """The checkpoints of one configuration directory, or the step files lying directly in a
    variant's root (the flat layout of earlier versions)."""

    directory: Path
    steps: list[int]
    bytes: int
    modified: float                   # newest file's mtime (0 when empty)
    identity: dict[str, Any] | None   # config.json's run identity; None in the flat layout

    @property
    def variant(self) -> Path:
        """The variant's checkpoint root this configuration belongs to."""
        return self.directory if self.identity is None else self.directory.parent


def _describe(directory: Path) -> ConfigCheckpoints:
    found = list_checkpoints(directory)
    stats = [p.stat() for _, p in found]
    identity = None
    if (directory / CONFIG_FILE).is_file():
        try:
            identity = json.loads((directory / CONFIG_FILE).read_text())["identity"]
        except (json.JSONDecodeError, OSError, KeyError, TypeError):
            identity = {}                              # unreadable: still a configuration
    return ConfigCheckpoints(directory, [s for s, _ in found], sum(st.st_size for st in stats),
                             max((st.st_mtime for st in stats), default=0.0), identity)


def list_configs(root: str | Path) -> list[ConfigCheckpoints]:
    """Configurations under `root` (a variant's root, or `checkpoints/` above several), newest
    first."""
    root = Path(root)
    if not root.is_dir():
        return []
    children = sorted(p for p in root.iterdir() if p.is_dir())
    grandchildren = sorted(q for p in children for q in p.iterdir() if q.is_dir())
    configs = [_describe(d) for d in (root, *children, *grandchildren)
               if list_checkpoints(d) or (d / CONFIG_FILE).is_file()]
    return sorted(configs, key=lambda c: (-c.modified, str(c.directory)))


def current_configs(configs: list[ConfigCheckpoints],
                    params_identity_of: Callable[[str], dict[str, Any] | None]) -> set[Path]:
    """Directories of the configurations the current params would resume: those whose recorded
    identity holds, for each key of `params_identity_of(variant name)` (the part params.yaml
    decides: stdformer.train.config.params_identity), the same value. The shards' and body's
    identity is not compared: every data version trained with the current params counts."""
    found = set()
    for c in configs:
        if not c.identity:
            continue
        expected = params_identity_of(c.variant.name)
        if expected and all(c.identity.get(key) == value for key, value in expected.items()):
            found.add(c.directory)
    return found


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _shard_changes(old: Any, new: Any) -> str | None:
    """'3 of 12 shards changed, 1 added' for two `train_data` fingerprints ([name, sha256]
    pairs); None when they are not both such lists."""
    try:
        a, b = dict(old), dict(new)
    except (TypeError, ValueError):
        return None
    changed = sum(1 for name in a.keys() & b.keys() if a[name] != b[name])
    parts = [f"{changed} of {len(b)} shards changed"] if changed else []
    parts += [f"{n} {what}" for n, what in ((len(b.keys() - a.keys()), "added"),
                                             (len(a.keys() - b.keys()), "removed")) if n]
    return ", ".join(parts) or "same shards"


def identity_changes(old: dict[str, Any] | None, new: dict[str, Any] | None,
                     limit: int = 4) -> str:
    """'train.lr 0.001 -> 0.002, train_data 2 of 12 shards changed, ...': what differs from
    `old` to `new` run identity (shard hashes summarised, long values cut)."""
    if not old or not new:
        return "configuration not recorded"
    a, b = _flatten(old), _flatten(new)
    diffs = []
    for k in sorted(a.keys() | b.keys()):
        if a.get(k) == b.get(k):
            continue
        shards = _shard_changes(a.get(k), b.get(k)) if k == "train_data" else None
        diffs.append(f"{k} {shards}" if shards else
                     f"{k} {cut_for_message(json.dumps(a.get(k)), 40)} -> "
                     f"{cut_for_message(json.dumps(b.get(k)), 40)}")
    more = f" (+{len(diffs) - limit} more)" if len(diffs) > limit else ""
    return ", ".join(diffs[:limit]) + more if diffs else "same configuration"


def format_configs(configs: list[ConfigCheckpoints], current: Collection[Path] | None = None
                   ) -> str:
    """One line per configuration, newest first, each compared with the newest of its variant,
    and marked `current` when the current params would resume it (`current_configs`; None:
    not known). What `stdformer checkpoint list` prints."""
    if not configs:
        return "no checkpoints"
    newest: dict[Path, ConfigCheckpoints] = {}
    lines = []
    for c in configs:
        ref = newest.setdefault(c.variant, c)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.modified)) if c.modified \
            else "-"
        steps = (f"steps {c.steps[0]}..{c.steps[-1]}" if len(c.steps) > 1
                 else f"step {c.steps[0]}" if c.steps else "no steps")
        notes = ["current params" if current is not None and c.directory in current else ""]
        notes.append("newest" if ref is c else
                     f"newest differs: {identity_changes(c.identity, ref.identity)}")
        lines.append(f"{c.directory}  {steps}  {c.bytes / 1e6:.1f} MB  {when}  "
                     f"({'; '.join(filter(None, notes))})")
    return "\n".join(lines)


def prune_configs(root: str | Path, keep: int = 1, dry_run: bool = False,
                  current: Collection[Path] = ()) -> list[ConfigCheckpoints]:
    """Remove all but the `keep` most recently written configurations of every variant under
    `root` (a configuration's whole directory; flat-layout step files), never one in `current`
    (`current_configs`: what the current params would resume, however old). Returns what was
    (with dry_run: would be) removed."""
    by_variant: dict[Path, list[ConfigCheckpoints]] = {}
    for c in list_configs(root):                       # newest first
        by_variant.setdefault(c.variant, []).append(c)
    removed = [c for configs in by_variant.values() for c in configs[keep:]
               if c.directory not in current]
    if not dry_run:
        for c in removed:
            if c.identity is None:
                clear_checkpoints(c.directory)
            else:
                shutil.rmtree(c.directory)
    return removed
