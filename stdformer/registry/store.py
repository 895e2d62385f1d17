"""The MLflow model registry side: versions, aliases and the promotion record.

Aliases: `champion` (what `models:/<name>@champion` serves) and `challenger` (the latest version
that did not pass the gate). Every version that becomes champion gets the tag
`previous_champion` (the version it replaced, "none" for the first), so `rollback` can walk the
chain back; a version rolled back from gets `rolled_back_to`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator, Mapping
from typing import Any

from stdformer.io import DataError
from stdformer.tracking import local_path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

CHAMPION, CHALLENGER = "champion", "challenger"
TAG_PREVIOUS = "previous_champion"
TAG_ROLLED_BACK = "rolled_back_to"
TAG_DECISION = "decision"
TAG_MODEL_MD5 = "model_md5"          # md5 of the model file (weights): same file, same model
METRIC_PREFIX = "metric."
NONE = "none"
INTERRUPTED = "interrupted"
# Tags of a registration run: which process made it (a killed register is found by them).
RUN_STAGE, RUN_HOST, RUN_PID = "stdformer.stage", "stdformer.host", "stdformer.pid"


class ModelRegistry:
    """One registered model in the store at `tracking_uri` (also the registry URI)."""

    def __init__(self, tracking_uri: str, model_name: str):
        from mlflow.tracking import MlflowClient

        self.uri, self.name = tracking_uri, model_name
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @property
    def where(self) -> str:
        return f"registered model {self.name!r}"

    # ---- reading ----------------------------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        """alias -> version ({} when the model is not registered yet)."""
        from mlflow.exceptions import MlflowException

        try:
            aliases = self.client.get_registered_model(self.name).aliases
            return {str(a): str(v) for a, v in aliases.items()}
        except MlflowException as e:
            if _missing(e):
                return {}
            raise

    def versions(self) -> list:
        """All versions (ModelVersion), oldest first."""
        found = self.client.search_model_versions(f"name = '{self.name}'")
        return sorted(found, key=lambda mv: int(mv.version))

    def version(self, version: str | int):
        """The ModelVersion `version`; DataError naming the known versions if there is none."""
        from mlflow.exceptions import MlflowException

        text = str(version).strip()
        if not text.isdigit():
            raise DataError(self.where, f"version must be a number, got {version!r}")
        try:
            return self.client.get_model_version(self.name, text)
        except MlflowException as e:
            if not _missing(e):
                raise
        known = ", ".join(str(mv.version) for mv in self.versions()) or "none yet"
        raise DataError(self.where, f"version {text} does not exist (versions: {known})")

    def by_alias(self, alias: str):
        version = self.aliases().get(alias)
        return None if version is None else self.client.get_model_version(self.name, version)

    @staticmethod
    def model_md5_of(mv) -> str | None:
        """The model file md5 a version records (older versions: the DVC lineage tag)."""
        return mv.tags.get(TAG_MODEL_MD5) or mv.tags.get("dvc.model_md5")

    def missing_artifacts(self, mv) -> str | None:
        """Where a version's model files should be, when that local directory is gone (the
        project moved: local stores record absolute paths); None when present or remote."""

        try:
            location = (self.client.get_logged_model(mv.model_id).artifact_location
                        if getattr(mv, "model_id", None) else
                        self.client.get_run(mv.run_id).info.artifact_uri)
        except Exception:  # noqa: BLE001 - the run or logged model was deleted: nothing to check
            return None
        path = local_path(location)
        return str(path) if path is not None and not path.exists() else None

    @staticmethod
    def metrics_of(mv) -> dict[str, float]:
        """The evaluation metrics recorded on a version (tags metric.<name>)."""
        out = {}
        for key, value in mv.tags.items():
            if key.startswith(METRIC_PREFIX):
                with contextlib.suppress(ValueError):
                    out[key[len(METRIC_PREFIX):]] = float(value)
        return out

    def table(self) -> list[dict[str, Any]]:
        """One row a version (oldest first): version, aliases, metrics, decision, created,
        run_id, previous_champion."""
        by_version: dict[str, list[str]] = {}
        for alias, version in sorted(self.aliases().items()):
            by_version.setdefault(str(version), []).append(alias)
        rows = []
        for mv in self.versions():
            created = dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.timezone.utc)
            rows.append({
                "version": int(mv.version), "aliases": by_version.get(str(mv.version), []),
                "metrics": self.metrics_of(mv), "decision": mv.tags.get(TAG_DECISION),
                "previous_champion": mv.tags.get(TAG_PREVIOUS),
                "created": created.strftime("%Y-%m-%d %H:%M:%SZ"), "run_id": mv.run_id})
        return rows

    # ---- writing ----------------------------------------------------------------------------

    def describe(self, description: str, version: str | None = None) -> None:
        """Set the registered model's description, or one version's (markdown in the UI)."""
        if version is None:
            self.client.update_registered_model(self.name, description=description)
        else:
            self.client.update_model_version(self.name, str(version), description=description)

    def fail_interrupted_runs(self, experiment: str) -> list[str]:
        """Mark FAILED the registration runs of `experiment` left RUNNING by a register process
        of this host that no longer lives (killed), and tag their versions `interrupted`;
        returns their run ids. Runs of other hosts are left alone (they may be running)."""
        import socket

        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            return []
        runs = self.client.search_runs(
            [found.experiment_id],
            f"attributes.status = 'RUNNING' and tags.`{RUN_STAGE}` = 'register'")
        failed = []
        for run in runs:
            tags = run.data.tags
            if tags.get(RUN_HOST) != socket.gethostname() or _alive(tags.get(RUN_PID),
                                                                    run.info.start_time):
                continue
            self.client.set_terminated(run.info.run_id, status="FAILED")
            for mv in self.client.search_model_versions(f"run_id = '{run.info.run_id}'"):
                self.client.set_model_version_tag(mv.name, mv.version, TAG_DECISION, INTERRUPTED)
            failed.append(run.info.run_id)
        return failed

    def create_version(self, model_uri: str, *, run_id: str, model_id: str | None,
                       tags: Mapping[str, str]):
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException as e:
            if not _missing(e):
                raise
            with contextlib.suppress(MlflowException):   # created meanwhile: fine
                self.client.create_registered_model(self.name)
        # MLflow's sqlite registry looks the logged model up through the process-global
        # tracking URI (MlflowClient()), whatever this client's URI is.
        with fluent_tracking_uri(self.uri):
            return self.client.create_model_version(self.name, model_uri, run_id=run_id,
                                                    tags=dict(tags), model_id=model_id)

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.name, alias, str(version))

    def make_champion(self, version: str) -> str | None:
        """Move `champion` to `version`, recording the version it replaces (returned; None if
        there was no champion). A version that held `challenger` loses it."""
        aliases = self.aliases()
        previous = aliases.get(CHAMPION)
        version = str(version)
        if previous == version:
            return previous
        self.client.set_model_version_tag(self.name, version, TAG_PREVIOUS, previous or NONE)
        self.client.set_registered_model_alias(self.name, CHAMPION, version)
        if aliases.get(CHALLENGER) == version:
            self.client.delete_registered_model_alias(self.name, CHALLENGER)
        return previous

    def promote(self, version: str | int) -> dict[str, Any]:
        """Explicitly make `version` the champion (no gate)."""
        mv = self.version(version)
        self._check_artifacts(mv)
        version = str(mv.version)
        previous = self.make_champion(version)
        if previous == version:
            return {"champion": version, "previous_champion": previous, "changed": False,
                    "message": f"version {version} already is the champion"}
        return {"champion": version, "previous_champion": previous, "changed": True,
                "message": f"champion: version {previous or NONE} -> {version}"}

    def rollback(self) -> dict[str, Any]:
        """Move `champion` back to the version the current champion replaced."""
        current = self.aliases().get(CHAMPION)
        if current is None:
            raise DataError(self.where, "has no champion to roll back")
        previous = self.client.get_model_version(self.name, current).tags.get(TAG_PREVIOUS)
        if not previous or previous == NONE:
            raise DataError(self.where, f"champion version {current} has no previous champion "
                            "recorded (it was the first); nothing to roll back to")
        target_mv = self.version(previous)             # clear error if it was deleted since
        self._check_artifacts(target_mv)
        target = str(target_mv.version)
        self.client.set_registered_model_alias(self.name, CHAMPION, target)
        self.client.set_model_version_tag(self.name, current, TAG_ROLLED_BACK, target)
        return {"champion": target, "rolled_back_from": current, "changed": True,
                "message": f"champion: version {current} -> {target} (rollback)"}


    def _check_artifacts(self, mv) -> None:
        missing = self.missing_artifacts(mv)
        if missing:
            raise DataError(self.where, f"version {mv.version}'s model files are not at {missing}, "
                            "where the tracking store says they are (was the project moved? "
                            "Local stores record absolute paths; see the README, Model "
                            "registry)")


def _alive(pid: str | None, started_ms: int) -> bool:
    """Is process `pid` the one that started a run at `started_ms` (not a later reuse)?"""
    import psutil

    if not (pid or "").isdigit():
        return False
    try:
        return psutil.Process(int(pid)).create_time() * 1000 <= started_ms
    except psutil.Error:
        return False


def _missing(e: Exception) -> bool:
    return getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


@contextlib.contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-global (fluent) API at `uri` for a block, then restore both the
    global and the MLFLOW_TRACKING_URI variable exactly (mlflow.set_tracking_uri sets it)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    saved_global = utils._tracking_uri
    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_global)
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env
