"""Prefect flow `retrain`: bring the DVC pipeline up to date, one Prefect task per DVC stage.

    python -m flows.retrain [--force] [--set preprocess.dataset_root=/data/3dpw] [--project-dir .]

The flow never re-implements a stage; it asks DVC (the Python API, as `dvc repro` does):
  1. take the project's retrain lock (flows/lock.py): one retrain at a time, held until every
     process of the run has ended, even when the flow itself is killed;
  2. apply parameter overrides (flows/overrides.py: dotted keys into params.yaml, e.g.
     {"preprocess.dataset_root": "/data/3dpw"}); every key must already exist and every section
     it touches must load as its stage loads it, else nothing is written; a run that fails
     puts params.yaml back as it was;
  3. `dvc status`: nothing changed (raw data, params, code) -> return "up to date" at once;
  4. every stage in DVC's own order, each one Prefect task (flows/tasks.py) reproducing that
     stage alone, so its time, output and failure show in Prefect; transient failures are
     retried, bad input (exit status 2) is not;
  5. a markdown artifact `retrain-report` (flows/report.py): the stages, metrics/eval.json
     against the champion and the promotion decision, when this run registered a model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.lock import RetrainBusyError, new_run, retrain_lock
from flows.overrides import parse_set, undone_on_failure
from flows.report import REGISTRY, REPORT_KEY, read_decision, render_report
from flows.schedule import PARAMS_FILE, load_schedule
from flows.tasks import StageFailed, apply_params, check_pipeline, run_stage
from stdformer.io import DataError


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
    with retrain_lock(project):
        schedule = load_schedule(project / PARAMS_FILE)
        retries = schedule.retries if retries is None else retries
        delay = schedule.retry_delay_seconds if retry_delay_seconds is None else retry_delay_seconds
        registry_before = _digest(project / REGISTRY)
        with undone_on_failure(project / PARAMS_FILE, logger.warning):
            overrides = apply_params(str(project), params) if params else {}
            plan = check_pipeline(str(project))
            result = {"status": "up to date", "stages_run": [], "stages": plan["stages"],
                      "changed": sorted(plan["changed"]), "overrides": overrides,
                      "registered": False, "decision": None, "force": force}
            stage_results = []
            if plan["changed"] or force:
                stage_task = run_stage.with_options(retries=retries, retry_delay_seconds=delay)
                for stage in plan["stages"]:
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project-dir", default=".")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="params.yaml override, e.g. preprocess.dataset_root=/data/3dpw")
    parser.add_argument("--retries", type=int, default=None)
    args = parser.parse_args(argv)
    new_run()   # before Prefect starts its temporary API server: the run's guard stops it too
    try:
        result = retrain(force=args.force, params=parse_set(args.set) or None,
                         project_dir=args.project_dir, retries=args.retries)
    except (StageFailed, RetrainBusyError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        # 2: bad input or params, the same command fails again; 1: busy, or worth retrying
        bad_input = isinstance(e, DataError) or (isinstance(e, StageFailed) and not e.transient)
        raise SystemExit(2 if bad_input else 1) from e
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
