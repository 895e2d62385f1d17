"""The committed dvc.lock is the proof of reproducibility: it must be what the code and params
produce. Two checks on a copy of the project with the committed dvc.lock (marked slow: the second
runs the data stages, about 2 minutes on 2 cores):

* every stage's recorded code and params are the current ones (`dvc status`): a change that
  moves outputs without a new dvc.lock fails here;
* `body`, `synthesize`, `synthesize_h36m` and each `preprocess@<dataset>` rerun from scratch give the committed output hashes, on
  whatever machine runs the suite.

The training stages take minutes each; `make lock-check` reruns the whole pipeline in a fresh
clone and compares all of dvc.lock (docs/reproducibility.md).
"""

import json
import subprocess

import pytest
import yaml

from conftest import REPO, copy_project, dvc

DATA_STAGES = ("body", "synthesize", "synthesize_h36m", "preprocess@3dpw", "preprocess@h36m")


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("lock") / "repo", with_lock=True)


def stale_entries(status: dict, produced: set[str]) -> dict:
    """What `dvc status --json` reports beyond outputs that are simply not there yet: changed
    code or params, a changed command, a stage missing from the lock."""
    stale = {}
    for stage, entries in status.items():
        for entry in entries:
            if isinstance(entry, str):                       # "changed command", ...
                stale.setdefault(stage, {})[entry] = True
                continue
            for path, state in (entry.get("changed deps") or {}).items():
                absent_output = state == "deleted" and any(
                    path == out or path.startswith(out + "/") or out.startswith(path + "/")
                    for out in produced)
                if not absent_output:
                    stale.setdefault(stage, {})[path] = state
    return stale


@pytest.mark.slow  # fails while a code change awaits its `dvc repro`; CI and make test run it
def test_committed_lock_records_the_current_code_and_params(committed):
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    produced = {out["path"] for stage in lock.values() for out in stage.get("outs", [])}
    status = json.loads(dvc(committed, "status", "--json") or "{}")
    stale = stale_entries(status, produced)
    assert not stale, ("dvc.lock does not match the code and params (run `dvc repro` and "
                       f"commit dvc.lock): {stale}")
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    names = {f"{n}@{k}" for n, s in stages.items() if "foreach" in s     # foreach: ${section}
             for k in params[s["foreach"].strip("${}")]}
    names |= {n for n, s in stages.items() if "foreach" not in s}
    assert names == set(lock), "dvc.lock and dvc.yaml name different stages"


@pytest.mark.slow
def test_data_stages_reproduce_the_committed_hashes(committed):
    want = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    dvc(committed, "repro", *DATA_STAGES[-2:])
    got = yaml.safe_load((committed / "dvc.lock").read_text())["stages"]
    for stage in DATA_STAGES:
        assert got[stage]["outs"] == want[stage]["outs"], (
            f"{stage}: rerun from scratch, its outputs differ from dvc.lock's")


def test_the_status_check_sees_a_stale_lock():
    """A changed code dependency or param is reported; a missing upstream output is not."""
    status = {"evaluate": [{"changed deps": {"models": "deleted"}}],   # a folder of outputs
              "train@stdformer": [{"changed deps": {"data/shards": "deleted",
                                                    "stdformer/model": "modified",
                                                    "params.yaml": {"train.steps": "modified"}}},
                                  {"changed outs": {"models/stdformer.pt": "not in cache"}}],
              "demo": ["changed command"]}
    stale = stale_entries(status, produced={"data/shards", "models/stdformer.pt"})
    assert stale == {"train@stdformer": {"stdformer/model": "modified",
                                         "params.yaml": {"train.steps": "modified"}},
                     "demo": {"changed command": True}}


def test_no_record_of_an_outside_effect_is_committed():
    """A `persist: true` output (the registration record) stands for state outside the project
    (the MLflow store). Committed, a fresh clone would find it up to date, skip `register`, and
    `demo` would find no champion in the clone's empty store."""
    persisted = set()
    for stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values():
        for out in (stage.get("do") or stage).get("outs", []):
            if isinstance(out, dict) and any(o.get("persist") for o in out.values()):
                persisted |= set(out)
    assert "metrics/registry.json" in persisted
    tracked = subprocess.run(["git", "ls-files", *sorted(persisted)], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    assert not tracked, f"committed, so a fresh clone skips the stage that writes them: {tracked}"


def _stale_after_editing(project, pattern_groups) -> dict:
    """Append a blank line to every project file matching the globs, then the stale stages."""
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    produced = {out["path"] for stage in lock.values() for out in stage.get("outs", [])}
    edited = [p for pattern in pattern_groups for p in sorted(project.glob(pattern))]
    assert edited, pattern_groups
    for path in edited:
        path.write_text(path.read_text() + "\n")
    return stale_entries(json.loads(dvc(project, "status", "--json") or "{}"), produced)


@pytest.mark.slow
def test_editing_reports_inference_registry_or_flows_never_retrains(tmp_path):
    """The cache's promise: a whitespace edit of code a stage does not run leaves the stage
    cached. Inference, registry and flow edits leave training and evaluation cached (register
    and demo run that code, so they show the check is live); report and overlay edits leave
    training cached and re-run evaluation."""
    project = copy_project(tmp_path / "repo", with_lock=True)
    stale = _stale_after_editing(project, ["stdformer/inference/*.py", "stdformer/registry/*.py",
                                           "stdformer/serving.py", "flows/*.py"])
    assert "train@stdformer" not in stale and "evaluate" not in stale, stale
    assert "register" in stale and "demo" in stale
    stale = _stale_after_editing(project, ["stdformer/evaluation/overlays.py",
                                           "stdformer/evaluation/report.py"])
    assert "train@stdformer" not in stale, stale
    assert "evaluate" in stale
