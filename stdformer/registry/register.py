"""Register an evaluated model: one MLflow run (params, metrics, lineage tags, the pyfunc
model), a new version of the registered model with the same record as tags, then the gate.

Order matters for users: the tracking store is checked and every input read and validated
before anything is written to MLflow, so a bad input leaves no half-registered version.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stdformer.io import DataError, write_text_atomic
from stdformer.registry.config import RegisterConfig
from stdformer.registry.gate import decide
from stdformer.registry.lineage import EVAL_ROW, dvc_lineage, finite, read_eval_metrics
from stdformer.registry.store import (CHALLENGER, METRIC_PREFIX, NONE, TAG_DECISION, TAG_REASON,
                                      ModelRegistry, fluent_tracking_uri)

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

    params: the params.yaml sections to record (run params and version tags `param.*`)."""
    from stdformer.serving import check_servable
    from stdformer.train.tracking import check_tracking, flatten_params

    check_tracking(tracking_uri)                     # fail fast, before any work
    table = read_eval_metrics(paths.eval, required=cfg.gated_metrics)
    candidate = table[EVAL_ROW]
    lineage = _lineage(paths, cfg)
    check_servable(paths.model, paths.body)          # a bad model/body fails here, not in MLflow
    registry = ModelRegistry(tracking_uri, cfg.model_name)

    run_id, model_uri, model_id = _log_run(paths, cfg, params, table, lineage, tracking_uri,
                                           artifact_root)
    tags = {**{f"{METRIC_PREFIX}{k}": f"{v:.6g}" for k, v in finite(candidate).items()},
            **{f"param.{k}": v for k, v in flatten_params(params).items()}, **lineage}
    version = str(registry.create_version(model_uri, run_id=run_id, model_id=model_id,
                                          tags=tags).version)

    champion = registry.by_alias("champion")       # read just before moving aliases
    champion_metrics = None if champion is None else registry.metrics_of(champion)
    decision = decide(candidate, champion_metrics, cfg)
    if decision.promote:
        registry.make_champion(version)
    else:
        registry.set_alias(CHALLENGER, version)
    registry.client.set_model_version_tag(cfg.model_name, version, TAG_DECISION, decision.alias)
    registry.client.set_model_version_tag(cfg.model_name, version, TAG_REASON, decision.reason)

    aliases = registry.aliases()
    record = {
        "model_name": cfg.model_name,
        "version": int(version),
        "model_uri": f"models:/{cfg.model_name}/{version}",
        "run_id": run_id,
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
    }
    write_text_atomic(paths.out, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


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
             tracking_uri: str, artifact_root: str | Path) -> tuple[str, str, str | None]:
    """The registration run: params, eval metrics ("mpjpe", baselines as "mean_pose.mpjpe"),
    lineage tags, eval.json and the pyfunc model. Returns (run_id, model_uri, model_id)."""
    import mlflow

    from stdformer.serving import log_pyfunc_model
    from stdformer.train.tracking import MlflowTracker

    tracker = MlflowTracker(tracking_uri, cfg.experiment, artifact_root,
                            run_name=f"register-{cfg.model_name}", params=params)
    metrics = {}
    for row, values in table.items():
        prefix = "" if row == EVAL_ROW else f"{row}."
        metrics.update({f"{prefix}{k}": v for k, v in finite(values).items()})
    try:
        tracker.log_metrics(0, metrics)
        tracker.log_artifact(paths.eval)
        with fluent_tracking_uri(tracking_uri), mlflow.start_run(run_id=tracker.run_id):
            mlflow.set_tags({"stdformer.stage": "register", **lineage})
            info = log_pyfunc_model(paths.model, paths.body)   # the run ends FINISHED
    except BaseException:
        tracker.finish("FAILED")
        raise
    return tracker.run_id, info.model_uri, getattr(info, "model_id", None)
