"""Team mode end to end: two clones ("machines" A and B, each its own PREFECT_HOME) sharing one
set of services started by flows/team.py: MLflow on PostgreSQL with served artifacts, a Prefect
server with a process worker, a DVC remote in a shared directory."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from prefectkit import PREFECT_HOME  # noqa: F401  first: Prefect reads its settings on import

import pytest  # noqa: E402

from conftest import make_tiny_project, project_env  # noqa: E402
from flows.team import Team, port_open, postgres_bin, stop_group  # noqa: E402
from stdformer.registry.store import CHAMPION, ModelRegistry  # noqa: E402
from stdformer.tracking import TrackingUnavailableError, check_tracking  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(postgres_bin() is None,
                                 reason="no PostgreSQL binaries (initdb, pg_ctl) on this machine")]

GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
# B's retrain: more steps, the mesh trained from the first (the tiny profile's 3 steps are all
# joint warm-up), which lowers PA-MPJPE by about 0.5 mm: the gate promotes it.
RETRAIN = {"train.steps": 8, "train.joint_warmup_steps": 0}
CROP = 32   # conftest's tiny crop size (another size would only be resized, with a warning)


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """The services up for the module; always down after it, with no process or port left."""
    services = Team(tmp_path_factory.mktemp("team") / ".team", log=lambda msg: None)
    try:
        state = services.up()
        yield services, state
    finally:
        state = services.load()
        pids = dict(state.pids)
        services.down()
    assert not [p for p in (state.pg_port, state.mlflow_port, state.prefect_port)
                if port_open(p)], "a port of the team services is still open"
    assert not [pid for pid in pids.values() if Path(f"/proc/{pid}").exists()
                and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]]
    assert not (services.pg_data / "postmaster.pid").exists(), "PostgreSQL still running"
    shutil.rmtree(services.pg_data.parent, ignore_errors=True)   # outside tmp when root


def machine_env(services, home: Path) -> dict:
    env = project_env()
    env.update(services.env_exports(services.load()), PREFECT_HOME=str(home))
    env.pop("PYTHONPATH", None)
    return env


def run(cmd, cwd, env, timeout=600) -> str:
    done = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def test_two_machines_share_data_registry_and_scheduled_retrain(team, tmp_path, monkeypatch):
    services, state = team
    uri = state.tracking_uri
    remote = services.dir / "dvc-remote"

    # Machine A reproduces the tiny pipeline against the server, commits and pushes.
    a = make_tiny_project(tmp_path / "A")
    env_a = machine_env(services, tmp_path / "prefect-A")
    run(["dvc", "remote", "add", "-d", "team", str(remote)], a, env_a)
    run(["dvc", "repro"], a, env_a)
    run([*GIT, "add", "-A"], a, env_a)
    run([*GIT, "add", "-f", "metrics/registry.json"], a, env_a)   # the shared registry's record
    run([*GIT, "commit", "-qm", "repro"], a, env_a)
    run(["dvc", "push"], a, env_a)
    registry = ModelRegistry(uri, "stdformer")
    assert registry.aliases() == {CHAMPION: "1"}
    first = registry.version(1)
    leaked = [text for text in (first.source, first.description, json.dumps(first.tags),
                                registry.client.get_run(first.run_id).info.artifact_uri)
              if str(a) in text or str(tmp_path) in text]
    assert not leaked, f"a path of clone A is in the registry: {leaked}"

    # Machine B clones, pulls, has nothing to rerun, and sees A's champion.
    b = tmp_path / "B"
    env_b = machine_env(services, tmp_path / "prefect-B")
    run(["git", "clone", "-q", str(a), str(b)], tmp_path, env_b)
    run(["dvc", "pull"], b, env_b)
    assert (b / "models/stdformer.pt").read_bytes() == (a / "models/stdformer.pt").read_bytes()
    status = run(["dvc", "status"], b, env_b)
    assert "up to date" in status, status
    assert ModelRegistry(uri, "stdformer").aliases()[CHAMPION] == "1"

    # B's scheduled retrain deployment, run by the team's worker (not this process).
    run([sys.executable, "-m", "flows.deploy", "--project-dir", str(b), "--work-pool", "team",
         "--name", "b-nightly"], b, env_b)
    out = run(["prefect", "deployment", "run", "retrain/b-nightly", "--watch",
               "--params", json.dumps({"params": RETRAIN, "retries": 0})], b, env_b, timeout=900)
    assert "Completed" in out, out
    record = json.loads((b / "metrics/registry.json").read_text())
    assert record["version"] == 2 and record["promoted"], record
    assert ModelRegistry(uri, "stdformer").aliases()[CHAMPION] == "2"    # what A sees

    # Predict in A: the champion comes from the server's artifact store.
    import mlflow.pyfunc
    import numpy as np

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model("models:/stdformer@champion")
    clip_len = model.unwrap_python_model().model.cfg.clip_len
    out = model.predict(np.zeros((1, clip_len, CROP, CROP, 3), np.uint8))
    assert out["joints_h36m"].shape[-2:] == (17, 3)

    # Fault: the database stops in the middle of a registration.
    from stdformer.registry import RegisterConfig, RegisterPaths, register

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    original = ModelRegistry.create_version

    def database_dies_first(self, *args, **kwargs):
        services.stop_postgres()
        return original(self, *args, **kwargs)

    paths = RegisterPaths(model=a / "models/stdformer.pt", body=a / "data/body",
                          eval=a / "metrics/eval.json", lock=a / "dvc.lock",
                          data=a / "data/shards", out=tmp_path / "registry.json")
    params = {"preprocess": {"crop_size": CROP}}
    monkeypatch.setattr(ModelRegistry, "create_version", database_dies_first)
    with pytest.raises(TrackingUnavailableError, match="tracking server failed while creating "
                                                       "the model version; no version was"):
        register(paths, RegisterConfig(), params, tracking_uri=uri, artifact_root=a / "x")
    with pytest.raises(TrackingUnavailableError, match="cannot use its backend store"):
        check_tracking(uri)                       # and the next one stops before any work
    monkeypatch.setattr(ModelRegistry, "create_version", original)
    assert not (tmp_path / "registry.json").exists()

    # Database and server restarted: the registry continues where it was.
    services.start_postgres()
    stop_group(services.load().pids["mlflow"])
    services.up()
    assert [str(mv.version) for mv in ModelRegistry(uri, "stdformer").versions()] == ["1", "2"]
    again = register(paths, RegisterConfig(), params, tracking_uri=uri, artifact_root=a / "x")
    assert again["version"] == 3 and again["champion_version"] in (2, 3)

