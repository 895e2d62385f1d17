"""Prefect flow `retrain`: bring the DVC pipeline up to date, one Prefect task per DVC stage.

    python -m flows.retrain [--force] [--set datasets.3dpw.root=/data/3dpw] [--project-dir .]

The flow never re-implements a stage; it asks DVC (the Python API, as `dvc repro` does):
  0. the CLI reads params.yaml within limits (size, YAML alias expansion) and checks every
     `--set` as the stages would load it, before Prefect or DVC start: bad input is one
     `error:` line and exit status 2, with nothing written or removed;
  1. take the project's retrain lock (flows/lock.py): one retrain at a time, held until every
     process of the run has ended, even when the flow itself is killed; put right what a run
     that did not finish left (flows/leftovers.py: its overrides, a broken DVC rwlock);
  2. apply parameter overrides (flows/overrides.py: dotted keys into params.yaml, e.g.
     {"datasets.3dpw.root": "/data/3dpw"}); every key must already exist and every section
     it touches must load as its stage loads it, else nothing is written; they are journaled
     first, and a run that fails or dies puts params.yaml back as it was;
  3. `dvc status`: nothing changed (raw data, params, code) -> return "up to date" at once;
  4. every stage in DVC's own order, each one Prefect task (flows/tasks.py) reproducing that
     stage alone, so its time, output and failure show in Prefect; transient failures are
     retried, bad input (exit status 2) is not;
  5. a markdown artifact `retrain-report` (flows/report.py): the stages, metrics/eval.json
     against the champion and the promotion decision, when this run registered a model.
SIGTERM stops the running stage and ends the run through the same clean-up, without retries
(flows/stop.py); the CLI then exits with status 143.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.leftovers import overrides_undone_on_failure, repair_leftovers
from flows.lock import RetrainBusyError, new_run, retrain_lock
from flows.overrides import check_overrides, parse_set
from flows.report import REGISTRY, REPORT_KEY, read_decision, render_report
from flows.schedule import PARAMS_FILE, load_schedule
from flows.stop import (RetrainStopped, raise_if_stopped, stop_on_sigterm,
                        temporary_server_in_own_session)
from flows.tasks import StageFailed, apply_params, check_pipeline, run_stage
from stdformer.config import read_params
from stdformer.io import DataError

# Failures the CLI reports in one `error:` line: Prefect's console log shows no traceback.
EXPECTED_FAILURES = (StageFailed, RetrainBusyError, RetrainStopped, DataError)


def _digest(path: Path) -> str | None:
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else None


@flow(name="retrain")
def retrain(force: bool = False, params: dict[str, Any] | None = None, project_dir: str = ".",
            retries: int | None = None, retry_delay_seconds: float | None = None
            ) -> dict[str, Any]:
    """Bring the DVC pipeline in `project_dir` up to date (see the module docstring).

    params: overrides, {dotted params.yaml key: value}. retries / retry_delay_seconds: per
    stage, for transient failures; None takes them from params.yaml's `schedule` section.
    Returns {status: 'up to date' | 'retrained', stages_run (reproduced), stages (all, in
    order), changed (stages `dvc status` flagged), overrides (that changed params.yaml),
    registered (this run registered a model), decision ('promoted' | 'not promoted' from
    metrics/registry.json when it did, else None), force}.
    """
    project = Path(project_dir).resolve()
    logger = get_run_logger()
    with stop_on_sigterm(), retrain_lock(project):
        repair_leftovers(project, logger.warning)
        schedule = load_schedule(project / PARAMS_FILE)
        retries = schedule.retries if retries is None else retries
        delay = schedule.retry_delay_seconds if retry_delay_seconds is None else retry_delay_seconds
        registry_before = _digest(project / REGISTRY)
        with overrides_undone_on_failure(project, project / PARAMS_FILE, logger.warning):
            overrides = apply_params(str(project), params) if params else {}
            raise_if_stopped("before `dvc status`")
            plan = check_pipeline(str(project))
            result = {"status": "up to date", "stages_run": [], "stages": plan["stages"],
                      "changed": sorted(plan["changed"]), "overrides": overrides,
                      "registered": False, "decision": None, "force": force}
            stage_results = []
            if plan["changed"] or force:
                stage_task = run_stage.with_options(retries=retries, retry_delay_seconds=delay)
                for stage in plan["stages"]:
                    raise_if_stopped(f"before stage '{stage}'")
                    stage_results.append(stage_task(str(project), stage, force))
                result["stages_run"] = [r["stage"] for r in stage_results if r["ran"]]
                if result["stages_run"]:
                    result["status"] = "retrained"
        # registry.json persists between runs: only a rewrite is this run's decision
        if _digest(project / REGISTRY) not in (None, registry_before):
            result["registered"] = True
            result["decision"] = read_decision(json.loads(
                (project / REGISTRY).read_text()))["decision"]
    create_markdown_artifact(markdown=render_report(result, stage_results, project),
                             key=REPORT_KEY, description=f"retrain of {project}")
    logger.info("retrain %s: %s", result["status"],
                ", ".join(result["stages_run"]) or "no stage ran")
    return result


def check_before_start(project_dir: str, overrides: dict[str, Any]) -> None:
    """What the CLI refuses before Prefect or DVC start (DataError): params.yaml beyond its
    limits (stdformer.config.read_params), an override its stage would refuse."""
    params_path = Path(project_dir) / PARAMS_FILE
    if params_path.exists() or overrides:
        read_params(params_path)
    if overrides:
        check_overrides(params_path, overrides)


class _NoTracebackFor(logging.Formatter):
    """Wraps a console formatter: records of EXPECTED_FAILURES print without their traceback
    (the CLI's `error:` line says it; the Prefect API still gets the traceback)."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        if not (record.exc_info and isinstance(record.exc_info[1], EXPECTED_FAILURES)):
            return self.inner.format(record)
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = saved


def _quiet_expected_failures() -> None:
    for handler in logging.getLogger().handlers:
        if handler.formatter is not None and not isinstance(handler.formatter, _NoTracebackFor):
            handler.setFormatter(_NoTracebackFor(handler.formatter))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project-dir", default=".")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="params.yaml override, e.g. datasets.3dpw.root=/data/3dpw")
    parser.add_argument("--retries", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        overrides = parse_set(args.set)
        check_before_start(args.project_dir, overrides)
        new_run()   # before Prefect starts its temporary API server: the run's guard stops it
        _quiet_expected_failures()
        temporary_server_in_own_session()
        result = retrain(force=args.force, params=overrides or None,
                         project_dir=args.project_dir, retries=args.retries)
    except EXPECTED_FAILURES as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(_exit_status(e)) from e
    print(json.dumps(result, indent=2))


def _exit_status(error: Exception) -> int:
    """2: bad input or params, the same command fails again; 128 + signal: stopped by one;
    1: busy, or worth retrying."""
    if isinstance(error, RetrainStopped):
        return 128 + error.signum
    if isinstance(error, DataError) or (isinstance(error, StageFailed) and not error.transient):
        return 2
    return 1


if __name__ == "__main__":
    main()
