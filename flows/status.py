"""DVC plumbing for the flow: an open repo, the stage order, `dvc status` in short lines."""

from __future__ import annotations

import contextlib
from pathlib import Path

from flows.lock import RetrainBusyError


def dvc_busy(project: Path, error: Exception) -> RetrainBusyError:
    return RetrainBusyError(
        f"another retrain is running in {project} (or another `dvc` command: the DVC "
        f"repository is locked); this run stopped - try again when it has finished ({error})")


@contextlib.contextmanager
def dvc_repo(project: Path):
    """An open `dvc.repo.Repo` with the working directory inside it (DVC assumes that)."""
    from dvc.lock import LockError
    from dvc.repo import Repo

    with contextlib.chdir(project):
        try:
            with Repo(".") as repo:
                yield repo
        except LockError as e:
            raise dvc_busy(project, e) from e


def pipeline_order(repo) -> list[str]:
    """Stage names (`addressing`) in the order `dvc repro` runs them: DVC's plan of its graph
    (dependencies first; frozen stages cut from their dependencies)."""
    from dvc.repo.reproduce import get_active_graph, plan_repro

    return [stage.addressing for stage in plan_repro(get_active_graph(repo.index.graph))]


def summarize_status(entries: list) -> list[str]:
    """One `dvc status` entry list -> short lines such as 'params.yaml: preprocess modified'."""
    lines = []
    for entry in entries:
        if isinstance(entry, dict):
            for kind, changes in entry.items():
                if isinstance(changes, dict):
                    for path, state in changes.items():
                        if isinstance(state, dict):
                            state = ", ".join(f"{k} {v}" for k, v in state.items())
                        lines.append(f"{path}: {state}")
                else:
                    lines.append(f"{kind}: {changes}")
        else:
            lines.append(str(entry))
    return lines


def missing_dependencies(repo, stage_name: str) -> list[str]:
    (stage,) = repo.stage.collect(stage_name)
    return [str(dep.def_path) for dep in stage.deps if not dep.exists]
