"""benchmarks/gpu.py, the prepared GPU check, in its CPU smoke mode: every part runs and the
JSON holds every figure. The real run needs an H100/H200 (docs/tests-and-benchmarks.md, "The
GPU check")."""

import json
import subprocess
import sys

import pytest

from conftest import REPO, project_env


def test_peak_table_finds_the_device_by_name():
    from gpu import peak_bf16_tflops

    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0      # the SXM part
    assert peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("NVIDIA H200") == 989.0
    assert peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_bf16_tflops("Tesla T4") is None


@pytest.mark.slow  # trains, compiles and runs `dvc repro train` + `evaluate` on a CPU (minutes)
def test_smoke_mode_runs_every_part_and_writes_the_figures(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--smoke",
                           "--profiles", "full"], env={**project_env(), "OUT": str(tmp_path)},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads((tmp_path / "gpu.json").read_text())
    assert figures["smoke"] is True and figures["device"] == "cpu"
    profile = figures["profiles"]["full"]
    assert profile["tflop_per_step"] > 0 and profile["loader_clips_per_s"] > 0
    for mode in ("eager", "compiled"):
        assert profile[mode]["clips_per_s"] > 0 and profile[mode]["tflops_per_s"] > 0, mode
        assert profile[mode]["mfu"] is None                         # no peak for a CPU
    pipeline = figures["pipeline"]
    assert pipeline["repro_train_returncode"] == 0 == pipeline["repro_evaluate_returncode"]
    assert pipeline["train_device"] == "cpu" and pipeline["train_metrics"]["steps"] == 2
    for dataset in ("3dpw", "h36m_p1", "h36m_p2"):
        assert pipeline["eval_by_dataset"][dataset]["stdformer"]["frames"] > 0, dataset
