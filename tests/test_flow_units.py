"""The retrain flow's pieces that need no Prefect server and no `dvc repro`: parameter
overrides, the schedule section, stage error lines, the report, Prefect's settings and the
deploy command's refusal of an unreachable server. The flow itself runs in test_flows.py."""

import json
import subprocess
import sys

from prefectkit import PREFECT_HOME  # noqa: F401 (first: Prefect reads its settings when imported)

import pytest  # noqa: E402
import yaml  # noqa: E402

from conftest import project_env  # noqa: E402
from flows.overrides import apply_overrides  # noqa: E402
from flows.report import read_decision, render_report  # noqa: E402
from flows.schedule import ScheduleConfig, load_schedule  # noqa: E402
from flows.tasks import stage_error_message  # noqa: E402
from stdformer.io import DataError  # noqa: E402


def test_prefect_settings_are_set_before_prefect_is_imported():
    code = ("import flows.retrain\n"
            "from prefect.settings import get_current_settings\n"
            "server = get_current_settings().server\n"
            "print(server.analytics_enabled, server.ephemeral.startup_timeout_seconds)\n")
    env = {k: v for k, v in project_env().items() if not k.startswith("PREFECT_SERVER_")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.split() == ["False", "90"], done.stderr[-2000:]


def test_deploy_against_an_unreachable_server_is_one_line_and_exit_2(tmp_path, capsys):
    import socket

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deploy import main as deploy_main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    with temporary_settings({PREFECT_API_URL: url}), pytest.raises(SystemExit) as done:
        deploy_main(["--project-dir", str(tmp_path)])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: PREFECT_API_URL={url}: Prefect server not reachable")
    assert len(err.splitlines()) == 1 and "serving" not in err


def test_overrides_keep_comments_and_refuse_unknown_keys(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("datasets:\n  3dpw:\n    layout: 3dpw\n    root: data/raw  # your 3DPW "
                      "root\n    stride: {}\nbody:\n  h36m_regressor: null\n")
    assert apply_overrides(params, {"datasets.3dpw.root": "/data/3dpw",
                                    "datasets.3dpw.stride": {"train": 4}}) == \
        {"datasets.3dpw.root": "/data/3dpw", "datasets.3dpw.stride": {"train": 4}}
    text = params.read_text()
    assert "root: /data/3dpw # your 3DPW root" in text and "h36m_regressor: null" in text
    assert yaml.safe_load(text)["datasets"]["3dpw"]["stride"] == {"train": 4}
    assert apply_overrides(params, {"datasets.3dpw.root": "/data/3dpw"}) == {}
    for bad in ("datasets.3dpw.stride.train.x", "dataset.3dpw.root", "datasets.3dpw.missing"):
        with pytest.raises(DataError, match="datasets|not a mapping"):
            apply_overrides(params, {bad: 1})
    assert params.read_text() == text


def test_overrides_check_the_synthetic_h36m_section(tmp_path):
    """A `synthesize_h36m.*` override is checked as the stage reads it, before it is written."""
    params = tmp_path / "params.yaml"
    params.write_text("synthesize_h36m:\n  size: 256\n")
    with pytest.raises(DataError, match="synthesize_h36m: size must be in 32..2048"):
        apply_overrides(params, {"synthesize_h36m.size": 10})
    assert params.read_text() == "synthesize_h36m:\n  size: 256\n"


def test_schedule_section_defaults_and_validation(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("body: {}\n")
    assert load_schedule(params) == ScheduleConfig()
    params.write_text("schedule:\n  cron: '*/30 * * * *'\n  params: {preprocess.workers: 2}\n")
    cfg = load_schedule(params)
    assert cfg.cron == "*/30 * * * *" and cfg.params == {"preprocess.workers": 2}
    for bad, field in (("cron: 'every day'", "schedule"), ("timezone: Mars/Olympus", "schedule"),
                       ("retries: -1", "schedule"), ("retires: 1", "schedule.retires")):
        params.write_text(f"schedule:\n  {bad}\n")
        with pytest.raises(DataError) as err:
            load_schedule(params)
        assert err.value.field == field, bad


def test_stage_error_message_prefers_the_stages_own_line():
    assert stage_error_message(["Running stage 'x':", "> python -m stages.x",
                                "error: data/x.pkl: poses: contains NaN"]) == \
        "data/x.pkl: poses: contains NaN"
    assert stage_error_message(["Traceback (most recent call last):", '  File "x.py"',
                                "RuntimeError: CUDA out of memory"]) == \
        "RuntimeError: CUDA out of memory"
    assert stage_error_message(["all good"]) is None


def test_report_compares_metrics_with_the_champion_and_shows_the_decision(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/eval.json").write_text(json.dumps(
        {"overall": {"stdformer": {"mpjpe": 80.0, "pa_mpjpe": 50.0}},
         "per_sequence": {"stdformer": {"seq_a": {"mpjpe": 70.0}}}}))
    result = {"status": "retrained", "force": False, "overrides": {"train.steps": 2}}
    stages = [{"stage": "train", "ran": True, "seconds": 12.0},
              {"stage": "body", "ran": False, "seconds": 0.1}]
    report = render_report(result, stages, tmp_path)
    assert "| train | reproduced | 12.0 |" in report and "| body | unchanged, skipped |" in report
    # Before a register stage: eval.json's overall section, no champion, no decision.
    assert "| stdformer.mpjpe | 80 | - | - |" in report and "seq_a" not in report
    assert "No model was registered in this run" in report and "`train.steps=2`" in report

    # The layout stages/register.py writes: the gate's metrics for candidate and champion.
    (tmp_path / "metrics/registry.json").write_text(json.dumps(
        {"version": 3, "decision": "champion", "promoted": True, "reason": "mpjpe 80 < 85",
         "candidate": {"version": 3, "metrics": {"mpjpe": 80.0, "pa_mpjpe": 50.0}},
         "champion": {"version": 2, "metrics": {"mpjpe": 85.0, "mpvpe": 99.0}}}))
    report = render_report(result, stages, tmp_path)
    assert "**promoted**" not in report          # registry.json of an earlier run: no decision
    report = render_report({**result, "registered": True}, stages, tmp_path)
    assert "| mpjpe | 80 | 85 | -5 |" in report and "| pa_mpjpe | 50 | - | - |" in report
    assert "| mpvpe | - | 99 | - |" in report
    assert "**promoted** (version 3 is now 'champion'): mpjpe 80 < 85" in report
    assert read_decision({"promoted": False, "decision": "challenger", "version": 4})[
        "decision"] == "not promoted"


def test_team_down_without_services_and_a_broken_state_file(tmp_path):
    """`flows.team down` where nothing was started is a no-op; an unreadable state file is one
    `error:` line naming it, exit status 2, before anything is started or stopped."""
    team_dir = tmp_path / ".team"
    cmd = [sys.executable, "-m", "flows.team"]
    done = subprocess.run([*cmd, "down", "--dir", str(team_dir)], env=project_env(),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    team_dir.mkdir()
    (team_dir / "state.json").write_text("{not json")
    for action in ("up", "down"):
        done = subprocess.run([*cmd, action, "--dir", str(team_dir)], env=project_env(),
                              capture_output=True, text=True, check=False)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            f"error: {team_dir / 'state.json'}: unreadable team state (Expecting property name "
            "enclosed in double quotes: line 1 column 2 (char 1)); run `python -m flows.team "
            "down` after stopping the services by hand, or remove the file"]
    assert sorted(p.name for p in team_dir.iterdir()) == ["state.json"]
