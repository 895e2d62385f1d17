"""Training checkpoints: written atomically, loaded with `torch.load(weights_only=True)`.

A checkpoint holds everything an exact resume needs: model, optimizer and scheduler state, the
RNG states of every rank (python, numpy, torch, cuda; stored as tensors and plain types so the
weights-only unpickler accepts them), the data position (epoch, batches consumed in it), the
step, the learning curve so far, the MLflow run id and the config hash that guards resuming.

Files are `checkpoints/step-00000050.pt`; the newest `keep` are kept.
"""

from __future__ import annotations

import io
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stdformer.io import DataError, write_bytes_atomic

FORMAT = "stdformer-train-checkpoint/1"
_NAME = re.compile(r"step-(\d{8})\.pt")


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"step-{step:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoint files in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.fullmatch(p.name))]
    return sorted(found)


def torch_save_bytes(obj: Any) -> bytes:
    """torch.save into memory: the bytes do not depend on the destination file name (torch
    names the archive after the file), so equal objects give equal files."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


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
class Checkpoint:
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


def save_checkpoint(directory: str | Path, ckpt: Checkpoint, keep: int) -> Path:
    """Write atomically, then delete all but the newest `keep` checkpoints."""
    path = checkpoint_path(directory, ckpt.step)
    payload = {
        "format": FORMAT, "step": ckpt.step, "epoch": ckpt.epoch,
        "batches_in_epoch": ckpt.batches_in_epoch, "config_hash": ckpt.config_hash,
        "model": ckpt.model, "optimizer": ckpt.optimizer, "scheduler": ckpt.scheduler,
        "rng": ckpt.rng, "curve": ckpt.curve, "run_id": ckpt.run_id,
    }
    write_bytes_atomic(path, torch_save_bytes(payload))
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated or foreign file: name it, do not show a traceback
        raise DataError(path, f"not a loadable checkpoint: {e}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(path, f"not a {FORMAT} file", field="format")
    return Checkpoint(
        step=payload["step"], epoch=payload["epoch"],
        batches_in_epoch=payload["batches_in_epoch"], config_hash=payload["config_hash"],
        model=payload["model"], optimizer=payload["optimizer"], scheduler=payload["scheduler"],
        rng=payload["rng"], curve=payload["curve"], run_id=payload["run_id"], path=path)


def find_resumable(directory: str | Path, config_hash: str
                   ) -> tuple[Checkpoint | None, list[str]]:
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
    """Remove every checkpoint file (a fresh run must not leave stale steps behind that a later
    resume could pick)."""
    removed = []
    for _, path in list_checkpoints(directory):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
