"""What a registered version records about where it came from: the evaluation metrics
(metrics/eval.json) and the DVC hashes of its data, model file and training params (dvc.lock).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stdformer.io import DataError, file_digest, read_json

EVAL_ROW = "stdformer"          # the model's row in eval.json's tables (others: baselines)


def eval_table(doc: object, path: Path, dataset: str) -> tuple[dict, str]:
    """(the table of `dataset` in an eval.json document, its field name): {"datasets":
    {dataset: {row: metrics}}} as `evaluate` writes it; an older single-dataset file's
    {"overall": {row: metrics}} stands for whatever dataset it scored."""
    if isinstance(doc, dict) and "datasets" not in doc and isinstance(doc.get("overall"), dict):
        return doc["overall"], "overall"
    datasets = doc.get("datasets") if isinstance(doc, dict) else None
    if not isinstance(datasets, dict):
        raise DataError(path, "expected the evaluate stage's per-dataset tables", field="datasets")
    if dataset not in datasets:
        raise DataError(path, f"no dataset {dataset!r} (scored: {', '.join(datasets) or 'none'});"
                        " set register.primary_dataset to one of them",
                        field=f"datasets.{dataset}")
    return datasets[dataset], f"datasets.{dataset}"


def read_eval_metrics(path: str | Path, required: tuple[str, ...] = (),
                      dataset: str = "3dpw") -> dict[str, dict]:
    """eval.json -> the table of `dataset` (the gate's primary dataset) {row: {metric: float |
    None}}; the "stdformer" row and the `required` metrics in it must be there (null, i.e.
    NaN, counts as present)."""
    path = Path(path)
    doc = read_json(path, produced_by="the evaluate stage")
    overall, where = eval_table(doc, path, dataset)
    if not isinstance(overall.get(EVAL_ROW), dict):
        raise DataError(path, "missing the model's metrics", field=f"{where}.{EVAL_ROW}")
    table: dict[str, dict] = {}
    for row, metrics in sorted(overall.items()):
        if not isinstance(metrics, dict):
            raise DataError(path, "expected a mapping of metrics", field=f"{where}.{row}")
        table[row] = {}
        for name, value in sorted(metrics.items()):
            if value is not None and (isinstance(value, bool) or not isinstance(value,
                                                                             (int, float))):
                raise DataError(path, f"expected a number, got {value!r}",
                                field=f"{where}.{row}.{name}")
            table[row][name] = None if value is None else float(value)
    for name in required:
        if name not in table[EVAL_ROW]:
            raise DataError(path, "missing metric (the promotion gate compares it)",
                            field=f"{where}.{EVAL_ROW}.{name}")
    return table


def finite(metrics: Mapping[str, float | None]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def params_digest(params: Mapping[str, Any]) -> str:
    """md5 of the canonical JSON of params sections (stable across key order)."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.md5(text.encode()).hexdigest()


def dvc_lineage(lock_path: str | Path, *, data_path: str | Path, model_path: str | Path
                ) -> dict[str, str]:
    """DVC hashes from dvc.lock as version tags:

        dvc.data_md5      md5 of `data_path` (a stage output, e.g. data/shards: "<md5>.dir")
        dvc.model_md5     md5 of `model_path` (checked against the file: a stale lock is refused)
        dvc.params_md5    md5 of the params of the stage that wrote the model (see
                          params_digest), dvc.params_sections
        dvc.params.<section>_md5  the same per section

    Paths may be absolute or relative to the current directory; dvc.lock paths are relative to
    the lock file's directory."""
    lock_path = Path(lock_path)
    if not lock_path.is_file():
        raise DataError(lock_path, "file not found (run the pipeline with `dvc repro`, or set "
                        "register.require_lineage: false)")
    try:
        lock = yaml.safe_load(lock_path.read_text())
    except yaml.YAMLError as e:
        raise DataError(lock_path, f"not valid YAML: {e}") from e
    stages = lock.get("stages") if isinstance(lock, dict) else None
    if not isinstance(stages, dict):
        raise DataError(lock_path, "no stages recorded", field="stages")
    root = lock_path.resolve().parent
    data_rel, model_rel = _relative(data_path, root), _relative(model_path, root)

    tags = {"dvc.data_path": data_rel, "dvc.model_path": model_rel,
            "dvc.data_md5": _md5_of(stages, data_rel, lock_path),
            "dvc.model_md5": _md5_of(stages, model_rel, lock_path)}
    actual = file_digest(model_path, "md5")
    if actual != tags["dvc.model_md5"]:
        raise DataError(lock_path, f"records md5 {tags['dvc.model_md5']} for {model_rel} but the "
                        f"file has {actual}: the lock is stale (run `dvc repro` or `dvc commit`)",
                        field="stages")
    stage, entry = _producer(stages, model_rel, lock_path)
    params = (entry or {}).get("params", {}).get("params.yaml") if isinstance(entry, dict) \
        else None
    if not isinstance(params, dict) or not params:
        raise DataError(lock_path, "no params recorded for the stage", field=f"stages.{stage}")
    tags["dvc.params_md5"] = params_digest(params)
    tags["dvc.params_sections"] = ",".join(sorted(params))
    for section, values in sorted(params.items()):
        tags[f"dvc.params.{section}_md5"] = params_digest(values)
    return tags


def _relative(path: str | Path, root: Path) -> str:
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _producer(stages: Mapping[str, Any], rel: str, lock_path: Path) -> tuple[str, Any]:
    """(name, entry) of the stage whose outputs include `rel` (e.g. "train@stdformer")."""
    for name, entry in sorted(stages.items()):
        if any(isinstance(item, dict) and item.get("path") == rel
               for item in (entry or {}).get("outs") or []):
            return name, entry
    raise DataError(lock_path, f"no stage records {rel} as an output", field="stages")


def _md5_of(stages: Mapping[str, Any], rel: str, lock_path: Path) -> str:
    """The md5 dvc.lock records for `rel` (an output first, else a dependency)."""
    for kind in ("outs", "deps"):
        for name, entry in sorted(stages.items()):
            for item in (entry or {}).get(kind) or []:
                if isinstance(item, dict) and item.get("path") == rel and item.get("md5"):
                    return str(item["md5"])
    raise DataError(lock_path, f"no md5 recorded for {rel} (is it a stage output?)",
                    field="stages")
