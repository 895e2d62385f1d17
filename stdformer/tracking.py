"""Experiment tracking: MLflow (checked reachable before training) and the DVC plot files.

`default_tracking_uri(project_dir)`: MLFLOW_TRACKING_URI if set, else a sqlite store in the
project (`sqlite:///<project>/mlflow.db`; the plain file store is refused by MLflow 3.17).
Artifacts go to `<project>/mlartifacts/<experiment>` (set explicitly on the experiment).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import logging
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stdformer.io import DataError, write_text_atomic

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

PROBE_TIMEOUT_S = 5.0
log = logging.getLogger(__name__)


class TrackingUnavailableError(DataError):
    """The tracking server cannot be reached (raised before any training step)."""


def default_tracking_uri(project_dir: str | Path) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path(project_dir).resolve() / 'mlflow.db'}"


def is_server_uri(uri: str) -> bool:
    """A tracking server (http/https): it decides where artifacts go and serves them, so no
    path of this checkout is recorded."""
    return uri.startswith(("http://", "https://"))


def check_tracking(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast, with a message that says what to do, when `uri` cannot be used.

    http(s): any HTTP answer counts as reachable (MLflow's own client retries for minutes).
    sqlite: the database file must be creatable and readable. Other schemes: MLflow must accept
    them for runs and the model registry (a typo such as garbage://x, a missing database driver,
    the retired file store). Every failure is a TrackingUnavailableError (DataError: exit 2).
    """
    hint = ("start a server (`mlflow server --host 127.0.0.1 --port 5000`), point "
            "MLFLOW_TRACKING_URI at a running one, or unset it to use the local sqlite store")
    if is_server_uri(uri):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered; /health may just not exist there
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingUnavailableError(
                f"MLFLOW_TRACKING_URI={uri}",
                f"MLflow tracking server not reachable ({reason}); {hint}") from e
        _check_backend_store(uri, timeout_s)
    elif uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(path) as db:
                db.execute("select count(*) from sqlite_master").fetchone()
        except (sqlite3.Error, OSError) as e:
            raise TrackingUnavailableError(
                f"MLFLOW_TRACKING_URI={uri}", f"cannot open the sqlite tracking store ({e}); "
                f"{hint}") from e
    else:  # another scheme: MLflow must support it for runs and for the model registry
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_experiments(max_results=1)
            client.search_registered_models(max_results=1)
        except (MlflowException, ImportError, OSError) as e:
            raise TrackingUnavailableError(
                f"MLFLOW_TRACKING_URI={uri}",
                f"MLflow cannot use this URI ({_short(e)}); {hint}") from e


def _check_backend_store(uri: str, timeout_s: float) -> None:
    """A server that answers /health may still have lost its database: one cheap API call
    (MLflow's client would retry a 503 for minutes)."""
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            pass
    except urllib.error.HTTPError as e:
        if e.code >= 500:
            raise TrackingUnavailableError(
                f"MLFLOW_TRACKING_URI={uri}",
                f"the MLflow server answers but cannot use its backend store (HTTP {e.code} "
                "from experiments/search): is its database running?") from e
    except (urllib.error.URLError, OSError):
        pass   # /health answered: a slow API is MLflow's client's to retry


def server_failure(uri: str, error: Exception, what: str) -> TrackingUnavailableError:
    """The clear error for an MLflow call that failed on the server's side mid-way."""
    return TrackingUnavailableError(
        f"MLFLOW_TRACKING_URI={uri}", f"the tracking server failed while {what} "
        f"({_short(error)}); is its database running?")


def _short(error: Exception, limit: int = 300) -> str:
    """The gist of an MLflow error: its first line, up to its "See <docs>" pointer."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    text = text.split(" See http", 1)[0].strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


def local_path(uri: str) -> Path | None:
    """The local path of a `file:` URI or a plain path; None for remote stores (s3://,
    mlflow-artifacts:, ...)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return None
    return Path(urllib.request.url2pathname(parsed.path))


def check_artifact_location(location: str, expected: Path, experiment: str) -> None:
    """A local store records each experiment's artifact location as an absolute path, fixed
    when the experiment was created: a project moved or copied elsewhere keeps reading and
    writing artifacts at the old place. Refuse a location whose artifact root (its parent
    directory, `<project>/mlartifacts`) is gone; warn when it is another checkout's."""
    path = local_path(location)
    if path is None:
        return
    if not path.parent.is_dir():
        raise TrackingUnavailableError(
            f"MLflow experiment '{experiment}'",
            f"its artifacts live in {path}, and {path.parent} does not exist: the tracking "
            "store records absolute paths, so a moved project still points at its old place. "
            "Move mlartifacts/ back there, or set the old mlflow.db and mlartifacts/ aside to "
            "start a new store")
    if path.resolve() != expected.resolve():
        log.warning("MLflow experiment '%s' keeps its artifacts in %s, not in this project's "
                    "%s (the tracking store was created in another checkout)", experiment, path,
                    expected.parent)
    path.mkdir(exist_ok=True)   # an experiment that never stored an artifact has none yet


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dicts -> {"train.lr": "0.0001", ...} (MLflow params are strings)."""
    flat = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name))
        else:
            flat[name] = str(value)[:500]
    return flat


class MlflowTracker:
    """One MLflow run, through an explicit client (no process-global active run)."""

    def __init__(self, uri: str, experiment: str, artifact_root: str | Path,
                 run_id: str | None = None, run_name: str | None = None,
                 params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        expected = Path(artifact_root).resolve() / experiment
        found = self.client.get_experiment_by_name(experiment)
        if found is None and is_server_uri(uri):    # the server's artifact store (served)
            experiment_id = self.client.create_experiment(experiment)
        elif found is None:
            expected.mkdir(parents=True, exist_ok=True)   # present from the start: see below
            experiment_id = self.client.create_experiment(experiment,
                                                          artifact_location=expected.as_uri())
        else:
            experiment_id = found.experiment_id
            check_artifact_location(found.artifact_location, expected, experiment)
        self.run_id = None
        if run_id is not None:  # continue the interrupted run when the store still has it
            try:
                self.run_id = self.client.get_run(run_id).info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
            except Exception:
                self.run_id = None
        if self.run_id is None:
            self.run_id = self.client.create_run(experiment_id, run_name=run_name,
                                                 tags=dict(tags or {})).info.run_id
            if params:
                self._log_params(flatten_params(params))

    def _log_params(self, flat: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(flat.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in sorted(metrics.items())
                 if v is not None and math.isfinite(float(v))]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, path: str | Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


# --------------------------------------------------------------------------------------------
# DVC plot / metric files


def curve_csv(rows: Sequence[Mapping[str, float]]) -> str:
    """The learning curve as CSV: `step` first, then every column that appears, sorted; blank
    where a row has no value (validation columns only on validation steps)."""
    columns = sorted({k for row in rows for k in row if k != "step"})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", *columns])
    for row in rows:
        writer.writerow([row["step"], *[_fmt(row.get(c)) for c in columns]])
    return buf.getvalue()


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def write_curve(path: str | Path, rows: Sequence[Mapping[str, float]]) -> None:
    write_text_atomic(path, curve_csv(rows))


def write_metrics(path: str | Path, metrics: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(dict(metrics), indent=2, sort_keys=True) + "\n")
