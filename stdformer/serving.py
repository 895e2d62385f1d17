"""STDFormer as an MLflow pyfunc model: uint8 RGB crops in, metric meshes and joints out.

    model = mlflow.pyfunc.load_model("models:/stdformer@champion")
    out = model.predict(frames)     # frames: uint8 (B, S, H, W, 3) RGB person crops

Input: uint8 (B, S, H, W, 3), RGB, values 0..255, one tracked person per clip, cropped as the
preprocess stage crops (square, person-centred). S is the model's clip length (fixed when the
model has its temporal branch); a single clip (S, H, W, 3) is taken as B = 1. Crops of another
size than the training crop size are resized to it with a warning (the camera output is in
normalised crop coordinates, so nothing else changes); non-square crops are refused. The
signature declares the outputs only: `check_frames` validates the input and its errors name
the shape and dtype, where MLflow's schema enforcement would print the whole array.

Output: a dict of float32 arrays, camera frame, metres, relative to the SMPL pelvis:
    vertices     (B, S, V, 3)   the fine mesh
    joints_h36m  (B, S, 17, 3)  H36M-17 joints regressed from `vertices`
    joints14     (B, S, 14, 3)  the J14 subset of joints_h36m (the evaluation protocol's joints)
    cam          (B, S, 3)      weak-perspective camera (s, tx, ty): s * (X_xy + (tx, ty)) of
                                points centred on the J14 mid-hip gives crop coordinates in [-1, 1]

The model's artifacts are the released model file (`models/stdformer.pt`, weights_only
loadable) and the four small files of the body directory it needs (model.npz, hierarchy.npz,
regressors.npz, meta.json; never the SMPL pickle). The model is logged as "models from code"
(a small script, not a cloudpickle), with the stdformer package as code_paths, so loading it
unpickles nothing and works in a fresh process that has the pinned requirements.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow.pyfunc  # noqa: E402

from stdformer.devices import resolve_device
from stdformer.io import DataError, load_npz
from stdformer.metrics import j14_from_h36m
from stdformer.model.inputs import IMAGENET_MEAN, IMAGENET_STD, normalize_frames
from stdformer.model.model_file import input_protocol, load_model, read_model_file

BODY_FILES = ("model.npz", "hierarchy.npz", "regressors.npz", "meta.json")
OUTPUT_NAMES = ("vertices", "joints_h36m", "joints14", "cam")
# Distributions the stdformer modules import at load time (pinned to the installed versions).
REQUIREMENTS = ("mlflow", "torch", "numpy", "scipy", "smplx", "PyYAML", "opencv-python-headless",
                "pyarrow", "tqdm", "webdataset")

# The script MLflow stores and runs to build the model ("models from code").
MODEL_CODE = '''"""STDFormer pyfunc entry point (see stdformer.serving)."""
import mlflow.models

from stdformer.serving import STDFormerPyfunc

mlflow.models.set_model(STDFormerPyfunc())
'''


class STDFormerPyfunc(mlflow.pyfunc.PythonModel):
    """context.artifacts: "model" (the model file), "body" (body directory with BODY_FILES).
    context.model_config: "batch_size" (clips per forward, default 4), "device" ("auto"),
    "crop_size" (only for model files that do not record their input protocol; the model
    file's crop size and normalisation are used otherwise). Crops of another size are resized
    to the model's."""

    def load_context(self, context) -> None:
        config = dict(context.model_config or {})
        self.device = resolve_device(str(config.get("device", "auto")))
        self.batch_size = int(config.get("batch_size", 4))
        model_file = context.artifacts["model"]
        self.inputs = input_protocol(read_model_file(model_file), model_file)
        self.crop_size = self.inputs.crop_size if self.inputs else config.get("crop_size")
        body_dir = Path(context.artifacts["body"])
        self.model = load_model(model_file, body_dir, map_location=self.device)
        regressor = load_npz(body_dir / "regressors.npz", required=("J_regressor_h36m",))
        self.regressor = torch.as_tensor(regressor["J_regressor_h36m"], dtype=torch.float32,
                                         device=self.device)                    # (17, V)

    def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None
                ) -> dict[str, np.ndarray]:
        frames = check_frames(model_input, self.model.cfg.clip_len if self.model.cfg.td else None)
        frames = fit_crop_size(frames, self.crop_size)
        chunks = [self._forward(frames[i:i + self.batch_size])
                  for i in range(0, len(frames), self.batch_size)]
        return {name: np.concatenate([c[name] for c in chunks]) for name in OUTPUT_NAMES}

    def _forward(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """frames uint8 (b, S, H, W, 3) -> outputs for b clips."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = x.permute(0, 1, 4, 2, 3)                                   # (b, S, 3, H, W) uint8
        with torch.no_grad():
            mean, std = ((self.inputs.mean, self.inputs.std) if self.inputs
                         else (IMAGENET_MEAN, IMAGENET_STD))
            out = self.model(normalize_frames(x, mean, std))          # same input as training
            vertices = out["vertices"].float()                         # (b, S, V, 3)
            joints_h36m = torch.einsum("jv,bsvc->bsjc", self.regressor, vertices)
            result = {"vertices": vertices, "joints_h36m": joints_h36m,
                      "joints14": j14_from_h36m(joints_h36m), "cam": out["cam"].float()}
        return {k: v.cpu().numpy().astype(np.float32) for k, v in result.items()}


def check_frames(frames: Any, clip_len: int | None) -> np.ndarray:
    """uint8 (S, H, W, 3) or (B, S, H, W, 3) -> (B, S, H, W, 3); ValueError saying what is
    wrong otherwise, naming the shape and dtype only (never the data: inputs are megabytes).
    Integer arrays within 0..255 (a JSON request's numbers) are taken as uint8."""
    frames = np.asarray(frames)
    got = f"got {frames.dtype} {frames.shape}"
    if frames.dtype != np.uint8:
        if frames.dtype.kind not in "iu" or (frames.size and (frames.min() < 0 or
                                                              frames.max() > 255)):
            raise ValueError("frames must be uint8 RGB values 0..255 (float frames in 0..1: "
                             f"multiply by 255 and convert to uint8), {got}")
        frames = frames.astype(np.uint8)
    if frames.ndim == 4:
        frames = frames[None]
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (S, H, W, 3) or (B, S, H, W, 3) RGB, {got}")
    b, s, h, w, _ = frames.shape
    if b == 0:
        raise ValueError(f"frames hold no clip (B = 0), {got}")
    if clip_len is not None and s != clip_len:
        raise ValueError(f"the model takes clips of {clip_len} frames (S), {got}")
    if h != w or h == 0:
        raise ValueError(f"crops must be square and non-empty (person-centred, as the "
                         f"preprocess stage cuts them), {got}")
    return frames


def fit_crop_size(frames: np.ndarray, crop_size: int | None) -> np.ndarray:
    """Square crops (B, S, H, H, 3) of another size than the training crop size are resized to
    it, with a warning: the model was trained on one size, and its camera output is in
    normalised crop coordinates, so resizing changes nothing else. crop_size None (a model
    logged without it): sizes must be multiples of 32, used as they are."""
    import cv2

    size = frames.shape[2]
    if crop_size is None:
        if size % 32:
            raise ValueError(f"crop size must be a multiple of 32, got {size}x{size}")
        return frames
    if size == crop_size:
        return frames
    warnings.warn(f"STDFormer: resizing {size}x{size} crops to the training crop size "
                  f"{crop_size}x{crop_size}", stacklevel=3)
    interpolation = cv2.INTER_AREA if size > crop_size else cv2.INTER_LINEAR
    flat = frames.reshape(-1, size, size, 3)
    resized = np.stack([cv2.resize(f, (crop_size, crop_size), interpolation=interpolation)
                        for f in flat])
    return resized.reshape(*frames.shape[:2], crop_size, crop_size, 3)


def signature(clip_len: int | None, num_vertices: int):
    """The pyfunc signature: float32 named tensors out. No input schema: MLflow's schema
    enforcement would answer a wrong input with an error that begins with the whole array
    printed; `check_frames` says what is wrong in one line (the input is documented in the
    module docstring and the registered model's description)."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    s = clip_len if clip_len is not None else -1
    f32 = np.dtype(np.float32)
    return ModelSignature(
        inputs=None,
        outputs=Schema([
            TensorSpec(f32, (-1, s, num_vertices, 3), name="vertices"),
            TensorSpec(f32, (-1, s, 17, 3), name="joints_h36m"),
            TensorSpec(f32, (-1, s, 14, 3), name="joints14"),
            TensorSpec(f32, (-1, s, 3), name="cam"),
        ]))


def pip_requirements() -> list[str]:
    """Exact pins of the installed versions (given explicitly: MLflow's inference is slow)."""
    pins = []
    for name in REQUIREMENTS:
        version = importlib.metadata.version(name).split("+", 1)[0]   # 2.13.0+cpu -> 2.13.0
        pins.append(f"{name}=={version}")
    return pins


def check_servable(model_file: str | Path, body_dir: str | Path) -> tuple[dict, int]:
    """Fail now, with a DataError naming the file, if the model cannot be logged and served:
    returns (model file payload, full-mesh vertex count)."""

    payload = read_model_file(model_file)
    for f in BODY_FILES:
        if not (Path(body_dir) / f).is_file():
            raise DataError(Path(body_dir) / f, "file not found (the body directory the model "
                            "was trained with)")
    return payload, _check_body(Path(body_dir) / "meta.json", payload["body_model_id"])


def log_pyfunc_model(model_file: str | Path, body_dir: str | Path, *, name: str = "model",
                     model_config: Mapping[str, Any] | None = None):
    """Log the pyfunc model into the active MLflow run (the caller sets the tracking URI and
    starts the run). Returns MLflow's ModelInfo (model_uri, model_id, ...).

    model_config: defaults for load time ({"batch_size": 4, "device": "auto", "crop_size":
    None}); a user can override them with mlflow.pyfunc.load_model(uri, model_config={...})."""
    payload, num_vertices = check_servable(model_file, body_dir)
    cfg = payload["model_config"]
    with tempfile.TemporaryDirectory(prefix="stdformer-pyfunc-") as tmp:
        tmp = Path(tmp)
        body = tmp / "body"
        body.mkdir()
        for f in BODY_FILES:
            shutil.copy2(Path(body_dir) / f, body / f)
        code = tmp / "stdformer_pyfunc.py"
        code.write_text(MODEL_CODE)
        package = Path(__file__).resolve().parent
        shutil.copytree(package, tmp / "code" / package.name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        with warnings.catch_warnings():   # the signature documents the input; no example needed
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            return mlflow.pyfunc.log_model(
                name=name, python_model=str(code),
                artifacts={"model": str(Path(model_file).resolve()), "body": str(body)},
                code_paths=[str(tmp / "code" / package.name)],
                signature=signature(cfg["clip_len"] if cfg.get("td", True) else None,
                                    num_vertices),
                pip_requirements=pip_requirements(),
                model_config={"batch_size": 4, "device": "auto", "crop_size": None,
                              **(model_config or {})})


def _check_body(meta_path: Path, body_model_id: str) -> int:
    """The body directory must be the model's (checked now, not when someone loads the model);
    returns its full-mesh vertex count."""
    meta = json.loads(meta_path.read_text())
    if meta.get("body_model_id") != body_model_id:
        raise DataError(meta_path, f"body model {meta.get('body_model_id')!r} differs from the "
                        f"one the model was trained with ({body_model_id!r})",
                        field="body_model_id")
    levels = meta.get("levels")
    if not levels:
        raise DataError(meta_path, "missing the mesh level sizes", field="levels")
    return int(levels[0])
