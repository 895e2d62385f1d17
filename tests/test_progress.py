"""Progress output: a tqdm bar on a terminal; without one (dvc repro, Prefect, CI logs) a few
plain lines with rates, never carriage returns."""

import contextlib
import io
import re

from tqdm import tqdm

from stdformer.progress import LogProgress, progress


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_anything_else_log_lines():
    assert isinstance(progress(total=3, desc="x", stream=Terminal()), tqdm)
    assert isinstance(progress(total=3, desc="x", stream=io.StringIO()), LogProgress)


def test_log_lines_carry_counts_rates_and_eta_at_most_one_per_interval():
    out, clock = io.StringIO(), FakeClock()
    bar = progress(total=1280, desc="synthesize", unit="frame", stream=out, interval_s=10.0,
                   clock=clock)
    for _ in range(1280):                  # 1280 frames at 32 frames/s: 40 s
        clock.now += 1 / 32
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 4 <= len(lines) <= 5            # every 10 s of 40, and the final line
    assert lines[0] == "synthesize: 320/1280 frames (25%), 32.0 frames/s, eta 30 s"
    assert lines[-1] == "synthesize: done, 1280 frames in 40.0 s (32.0 frames/s)"


def test_iterating_reports_batches_and_ends_with_a_summary():
    out, clock = io.StringIO(), FakeClock()
    seen = []
    bar = progress(range(7), total=7, desc="evaluate", unit="batch", stream=out, interval_s=2.0,
                   clock=clock)
    bar.set_postfix(model="stdformer")
    for batch in bar:
        clock.now += 1.0
        seen.append(batch)
    assert seen == list(range(7))
    lines = out.getvalue().splitlines()
    assert lines[0] == "evaluate: 2/7 batches (29%), 1.0 batches/s, eta 5 s, model stdformer"
    assert lines[-1] == "evaluate: done, 7 batches in 7.0 s (1.0 batches/s)"


def test_synthesize_under_a_pipeline_prints_lines_not_a_bar(synth_body, synth_cfg, tmp_path):
    from stdformer.data.synthetic import synthesize
    from stdformer.data.synthetic_scene import total_frames

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        report = synthesize(tmp_path / "raw", synth_body, synth_cfg, progress=True)
    text = err.getvalue()
    assert "\r" not in text and report["frames"] == total_frames(synth_cfg)
    lines = [line for line in text.splitlines() if line.startswith("synthesize:")]
    assert lines and len(lines) <= 2 + report["seconds"] / 10
    assert re.fullmatch(rf"synthesize: done, {report['frames']} frames in [\d.]+ s "
                        r"\([\d.]+ frames/s\)", lines[-1]), lines[-1]


def test_mlflow_artifact_bars_are_off_in_a_log(monkeypatch):
    """The demo stage's model download printed 91 carriage-return updates into the DVC log."""
    import os

    from stdformer.progress import mlflow_bars_on_terminal_only

    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())   # not a terminal
    mlflow_bars_on_terminal_only()
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
