"""Bad params never reach DVC: every section an override can touch is checked as its stage loads
it, params.yaml is read within limits (size, YAML alias expansion) by the flow and `make repro`
before DVC sees it, long values are cut in messages, and what a killed retrain leaves (its
overrides, a broken DVC rwlock) is put right."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import project_env
from flowkit import small_project
from flows.leftovers import (JOURNAL_FILE, RWLOCK_FILE, repair_rwlock, restore_from_journal,
                             write_params_journal)
from flows.overrides import apply_overrides, check_overrides, check_sections, parse_set
from stdformer.config import PARAMS_MAX_BYTES, read_params
from stdformer.io import DataError

REPO = Path(__file__).resolve().parents[1]

# 9 levels of 9 aliases: a few hundred bytes, 9**9 strings once expanded
ALIAS_BOMB = "".join(
    [f"a0: &a0 [{', '.join(['lol'] * 9)}]\n"] +
    [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)])


def retrain_cli(project: Path, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**project_env(), "PREFECT_HOME": str(tmp_path / "prefect-home")}
    return subprocess.run([sys.executable, "-m", "flows.retrain", "--project-dir", str(project),
                           "--retries", "0", *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("name", ["params.yaml", "configs/3dpw.yaml"])
def test_every_section_is_checked_as_its_stage_loads_it(name):
    params = read_params(REPO / name)
    check_sections(params, params, name)                  # the shipped files pass
    for section in params:
        bad = yaml.safe_load(yaml.safe_dump(params))
        entry = {"variants": "stdformer", "datasets": "3dpw"}.get(section)  # one of their entries
        target = bad[section] if entry is None else bad[section][entry]
        target["no_such_key"] = 1
        with pytest.raises(DataError, match=f"{section}.*no_such_key.*unknown key"):
            check_sections(bad, [section], name)


def test_params_from_before_datasets_get_one_line_naming_the_new_place():
    """Issue 25: `preprocess.dataset_root` / `preprocess.source` moved to `datasets:`."""
    params = read_params(REPO / "params.yaml")
    for key, value in (("dataset_root", "/data/3dpw"), ("source", "3dpw"), ("stride", {})):
        old = {**params, "preprocess": {**params["preprocess"], key: value}}
        with pytest.raises(DataError, match=rf"^old.yaml: preprocess\.{key}: moved: each "
                           r"dataset is now an entry of `datasets:` \(.*docs/datasets.md\)$"):
            check_sections(old, ["preprocess"], "old.yaml")


DEMO_DVC_YAML = """\
stages:
  demo:
    cmd: python demo.py
    deps: [demo.py]
    params: [demo]
    outs:
      - plots/demo:
          cache: false
