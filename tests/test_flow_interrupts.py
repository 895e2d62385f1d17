"""`python -m flows.retrain` stopped at random moments (SIGTERM, as `timeout` and schedulers send
it, and kill -9) on a tiny two-stage DVC project: every time, DVC stays usable, params.yaml is
the committed one again, the stage is stopped and nothing is retried.

The flow processes share one Prefect API server started here (a temporary server per run would
take most of the test's time)."""

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import project_env
from flowkit import small_project, wait_for
from flows.leftovers import JOURNAL_FILE
from flows.lock import RetrainBusyError, retrain_lock

pytestmark = pytest.mark.slow

DVC_YAML = """\
stages:
  work:
    cmd: python stage.py work
    deps: [stage.py]
    params: [train.steps]
    outs: [work.txt]
  after:
    cmd: python stage.py after
    deps: [stage.py, work.txt]
    outs: [after.txt]
"""

# Notes each start (pid) in <name>.started, reads train.steps as a stage does, takes a moment.
STAGE_PY = """\
import os, pathlib, sys, time, yaml
name = sys.argv[1]
with open(f"{name}.started", "a") as f:
    f.write(f"{os.getpid()}\\n")
steps = yaml.safe_load(open("params.yaml"))["train"]["steps"]
time.sleep(1.5)
pathlib.Path(f"{name}.txt").write_text(str(steps))
"""

COMMITTED_PARAMS = "train:\n  steps: 3     # the committed value\n"


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """A Prefect API server for the flow processes: its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path_factory.mktemp("prefect-home")
    env = {**project_env(), "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "0",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "error"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        assert server.poll() is None, "the Prefect server exited"
        try:
            return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, "the Prefect API server", 120)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def project(tmp_path):
    return small_project(tmp_path / "repo", DVC_YAML,
                         {"stage.py": STAGE_PY, "params.yaml": COMMITTED_PARAMS}, commit=True)


def starts(project, stage: str) -> list[int]:
    path = project / f"{stage}.started"
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


MOMENTS = ("starting", "overrides journaled", "stage 'work' running", "DVC committing 'work'",
           "stage 'after' running")


def moments(project, t0: float) -> dict:
    """MOMENTS of a run started at `t0`, each a condition that holds from that moment on."""
    seen = {stage: len(starts(project, stage)) for stage in ("work", "after")}

    def newer(name: str) -> bool:
        path = project / name
        return path.exists() and path.stat().st_mtime > t0
    return {
        "starting": lambda: True,                          # imports, checks, Prefect
        "overrides journaled": lambda: (project / JOURNAL_FILE).exists(),
        "stage 'work' running": lambda: len(starts(project, "work")) > seen["work"],
        "DVC committing 'work'": lambda: newer("work.txt"),
        "stage 'after' running": lambda: len(starts(project, "after")) > seen["after"],
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:        # a zombie has ended
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def lock_free(project) -> bool:
    try:
        with retrain_lock(project):
            return True
    except RetrainBusyError:
        return False


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_signal_at_random_moments_leaves_dvc_usable_and_params_committed(project, prefect_api,
                                                                         tmp_path, how):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    env = {**project_env(), "PREFECT_API_URL": prefect_api}
    for round_, moment in enumerate(MOMENTS):
        condition = moments(project, time.time())[moment]
        before = {stage: len(starts(project, stage)) for stage in ("work", "after")}
        log = tmp_path / f"flow-{how}-{round_}.log"
        with log.open("w") as out:
            flow = subprocess.Popen(
                [sys.executable, "-m", "flows.retrain", "--project-dir", str(project),
                 "--set", "train.steps=12", "--retries", "2"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        where = f"{how} at '{moment}' (seed {seed}, round {round_}; log {log})"
        try:
            wait_for(lambda c=condition, f=flow: c() or f.poll() is not None, moment)
            time.sleep(rng.uniform(0, 3.0 if moment == "starting" else 0.6))
            assert flow.poll() is None, f"the run ended before {where}: {log.read_text()[-3000:]}"
            if how == "SIGKILL":
                flow.kill()
            elif round_ % 2:
                os.killpg(flow.pid, signal.SIGTERM)      # as `timeout` does: the whole group
            else:
                flow.terminate()
            rc = flow.wait(timeout=120)
        finally:
            if flow.poll() is None:
                flow.kill()
                flow.wait()
        output = log.read_text()
        wait_for(lambda: lock_free(project), f"the run's guard to finish after {where}")
        if how == "SIGTERM":
            # 143: stopped cleanly; -15 only while starting, before the flow handles signals
            assert rc == 143 or (moment == "starting" and rc == -signal.SIGTERM), \
                f"{where}: exit status {rc}\n{output[-3000:]}"
            if rc == 143:
                assert "Traceback" not in output and \
                    "error: retrain stopped by SIGTERM" in output, f"{where}\n{output[-3000:]}"
            for stage in ("work", "after"):
                started = starts(project, stage)[before[stage]:]
                assert len(started) <= 1, f"{where}: stage '{stage}' retried after the signal"
                assert not any(alive(pid) for pid in started), f"{where}: stage left running"
        status = subprocess.run(["dvc", "status"], cwd=project, env=project_env(),
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, f"{where}: dvc status failed: {status.stderr}"
        assert (project / "params.yaml").read_text() == COMMITTED_PARAMS, \
            f"{where}: params.yaml kept the override\n{output[-3000:]}"
        assert not (project / JOURNAL_FILE).exists(), where


def test_sigterm_to_the_process_group_with_a_temporary_server_ends_the_run(project, tmp_path):
    """`timeout` signals the whole process group. Prefect's temporary API server must not die
    with the flow before the flow has ended: the flow would retry its API calls for minutes
    (the limit below only catches such a hang; it is no speed target)."""
    env = {**project_env(), "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    log = tmp_path / "flow.log"
    with log.open("w") as out:
        flow = subprocess.Popen(
            [sys.executable, "-m", "flows.retrain", "--project-dir", str(project),
             "--set", "train.steps=12"], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_for(lambda: starts(project, "work") or flow.poll() is not None, "the stage")
        os.killpg(flow.pid, signal.SIGTERM)
        rc = flow.wait(timeout=90)
    finally:
        if flow.poll() is None:
            os.killpg(flow.pid, signal.SIGKILL)
            flow.wait()
    output = log.read_text()
    assert rc == 143 and "error: retrain stopped by SIGTERM" in output, output[-3000:]
    assert "Traceback" not in output and "connection attempts failed" not in output.lower()
    assert (project / "params.yaml").read_text() == COMMITTED_PARAMS
    wait_for(lambda: lock_free(project), "the retrain lock")
