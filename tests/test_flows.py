"""The retrain flow and its scheduled deployment, run on tiny copies of the project inside one
Prefect test harness (a temporary Prefect API server for the whole session). Every test here
needs that server or a `dvc repro`, so the module is slow as a whole; the flows' pieces that
need neither are tested in test_flow_units.py."""

import asyncio
import json
import subprocess
import sys

from prefectkit import PREFECT_HOME  # first: Prefect reads its settings when imported

import pytest  # noqa: E402
import yaml  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId,  # noqa: E402
                                            ArtifactFilterKey, FlowRunFilter, FlowRunFilterId)

from conftest import project_env  # noqa: E402
from flowkit import small_project, wait_for  # noqa: E402
from flows.deploy import build_deployment  # noqa: E402
from flows.lock import RetrainBusyError, retrain_lock  # noqa: E402
from flows.report import REPORT_KEY  # noqa: E402
from flows.retrain import retrain  # noqa: E402
from flows.schedule import ScheduleConfig  # noqa: E402
from flows.tasks import StageFailed  # noqa: E402
from stdformer.io import DataError  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session", autouse=True)
def harness():
    from prefect.settings import PREFECT_HOME as PREFECT_HOME_SETTING
    from prefect.settings import temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings({PREFECT_HOME_SETTING: PREFECT_HOME}), \
            prefect_test_harness(server_startup_timeout=90):
        yield


def task_runs(state) -> dict[str, object]:
    """{task run name: TaskRun} of the flow run behind a returned state."""
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run for run in runs}


def report_of(state) -> str:
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[REPORT_KEY]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    return artifact.data


@pytest.fixture(scope="module")
def first_run(tiny_project_factory):
    """A tiny project brought up to date by one retrain: (project, returned state)."""
    project = tiny_project_factory()
    state = retrain(project_dir=str(project), retries=0, return_state=True)
    return project, state


def test_retrain_runs_every_stage_as_a_task_in_pipeline_order(first_run):
    project, state = first_run
    assert state.is_completed(), state.message
    result = state.result()
    stages = result["stages"]
    assert stages.index("body") < stages.index("synthesize") < stages.index("preprocess@3dpw")
    assert stages.index("synthesize_h36m") < stages.index("preprocess@h36m")
    assert max(stages.index("preprocess@3dpw"), stages.index("preprocess@h36m")) < \
        stages.index("train@stdformer")
    assert result["status"] == "retrained" and result["stages_run"] == stages
    assert result["registered"] and result["decision"] == "promoted"     # the first version

    runs = task_runs(state)
    for stage in stages:
        run = runs[f"stage-{stage}"]
        assert run.state.is_completed() and run.run_count == 1, stage
    assert runs["dvc-status"].state.is_completed()
    # One task per stage and nothing else reproduces anything.
    assert sorted(n for n in runs if n.startswith("stage-")) == sorted(f"stage-{s}" for s in stages)
    assert (project / "data/shards/3dpw/report.json").is_file()
    assert (project / "data/shards/h36m/report.json").is_file()
    report = report_of(state)
    assert "# Retrain: retrained" in report
    assert all(f"| {stage} | reproduced |" in report for stage in stages)


def test_second_run_is_up_to_date_and_runs_no_stage(first_run):
    project, _ = first_run
    lock = (project / "dvc.lock").read_text()
    state = retrain(project_dir=str(project), retries=0, return_state=True)
    assert state.result()["status"] == "up to date" and state.result()["stages_run"] == []
    # registry.json still holds the first run's decision: this run made none
    assert state.result()["decision"] is None and not state.result()["registered"]
    assert not [name for name in task_runs(state) if name.startswith("stage-")]
    assert (project / "dvc.lock").read_text() == lock
    assert "no stage ran" in report_of(state) and "No model was registered" in report_of(state)


def test_param_override_is_validated_then_reruns_only_its_stage(first_run):
    project, _ = first_run
    params = project / "params.yaml"
    before = params.read_text()
    with pytest.raises(DataError, match=r"preprocess\.jpeg_qualty.*did you mean "
                                        r"'preprocess\.jpeg_quality'"):
        retrain(project_dir=str(project), params={"preprocess.jpeg_qualty": 80}, retries=0)
    assert params.read_text() == before  # nothing written

    state = retrain(project_dir=str(project), params={"preprocess.jpeg_quality": 80},
                    retries=0, return_state=True)
    result = state.result()
    assert result["status"] == "retrained"
    assert set(result["stages_run"][:2]) == {"preprocess@3dpw", "preprocess@h36m"}
    assert not {"body", "synthesize", "synthesize_h36m"} & set(result["stages_run"])
    assert result["overrides"] == {"preprocess.jpeg_quality": 80}
    assert yaml.safe_load(params.read_text())["preprocess"]["jpeg_quality"] == 80
    assert "stage-body" in task_runs(state)  # every stage is a task; unchanged ones skip


