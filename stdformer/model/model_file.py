"""The released model file (`models/stdformer.pt`): writing it, reading it, rebuilding the model.

The file is a plain dict that `torch.load(weights_only=True)` reads: format, weights
(state_dict), model_config (dict), body_model_id, train_config, loss_config, metrics, inputs
(`stdformer.model.inputs.InputProtocol` as a dict), numerics.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stdformer.config import from_dict
from stdformer.io import DataError, write_bytes_atomic
from stdformer.safe_loading import load_torch_file
from stdformer.model.assets import load_body_assets
from stdformer.model.inputs import InputProtocol
from stdformer.model.stdformer import ModelConfig, STDFormer

MODEL_FORMAT = "stdformer-model/1"


def torch_save_bytes(obj: Any) -> bytes:
    """torch.save into memory: the bytes do not depend on the destination file name (torch
    names the archive after the file), so equal objects give equal files."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def write_model_file(path: str | Path, raw_model: nn.Module, model_cfg: ModelConfig,
                     body_model_id: str, train_config: Mapping[str, Any],
                     loss_config: Mapping[str, Any], metrics: Mapping[str, Any],
                     inputs: InputProtocol, numeric_env: Mapping[str, Any] | None = None
                     ) -> None:
    """The released model: weights + everything `load_model` needs, weights_only-loadable;
    `inputs`: how its input clips are cropped and normalised (predict and serving read it);
    `numeric_env`: the numeric environment it was trained in (stdformer/numerics.py)."""
    payload = {
        "format": MODEL_FORMAT,
        "weights": {k: v.detach().cpu().contiguous() for k, v in raw_model.state_dict().items()},
        "model_config": dataclasses.asdict(model_cfg),
        "body_model_id": body_model_id,
        "train_config": dict(train_config),
        "loss_config": dict(loss_config),
        "metrics": dict(metrics),
        "inputs": inputs.as_dict(),
        "numerics": dict(numeric_env or {}),
    }
    write_bytes_atomic(path, torch_save_bytes(payload))


def read_model_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    payload = load_torch_file(path, "model file", map_location)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise DataError(path, f"not a {MODEL_FORMAT} file", field="format")
    return payload


def input_protocol(payload: Mapping[str, Any], path: str | Path) -> InputProtocol | None:
    """The model file's input protocol; None for files written before it was recorded."""
    if "inputs" not in payload:
        return None
    return InputProtocol.from_dict(payload["inputs"], source=str(path))


def load_model(path: str | Path, body_dir: str | Path,
               map_location: str | torch.device = "cpu",
               payload: Mapping[str, Any] | None = None) -> STDFormer:
    """Rebuild the trained STDFormer (eval mode) from the model file and the body directory
    it was trained with (the mesh hierarchy is not stored in the file). `payload`: the file
    as `read_model_file` returned it, when the caller has read it already."""
    payload = payload if payload is not None else read_model_file(path, map_location)
    assets = load_body_assets(body_dir)
    if assets.body_model_id != payload["body_model_id"]:
        raise DataError(body_dir, f"body model {assets.body_model_id!r} differs from the one the "
                        f"model was trained with ({payload['body_model_id']!r})",
                        field="body_model_id")
    cfg = from_dict(ModelConfig, dict(payload["model_config"], backbone_weights=None,
                                      init_checkpoint=None),
                    source=str(path), prefix="model_config")
    model = STDFormer.from_hierarchy(cfg, assets.hierarchy)
    model.load_state_dict(payload["weights"])
    return model.to(map_location).eval()