"""
DEMO_PARAMS = ("demo:\n  model: models:/stdformer@champion\n  split: test\n  sequence: null\n"
               "  predict: {glb: false}\n")


def test_bad_demo_override_is_one_line_and_touches_no_output(tmp_path):
    project = small_project(tmp_path / "repo", DEMO_DVC_YAML, {
        "params.yaml": DEMO_PARAMS,
        "demo.py": "import sys; sys.exit('error: the stage ran')\n",
        "plots/demo/overlay.mp4": "an earlier run's video"})
    done = retrain_cli(project, "--set", "demo.sequence=5", tmp_path=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        f"error: {project / 'params.yaml'}: demo.sequence: expected a string, got 5"]
    assert (project / "plots/demo/overlay.mp4").read_text() == "an earlier run's video"
    assert (project / "params.yaml").read_text() == DEMO_PARAMS


def test_params_bombs_are_refused_before_dvc_reads_them(tmp_path):
    project = small_project(tmp_path / "repo", "stages:\n  work:\n    cmd: python -c "
                            "\"open('out.txt', 'w')\"\n    params: [a0]\n    outs: [out.txt]\n",
                            {"params.yaml": ALIAS_BOMB})
    with pytest.raises(DataError, match="aliases expand to more than 100,000 values"):
        read_params(project / "params.yaml")
    with pytest.raises(DataError, match=r"--set train.augment: YAML aliases expand"):
        parse_set(["train.augment=[" + ALIAS_BOMB.replace("\n", ", ").replace(": ", ": {")
                   .replace("], ", "]}, ") + "]"])
    big = tmp_path / "big.yaml"
    big.write_text("train:\n  note: " + "x" * PARAMS_MAX_BYTES + "\n")
    with pytest.raises(DataError, match="bytes, more than a params file may hold"):
        read_params(big)

    # the flow: one line, before Prefect or DVC start
    done = retrain_cli(project, tmp_path=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr[-3000:]
    assert "alias bomb" in done.stderr and "params.yaml" in done.stderr
    # make repro: the check runs before `dvc repro` (the venv of these tests, as built)
    venv = Path(sys.executable).parent.parent
    env = {**project_env(), "PYTHONPATH": str(REPO)}
    done = subprocess.run(["make", "-s", "-f", str(REPO / "Makefile"), "-o",
                           f"{venv}/.installed", f"VENV={venv}", "repro"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and not (project / "out.txt").exists()
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "alias bomb" in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr


def test_long_values_are_cut_in_messages(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  steps: 3\n")
    with pytest.raises(DataError) as err:
        check_overrides(params, {"train.steps": "x" * 5_000_000})
    assert len(str(err.value)) < 400 and "(5,000,002 characters)" in str(err.value)
    with pytest.raises(DataError) as err:
        check_overrides(params, {"train." + "k" * 1_000_000: 1})
    assert len(str(err.value)) < 1000 and "unknown key" in str(err.value)
    with pytest.raises(DataError) as err:
        parse_set(["x" * 1_000_000])
    assert len(str(err.value)) < 400


def test_a_dead_runs_overrides_are_undone_unless_edited_since(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  steps: 3   # committed\n")
    original = params.read_bytes()

    def killed_run(overrides):
        """A run that journaled and applied its overrides, then died."""
        apply_overrides(params, overrides, before_write=lambda text, changed:
                        write_params_journal(tmp_path, params, original, text, changed))

    killed_run({"train.steps": 12})
    assert "steps: 12" in params.read_text() and (tmp_path / JOURNAL_FILE).is_file()
    warnings = []
    assert restore_from_journal(tmp_path, warnings.append)
    assert params.read_bytes() == original and not (tmp_path / JOURNAL_FILE).exists()
    assert len(warnings) == 1 and "did not finish" in warnings[0] and \
        "train.steps=12" in warnings[0]
    assert not restore_from_journal(tmp_path, warnings.append) and len(warnings) == 1

    killed_run({"train.steps": 12})
    params.write_text("train:\n  steps: 40   # edited by hand since\n")
    assert not restore_from_journal(tmp_path, warnings.append)
    assert "steps: 40" in params.read_text() and "edited since" in warnings[-1]


def test_a_broken_dvc_rwlock_is_removed_when_no_dvc_process_lives(tmp_path):
    project = small_project(tmp_path / "repo", "stages:\n  work:\n    cmd: echo\n"
                            "    deps: [dep.txt]\n    outs: [out.txt]\n", {"dep.txt": ""})
    (project / RWLOCK_FILE).write_text("")                 # killed while DVC rewrote it
    status = subprocess.run(["dvc", "status"], cwd=project, env=project_env(),
                            capture_output=True, text=True)
    assert status.returncode != 0 and "corrupted" in status.stderr
    warnings = []
    # a stage command DVC is running for this project: it may be rewriting the file now
    stage = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                             env={**os.environ, "DVC_ROOT": str(project.resolve())})
    try:
        assert not repair_rwlock(project, warnings.append)
        assert (project / RWLOCK_FILE).exists() and not warnings
    finally:
        stage.kill()
        stage.wait()
    assert repair_rwlock(project, warnings.append)
    assert len(warnings) == 1 and "rwlock: empty" in warnings[0]
    status = subprocess.run(["dvc", "status"], cwd=project, env=project_env(),
                            capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
