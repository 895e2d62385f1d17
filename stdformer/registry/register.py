"""Register an evaluated model: one MLflow run (every param, every metric, lineage tags, the
pyfunc model), a new version of the registered model with a short record as tags (headline
metrics, model file md5, DVC lineage) and a description, then the gate.

Order matters for users: the tracking store is checked and every input read and validated
before anything is written to MLflow, so a bad input leaves no half-registered version. A
registration killed half-way leaves its run RUNNING: the next one marks it FAILED.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from stdformer.io import DataError, file_digest, write_text_atomic
from stdformer.registry.config import GATE_METRICS, RegisterConfig
from stdformer.registry.describe import model_description, version_description
from stdformer.registry.gate import decide
from stdformer.registry.lineage import EVAL_ROW, dvc_lineage, finite, read_eval_metrics
from stdformer.registry.store import (
    CHALLENGER,
    CHAMPION,
    METRIC_PREFIX,
    NONE,
    RUN_HOST,
    RUN_PID,
    RUN_STAGE,
    TAG_DECISION,
    TAG_MODEL_MD5,
    ModelRegistry,
    fluent_tracking_uri,
)
from stdformer.serving import check_servable, log_pyfunc_model
from stdformer.tracking import MlflowTracker, check_tracking, server_failure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisterPaths:
    model: Path                   # the model file (models/stdformer.pt)
    body: Path                    # the body directory it was trained with (data/body)
    eval: Path                    # metrics/eval.json
    lock: Path                    # dvc.lock
    data: Path                    # the DVC-tracked data the model came from (data/shards)
    out: Path                     # metrics/registry.json


def register(paths: RegisterPaths, cfg: RegisterConfig, params: Mapping[str, Any],
             tracking_uri: str, artifact_root: str | Path) -> dict[str, Any]:
    """Log, register and gate the model; write and return the registry.json record.

    params: the params.yaml sections to record (as run params; `preprocess.crop_size`, the
    training crop size, goes into the pyfunc's config)."""

    check_tracking(tracking_uri)                     # fail fast, before any work
    table = read_eval_metrics(paths.eval, required=cfg.gated_metrics,
                              dataset=cfg.primary_dataset)
    candidate = table[EVAL_ROW]
    lineage = _lineage(paths, cfg)
    payload, _ = check_servable(paths.model, paths.body)  # a bad model/body fails here
    model_md5 = file_digest(paths.model, "md5")
    crop_size = (params.get("preprocess") or {}).get("crop_size")
    registry = ModelRegistry(tracking_uri, cfg.model_name)
    for run_id in registry.fail_interrupted_runs(cfg.experiment):
        log.warning("marked registration run %s FAILED: its register process was killed", run_id)

    try:
        run_id, model_uri, model_id = _log_run(paths, cfg, params, table, lineage,
                                               tracking_uri, artifact_root, crop_size)
    except MlflowException as e:
        raise server_failure(tracking_uri, e, "logging the registration run; no version was "
                             "registered") from e
    headline = {k: v for k, v in finite(candidate).items() if k in GATE_METRICS}
    tags = {**{f"{METRIC_PREFIX}{k}": repr(v) for k, v in headline.items()},   # exact values
            TAG_MODEL_MD5: model_md5, **_version_lineage(lineage)}
    try:
        version = str(registry.create_version(model_uri, run_id=run_id, model_id=model_id,
                                              tags=tags).version)
    except MlflowException as e:
        raise server_failure(tracking_uri, e, "creating the model version; no version was "
                             f"registered (run {run_id} logged)") from e
    previous_champion = None
    try:
        previous_champion = registry.aliases().get(CHAMPION)
        decision, champion, champion_metrics = _gate(registry, version, candidate, cfg,
                                                     model_md5)
        registry.describe(model_description(cfg.model_name, payload["model_config"], crop_size))
        registry.describe(version_description(candidate, decision, payload["model_config"],
                                              crop_size, model_md5, lineage), version)
    except MlflowException as e:
        raise server_failure(tracking_uri, e,
                             _undo_version(registry, version, previous_champion)) from e
    aliases = registry.aliases()

    # No run id or time: the record is a DVC output, and a fresh clone must write the bytes the
    # committed dvc.lock holds. The run is the version's (`MlflowClient.get_model_version`).
    record = {
        "model_name": cfg.model_name,
        "version": int(version),
        "model_uri": f"models:/{cfg.model_name}/{version}",
        "decision": decision.alias,
        "promoted": decision.promote,
        "reason": decision.reason,
        "primary_metric": cfg.primary_metric,
        "aliases": sorted(a for a, v in aliases.items() if v == version),
        "champion_version": _int(aliases.get("champion")),      # after this registration
        "candidate": {"version": int(version), "metrics": candidate},
        # the champion the gate compared against (version null: there was none)
        "champion": {"version": _int(champion.version) if champion else None,
                     "metrics": champion_metrics or {}},
        "compared": decision.to_dict()["compared"],
        "data_changed": (None if champion is None or "dvc.data_md5" not in lineage else
                         champion.tags.get("dvc.data_md5") != lineage["dvc.data_md5"]),
        "lineage": lineage,
        "model_md5": model_md5,
    }
    write_text_atomic(paths.out, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def _gate(registry: ModelRegistry, version: str, candidate: Mapping[str, float | None],
          cfg: RegisterConfig, model_md5: str):
    """Apply the gate to the new `version`: (decision, champion compared against, its
    metrics)."""
    champion = registry.by_alias(CHAMPION)          # read just before moving aliases
    champion_metrics = None if champion is None else registry.metrics_of(champion)
    same_model = champion is not None and registry.model_md5_of(champion) == model_md5
    decision = decide(candidate, champion_metrics, cfg, same_model=same_model)
    if decision.promote:
        registry.make_champion(version)
    else:
        registry.set_alias(CHALLENGER, version)
    registry.client.set_model_version_tag(cfg.model_name, version, TAG_DECISION, decision.alias)
    return decision, champion, champion_metrics


def _undo_version(registry: ModelRegistry, version: str, previous_champion: str | None) -> str:
    """Delete a version whose gate did not finish, and give `champion` back to the version that
    held it (no half-registered version stays); what happened, for the error message."""
    try:
        registry.client.delete_model_version(registry.name, version)
        if previous_champion is not None:
            registry.set_alias(CHAMPION, previous_champion)
    except MlflowException:
        return (f"gating version {version}; it could not be deleted either: delete it with "
                "the MLflow UI or client before trusting its aliases")
    return f"gating version {version}, which was deleted again: nothing was registered"


VERSION_LINEAGE = ("dvc.data_md5", "dvc.params_md5")   # the rest: on the run, in the description


def _version_lineage(lineage: Mapping[str, str]) -> dict[str, str]:
    """The lineage a version's tags keep: what it was trained on, and with which params."""
    return {k: lineage[k] for k in VERSION_LINEAGE if k in lineage}


def _int(version: str | None) -> int | None:
    return None if version in (None, NONE) else int(version)


def _lineage(paths: RegisterPaths, cfg: RegisterConfig) -> dict[str, str]:
    try:
        return dvc_lineage(paths.lock, data_path=paths.data, model_path=paths.model)
    except DataError as e:
        if cfg.require_lineage:
            raise
        log.warning("registering without DVC lineage: %s", e)
        return {}


def _log_run(paths: RegisterPaths, cfg: RegisterConfig, params: Mapping[str, Any],
             table: Mapping[str, Mapping[str, float | None]], lineage: Mapping[str, str],
             tracking_uri: str, artifact_root: str | Path, crop_size: int | None
             ) -> tuple[str, str, str | None]:
    """The registration run: params, eval metrics ("mpjpe", baselines as "mean_pose.mpjpe"),
    lineage tags, eval.json and the pyfunc model. Returns (run_id, model_uri, model_id)."""
    import mlflow

    tracker = MlflowTracker(tracking_uri, cfg.experiment, artifact_root,
                            run_name=f"register-{cfg.model_name}", params=params,
                            tags={RUN_STAGE: "register", RUN_HOST: socket.gethostname(),
                                  RUN_PID: str(os.getpid())})
    metrics = {}
    for row, values in table.items():
        prefix = "" if row == EVAL_ROW else f"{row}."
        metrics.update({f"{prefix}{k}": v for k, v in finite(values).items()})
    try:
        tracker.log_metrics(0, metrics)
        tracker.log_artifact(paths.eval)
        with fluent_tracking_uri(tracking_uri), mlflow.start_run(run_id=tracker.run_id):
            mlflow.set_tags(dict(lineage))
            info = log_pyfunc_model(paths.model, paths.body,   # the run ends FINISHED
                                    model_config={"crop_size": crop_size})
    except BaseException:
        tracker.finish("FAILED")
        raise
    return tracker.run_id, info.model_uri, getattr(info, "model_id", None)
