"""The descriptions MLflow shows (markdown) on the registered model's page and each version's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stdformer.registry.gate import Decision

METRIC_LABELS = {"pa_mpjpe": ("PA-MPJPE", "mm"), "mpjpe": ("MPJPE", "mm"),
                 "mpvpe": ("MPVPE", "mm"), "accel": ("Accel", "mm/frame²")}


def model_description(name: str, model_config: Mapping[str, Any], crop_size: int | None) -> str:
    """What the registered model is and how to use it."""
    crop = f"{crop_size} x {crop_size}" if crop_size else "the training crop size"
    lines = [
        "**STDFormer**: video 3D human mesh recovery (spatial and temporal disentanglement on a "
        "FastMETRO-style transformer), registered by the `register` stage of the project's DVC "
        "pipeline.", "",
        f'* **Load**: `mlflow.pyfunc.load_model("models:/{name}@champion")`',
        f"* **Input**: uint8 `(B, S, H, W, 3)` RGB person crops, square, S = "
        f"{model_config.get('clip_len')} frames; crops of another size than {crop} are resized "
        "to it (with a warning).",
        "* **Output** (float32, metres, camera frame, relative to the pelvis): "
        "`vertices (B,S,V,3)`, `joints_h36m (B,S,17,3)`, `joints14 (B,S,14,3)`, and "
        "`cam (B,S,3)`, the weak-perspective camera.",
        "* **Aliases**: `champion` is served; `challenger` is the latest version that did not "
        "pass the promotion gate.",
        "* **Versions**: tags hold the headline metrics, the model file md5 and the DVC hashes "
        "of the data and training params; each version's run holds every param and metric."]
    # one line a paragraph or bullet: MLflow renders a newline inside one as a line break
    return "\n".join(lines) + "\n"


def version_description(metrics: Mapping[str, float | None], decision: Decision,
                        model_config: Mapping[str, Any], crop_size: int | None, model_md5: str,
                        lineage: Mapping[str, str]) -> str:
    """One version: its metrics, the gate's decision, the model and where it came from."""
    shown = [f"{label} {metrics[m]:.2f} {unit}"      # plain text: version lists show it raw
             for m, (label, unit) in METRIC_LABELS.items() if metrics.get(m) is not None]
    frames = f", {int(metrics['frames'])} frames" if metrics.get("frames") else ""
    model = (f"{model_config.get('backbone')} backbone (width {model_config.get('backbone_width')}"
             f"), SD {'on' if model_config.get('sd') else 'off'}, TD "
             f"{'on' if model_config.get('td') else 'off'}, clip length "
             f"{model_config.get('clip_len')}" + (f", {crop_size} px crops" if crop_size else ""))
    lines = [" · ".join(shown) + f" (`metrics/eval.json`{frames})", "",
             f"**Gate: {decision.alias}**: {decision.reason}", "",
             f"* Model: {model}; model file md5 `{model_md5}`"]
    if lineage:
        lines += [f"* Data: `{lineage.get('dvc.data_path')}` md5 `{lineage.get('dvc.data_md5')}`",
                  f"* Training params md5 `{lineage.get('dvc.params_md5')}` (sections "
                  f"{lineage.get('dvc.params_sections', '').replace(',', ', ')})"]
    else:
        lines += ["* Registered without DVC lineage (`register.require_lineage: false`)"]
    return "\n".join(lines) + "\n"
