"""Helpers of the flow tests (test_flows, test_flow_interrupts, test_params_guard): a tiny git +
DVC project, and polling for something another process does."""

import subprocess
import time
from pathlib import Path

from conftest import project_env

_GIT_AS_TEST = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def small_project(root, dvc_yaml: str, files: dict[str, str], commit: bool = False) -> Path:
    """A git + DVC project at `root` with `dvc.yaml` and `files` (name -> text; folders made),
    committed when `commit` (so `git show HEAD:<file>` holds the committed text)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    env = project_env()
    (root / "dvc.yaml").write_text(dvc_yaml)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    commands = [["git", "init", "-q"], ["dvc", "init", "-q"]]
    if commit:
        commands += [[*_GIT_AS_TEST, "add", "-A"], [*_GIT_AS_TEST, "commit", "-qm", "init"]]
    for cmd in commands:
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return root


def wait_for(condition, what: str, timeout_s: float = 180):
    """Poll `condition` until it holds (a hang detector, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
