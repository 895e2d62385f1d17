"""The released model file (`models/stdformer.pt`) and rebuilding a model from it.

The file is a plain dict that `torch.load(weights_only=True)` reads: weights (state_dict),
model_config (dict), body_model_id, train_config, loss_config, metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from stdformer.config import from_dict
from stdformer.io import DataError, load_torch_file

MODEL_FORMAT = "stdformer-model/1"


def read_model_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    payload = load_torch_file(path, "model file", map_location)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise DataError(path, f"not a {MODEL_FORMAT} file", field="format")
    return payload


def load_model(path: str | Path, body_dir: str | Path,
               map_location: str | torch.device = "cpu"):
    """Rebuild the trained STDFormer (eval mode) from the model file and the body directory
    it was trained with (the mesh hierarchy is not stored in the file)."""
    from stdformer.model.stdformer import ModelConfig, STDFormer
    from stdformer.train.assets import load_body_assets

    payload = read_model_file(path, map_location)
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
