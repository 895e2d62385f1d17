"""The model `predict` runs: a model file (`models/<variant>.pt` + the body directory it was trained
with) or a registered MLflow model (`models:/stdformer@champion`, `models:/stdformer/3`,
`runs:/<id>/model`), whose pyfunc artifacts carry the model file and the body files
(`stdformer.serving`). Either way the model is rebuilt by `stdformer.model.model_file.load_model`,
which refuses a body directory whose body model differs from the model's.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stdformer.io import DataError
from stdformer.model.assets import load_body_assets
from stdformer.model.inputs import InputProtocol
from stdformer.model.pretrained import load_model_or_checkpoint
from stdformer.progress import mlflow_bars_on_terminal_only
from stdformer.registry.store import fluent_tracking_uri
from stdformer.tracking import check_tracking, default_tracking_uri, local_path

URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


@dataclass
class InferenceModel:
    model: torch.nn.Module              # STDFormer, eval mode
    spec: str                           # what the user named
    body_model_id: str
    clip_len: int
    faces: np.ndarray                   # (F, 3) int64 faces of the full mesh
    regressor: torch.Tensor             # (17, V) H36M regressor
    inputs: InputProtocol | None        # how its clips are cropped (None: an older model file)


def is_mlflow_uri(spec: str) -> bool:
    return str(spec).startswith(URI_SCHEMES)


def _check_registered_location(uri: str) -> None:
    """A `models:/` URI whose files a local store places in a directory that is gone (the project
    or its mlartifacts/ moved: local stores record absolute paths) is refused naming that
    directory; MLflow would download nothing and the model would look like no pyfunc model.
    Call with MLflow pointed at the store."""
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    if not ModelsArtifactRepository.is_models_uri(uri):
        return
    path = local_path(ModelsArtifactRepository.get_underlying_uri(uri))
    if path is not None and not path.is_dir():
        raise DataError(uri, f"the model's files should be in {path}, which does not exist "
                        "(local tracking stores record absolute paths: was the project or its "
                        "mlartifacts/ moved or removed?)")


@contextlib.contextmanager
def _registered_files(uri: str, tracking_uri: str) -> Iterator[tuple[Path, Path]]:
    """Download a logged STDFormer pyfunc model; yield (model file, body directory). The store
    is checked first as train and register check it (an unreachable server: one line in
    seconds, not MLflow's minutes of retries)."""
    import mlflow.artifacts
    import yaml
    from mlflow.exceptions import MlflowException

    check_tracking(tracking_uri)
    mlflow_bars_on_terminal_only()
    with tempfile.TemporaryDirectory(prefix="stdformer-model-") as tmp:
        try:
            with fluent_tracking_uri(tracking_uri):
                _check_registered_location(uri)
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except MlflowException as e:
            raise DataError(uri, f"cannot fetch the model from the MLflow store {tracking_uri} "
                            f"({e.message.splitlines()[0][:200]})") from e
        try:
            flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
            artifacts = flavor["artifacts"]
            model_file = local / artifacts["model"]["path"]
            body_dir = local / artifacts["body"]["path"]
        except (OSError, KeyError, TypeError, yaml.YAMLError) as e:
            raise DataError(uri, "not an STDFormer pyfunc model (no 'model' and 'body' "
                            "artifacts in its MLmodel)") from e
        yield model_file, body_dir


def load_inference_model(spec: str | Path, body_dir: str | Path | None = None,
                         tracking_uri: str | None = None, device: str | torch.device = "cpu"
                         ) -> InferenceModel:
    """The model named by `spec` (file or MLflow URI) on `device`. A model file needs the body
    directory it was trained with (`body_dir`); a registered model brings its own."""

    spec = str(spec)
    if is_mlflow_uri(spec):
        if tracking_uri is None:
            tracking_uri = default_tracking_uri(Path.cwd())
        files = _registered_files(spec, tracking_uri)
    else:
        if body_dir is None:
            raise DataError(spec, "a model file needs the body directory it was trained with "
                            "(--body)")
        files = contextlib.nullcontext((Path(spec), Path(body_dir)))
    with files as (model_file, body):
        model, inputs = load_model_or_checkpoint(model_file, body, map_location=device)
        assets = load_body_assets(body)
    return InferenceModel(model=model, spec=spec, body_model_id=assets.body_model_id,
                          clip_len=int(model.cfg.clip_len),
                          faces=np.asarray(assets.hierarchy.faces[0], np.int64),
                          regressor=assets.regressor_h36m, inputs=inputs)