def test_deployment_with_cron_schedule_runs_once_through_a_runner(first_run):
    from prefect.runner import Runner

    project, _ = first_run
    deployment = build_deployment(project, name="test-nightly", schedule=ScheduleConfig(
        cron="15 4 * * *", timezone="Europe/Paris", retries=0, retry_delay_seconds=0))
    deployment_id = deployment.apply()
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment_id)
        assert [(s.schedule.cron, s.schedule.timezone) for s in stored.schedules] == \
            [("15 4 * * *", "Europe/Paris")]
        assert stored.parameters["project_dir"] == str(project.resolve())
        flow_run = client.create_flow_run_from_deployment(deployment_id)

    runner = Runner(query_seconds=1)
    runner.add_deployment(deployment)
    asyncio.run(runner.start(run_once=True))  # a coroutine in Prefect 3.8

    with get_client(sync_client=True) as client:
        done = client.read_flow_run(flow_run.id)
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    assert done.state.is_completed(), done.state.message
    assert "dvc-status" in {run.name for run in runs}  # the flow itself ran (up to date)


def test_concurrent_retrain_gets_a_clear_message(first_run):
    from dvc.repo import Repo

    project, _ = first_run
    with retrain_lock(project), pytest.raises(RetrainBusyError,
                                              match="another retrain is running"):
        retrain(project_dir=str(project), retries=0)
    # DVC's own lock (a `dvc repro` started by hand) gets the same message.
    repo = Repo(str(project))
    repo.lock.lock()
    try:
        with pytest.raises(RetrainBusyError, match="another retrain is running.*dvc"):
            retrain(project_dir=str(project), retries=0)
    finally:
        repo.lock.unlock()
        repo.close()


def test_failing_stage_fails_the_flow_with_that_stages_error(first_run):
    project, _ = first_run
    params = project / "params.yaml"
    before = params.read_text()
    # a value the stage's config refuses never reaches params.yaml or the stage
    with pytest.raises(DataError, match="preprocess.on_error: must be one of 'fail', 'skip', "
                                        "got 'bogus'"):
        retrain(project_dir=str(project), params={"preprocess.on_error": "bogus"}, retries=2)
    # a dataset root that is not a 3DPW layout: the stage's own error, exit status 2
    state = retrain(project_dir=str(project), params={"datasets.3dpw.root": "data/body"},
                    retries=2, retry_delay_seconds=0, return_state=True)
    assert state.is_failed()
    assert "stage 'preprocess@3dpw' failed: " in state.message
    assert "data/body" in state.message and "(command exited with status 2)" in state.message
    # Exit status 2 (bad input) is not transient: no retry; the failed run's override is undone.
    assert task_runs(state)["stage-preprocess@3dpw"].run_count == 1
    assert params.read_text() == before

    with pytest.raises(StageFailed, match="missing dependency /nonexistent/3dpw"):
        retrain(project_dir=str(project), params={"datasets.3dpw.root": "/nonexistent/3dpw"},
                retries=0)
    assert params.read_text() == before


FLAKY_DVC_YAML = """\
stages:
  flaky:
    cmd: python flaky.py
    deps: [flaky.py]
    outs: [out.txt]
"""

# Crashes (exit 1, like an out-of-memory kill or a dropped network mount) on its first attempt.
FLAKY_PY = """\
import pathlib, sys
attempts = pathlib.Path("attempts")
attempts.write_text(attempts.read_text() + "x" if attempts.exists() else "x")
if attempts.read_text() == "x":
    sys.exit("transient failure")
pathlib.Path("out.txt").write_text("done")
"""


def test_transient_stage_failure_is_retried(tmp_path):
    """Any dvc.yaml works: a stage that crashes once (exit 1) succeeds on the retry."""
    small_project(tmp_path, FLAKY_DVC_YAML, {
        "flaky.py": FLAKY_PY,
        "params.yaml": "schedule:\n  retries: 1\n  retry_delay_seconds: 0\n"})
    state = retrain(project_dir=str(tmp_path), return_state=True)  # retries from params.yaml
    assert state.is_completed(), state.message
    assert state.result()["stages_run"] == ["flaky"]
    assert task_runs(state)["stage-flaky"].run_count == 2
    assert (tmp_path / "out.txt").read_text() == "done"


