"""Serve the `retrain` flow on the cron schedule in params.yaml's `schedule` section.

    prefect server start --host 127.0.0.1                        # terminal 1 (UI on :4200)
    export PREFECT_API_URL=http://127.0.0.1:4200/api             # terminal 2
    python -m flows.deploy [--project-dir .] [--name scheduled]  # runs until Ctrl-C
    python -m flows.deploy --work-pool team   # or: register it for a worker pool, and exit

Without --work-pool this process is the worker: it registers the deployment `retrain/<name>` with the server,
then polls for its scheduled runs and executes each one in a subprocess. Scheduling needs a
real server: Prefect's temporary (ephemeral) API, used when PREFECT_API_URL is unset, never
creates scheduled runs, so this command refuses to start without PREFECT_API_URL.

The schedule and the run parameters (force, params overrides, retries, retry delay) are read
once, here: after editing the `schedule` section, stop and start this command again. Runs of
the deployment never overlap (deployment concurrency limit 1, later runs wait); the flow's
own lock also refuses a second retrain of the same project started by any other means.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from flows.retrain import retrain
from flows.schedule import PARAMS_FILE, ScheduleConfig, load_schedule
from stdformer.io import DataError

DEFAULT_NAME = "scheduled"
PROBE_TIMEOUT_S = 5.0


def check_server(api_url: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """DataError unless a Prefect server answers at `api_url` (its /health endpoint)."""
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        pass  # it answered
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DataError(f"PREFECT_API_URL={api_url}", "Prefect server not reachable "
                        f"({getattr(e, 'reason', e)}); start it with `prefect server start "
                        "--host 127.0.0.1` or point PREFECT_API_URL at a running one") from e


def deployment_parameters(project_dir: str | Path, schedule: ScheduleConfig) -> dict[str, Any]:
    """The flow parameters every scheduled run gets (editable per run in the UI)."""
    return {"project_dir": str(Path(project_dir).resolve()), "force": schedule.force,
            "params": dict(schedule.params) or None, "retries": schedule.retries,
            "retry_delay_seconds": schedule.retry_delay_seconds}


def _deployment_options(project: Path, schedule: ScheduleConfig) -> dict[str, Any]:
    """What a retrain deployment is, wherever it runs: schedule, parameters, limits, text."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    return dict(
        schedules=[Cron(schedule.cron, timezone=schedule.timezone)],
        parameters=deployment_parameters(project, schedule),
        # One run at a time; a run due while another is running waits for it.
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        description=f"Scheduled retrain of {project}: `dvc status`, then the changed DVC "
                    "stages, one task each.",
        tags=["stdformer", "retrain"])


def _project_and_schedule(project_dir: str | Path, schedule: ScheduleConfig | None
                          ) -> tuple[Path, ScheduleConfig]:
    project = Path(project_dir).resolve()
    if schedule is None:
        return project, load_schedule(project / PARAMS_FILE)
    schedule.validate()
    return project, schedule


def build_deployment(project_dir: str | Path = ".", name: str = DEFAULT_NAME,
                     schedule: ScheduleConfig | None = None):
    """A `RunnerDeployment` of `retrain` on the cron schedule of `schedule` (default: the
    `schedule` section of `<project_dir>/params.yaml`). `.apply()` registers it with the API;
    `prefect.serve(d)` or `Runner().add_deployment(d)` runs it."""
    from prefect.deployments.runner import EntrypointType

    project, schedule = _project_and_schedule(project_dir, schedule)
    return retrain.to_deployment(
        name=name, **_deployment_options(project, schedule),
        # Import the flow as `flows.retrain` (installed package), whatever the working
        # directory of the process that runs it.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def deploy_to_work_pool(project_dir: str | Path, work_pool: str, name: str = DEFAULT_NAME,
                        schedule: ScheduleConfig | None = None) -> str:
    """Register `retrain/<name>` for the workers of `work_pool` (a process pool); returns the
    deployment id. The code location is this clone's directory: a worker on the same machine
    (or one that sees the clone at the same path) runs `flows/retrain.py` from it, with the
    clone as working directory and first on PYTHONPATH; the run gets `project_dir` there."""
    from prefect import flow as prefect_flow

    project, schedule = _project_and_schedule(project_dir, schedule)
    remote = prefect_flow.from_source(source=str(project), entrypoint="flows/retrain.py:retrain")
    return str(remote.deploy(
        name=name, work_pool_name=work_pool, **_deployment_options(project, schedule),
        build=False, push=False, print_next_steps=False, ignore_warnings=True,
        job_variables={"working_dir": str(project), "env": {"PYTHONPATH": str(project)}}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project-dir", default=".")
    parser.add_argument("--name", default=DEFAULT_NAME, help="deployment name")
    parser.add_argument("--work-pool", default=None, metavar="POOL",
                        help="register the deployment for the workers of POOL and exit "
                             "(`prefect worker start --pool POOL` runs it) instead of serving "
                             "it from this process")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the schedule and parameters, do not contact the server")
    args = parser.parse_args(argv)

    from prefect import serve
    from prefect.settings import PREFECT_API_URL

    if not args.dry_run and not PREFECT_API_URL.value():
        print("error: PREFECT_API_URL is not set. Scheduled runs need a Prefect server:\n"
              "  prefect server start --host 127.0.0.1\n"
              "  export PREFECT_API_URL=http://127.0.0.1:4200/api\n"
              "then run `python -m flows.deploy` again.", file=sys.stderr)
        raise SystemExit(2)
    try:
        schedule = load_schedule(Path(args.project_dir) / PARAMS_FILE)
        if not args.dry_run:
            check_server(PREFECT_API_URL.value())
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    if args.dry_run:
        print(json.dumps({"deployment": f"retrain/{args.name}", "cron": schedule.cron,
                          "timezone": schedule.timezone,
                          "parameters": deployment_parameters(args.project_dir, schedule)},
                         indent=2))
        return
    if args.work_pool:
        deployment_id = deploy_to_work_pool(args.project_dir, args.work_pool, args.name, schedule)
        print(f"deployed retrain/{args.name} ({deployment_id}) to work pool {args.work_pool!r}: "
              f"cron {schedule.cron!r} ({schedule.timezone}); its workers run it", file=sys.stderr)
        return
    deployment = build_deployment(args.project_dir, args.name, schedule)
    print(f"serving retrain/{args.name}: cron {schedule.cron!r} ({schedule.timezone}) on "
          f"{PREFECT_API_URL.value()}; Ctrl-C stops (and pauses the schedule)", file=sys.stderr)
    serve(deployment)


if __name__ == "__main__":
    main()
