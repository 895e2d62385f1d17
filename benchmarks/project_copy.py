"""A copy of the pipeline project (git + DVC) with params overrides, for tests and benchmarks
that run `dvc repro` as users do without touching the checkout's data, models or dvc.lock.

    from project_copy import copy_project
    copy_project(dest, {"train": {"steps": 30}})     # deep-merged over params.yaml
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = (deep_merge(out[key], value)
                    if isinstance(value, dict) and isinstance(out.get(key), dict) else value)
    return out


def project_env() -> dict:
    """Environment for running the project's commands in a subprocess (venv first on PATH)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.update(DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", PYTHONHASHSEED="0")
    return env


def dvc(project: str | Path, *args: str, timeout: float | None = None) -> str:
    """Run `dvc ARGS` in `project` (project_env); its stdout, or AssertionError with the output."""
    done = subprocess.run(["dvc", *args], cwd=project, env=project_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def stage_command(name: str, project: str | Path = REPO) -> list[str]:
    """The argv of a stage as `dvc.yaml` runs it (the first foreach item for a foreach stage),
    with this interpreter for `python`."""
    import shlex

    stage = yaml.safe_load((Path(project) / "dvc.yaml").read_text())["stages"][name]
    if "foreach" in stage:
        key = next(iter(yaml.safe_load((Path(project) / "params.yaml").read_text())["variants"]))
        cmd = stage["do"]["cmd"].replace("${key}", key)
    else:
        cmd = stage["cmd"]
    argv = shlex.split(cmd)
    return [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]


def copy_project(dest: str | Path, overrides: dict | None = None, with_lock: bool = False
                 ) -> Path:
    """Copy the pipeline (dvc.yaml, stages/, stdformer/, flows/) into a fresh git + DVC repo at
    `dest` with `overrides` deep-merged over params.yaml; returns dest. `with_lock`: also the
    checkout's dvc.lock, and params.yaml byte for byte (no overrides), so DVC in the copy
    compares the committed lock with the code and params."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("stages", "stdformer", "flows"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, dest / name)
    (dest / "data").mkdir(exist_ok=True)
    shutil.copy(REPO / "data" / ".gitignore", dest / "data" / ".gitignore")
    if with_lock:
        if overrides:
            raise ValueError("with_lock copies params.yaml as it is: no overrides")
        for name in ("params.yaml", "dvc.lock"):
            shutil.copy(REPO / name, dest / name)
    else:
        params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), overrides or {})
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = project_env()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)
    return dest