WORK_DVC_YAML = """\
stages:
  work:
    cmd: python work.py
    deps: [work.py]
    params: [train.steps]
    outs: [out.txt]
"""

# Reads train.steps as a stage would; "runs out of memory" (exit 1) above 100 steps.
WORK_PY = """\
import pathlib, sys, yaml
steps = yaml.safe_load(open("params.yaml"))["train"]["steps"]
if steps > 100:
    sys.exit("out of memory")
pathlib.Path("out.txt").write_text(str(steps))
"""


def test_overrides_are_validated_by_the_stage_config_and_undone_when_the_run_fails(tmp_path):
    project = small_project(tmp_path, WORK_DVC_YAML, {
        "work.py": WORK_PY, "params.yaml": "train:\n  steps: 3     # training steps\n"})
    assert retrain(project_dir=str(project), retries=0)["stages_run"] == ["work"]
    params = project / "params.yaml"
    before = params.read_text()
    # `--set train.steps=abc`: refused by TrainConfig before params.yaml or any output changes
    with pytest.raises(DataError, match=r"params.yaml: train.steps: expected an integer, "
                                        r"got 'abc'"):
        retrain(project_dir=str(project), params={"train.steps": "abc"}, retries=0)
    assert params.read_text() == before and (project / "out.txt").read_text() == "3"
    # a valid override whose run fails: params.yaml is put back as it was
    state = retrain(project_dir=str(project), params={"train.steps": 1000}, retries=0,
                    return_state=True)
    assert state.is_failed() and "stage 'work' failed" in state.message
    assert params.read_text() == before


SLOW_DVC_YAML = """\
stages:
  slow:
    cmd: python slow.py
    deps: [slow.py]
    outs: [out.txt]
"""

# Reports itself, then waits for the test's "release" file; on SIGTERM it says so and keeps
# waiting for it (a stage that takes a moment to stop), so the test controls when it ends.
SLOW_PY = """\
import json, os, pathlib, signal, sys, time
lock = os.path.realpath(".dvc/tmp/retrain.lock")
fds = [os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")]
pathlib.Path("stage.json").write_text(json.dumps({
    "pid": os.getpid(), "holds_lock": lock in fds, "run": os.environ.get("STDFORMER_RETRAIN_RUN")}))

def wait_for_release():
    deadline = time.monotonic() + 180
    while not os.path.exists("release") and time.monotonic() < deadline:
        time.sleep(0.05)

def on_term(*_):
    pathlib.Path("terminated").write_text("")
    wait_for_release()
    sys.exit(1)

signal.signal(signal.SIGTERM, on_term)
wait_for_release()
pathlib.Path("out.txt").write_text("done")
"""


def test_killed_flow_holds_the_lock_until_its_processes_are_gone(tmp_path):
    """kill -9 of `python -m flows.retrain` mid-stage: the stage and Prefect's temporary API
    server are stopped, and no new retrain starts while any of them lives."""
    import signal

    from flows.guard import run_processes

    (tmp_path / "repo").mkdir()
    project = small_project(tmp_path / "repo", SLOW_DVC_YAML, {"slow.py": SLOW_PY})
    log = tmp_path / "flow.log"
    with log.open("w") as out:
        flow_process = subprocess.Popen(
            [sys.executable, "-m", "flows.retrain", "--project-dir", str(project),
             "--retries", "0"], env=project_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (project / "stage.json").is_file() or flow_process.poll() is not None,
                 "the stage to start")
        stage = json.loads((project / "stage.json").read_text())
        assert stage["holds_lock"] and stage["run"], stage
        commands = [" ".join(p.cmdline()) for p in run_processes(stage["run"])]
        assert any("uvicorn" in c and "prefect" in c for c in commands), commands
        flow_process.send_signal(signal.SIGKILL)
        flow_process.wait()
        with pytest.raises(RetrainBusyError, match="another retrain is running"):
            with retrain_lock(project):
                pass
        wait_for(lambda: (project / "terminated").exists(), "the guard to stop the stage", 60)
        with pytest.raises(RetrainBusyError, match=f"flow process {flow_process.pid} has ended.*"
                                                   f"{stage['pid']}"):
            with retrain_lock(project):
                pass
        (project / "release").write_text("")
        wait_for(lambda: not run_processes(stage["run"]), "the run's processes to end", 60)
    finally:
        flow_process.kill()
        (project / "release").write_text("")
    assert "stopping its processes" in log.read_text()
    state = retrain(project_dir=str(project), retries=0, return_state=True)
    assert state.is_completed() and (project / "out.txt").read_text() == "done"
