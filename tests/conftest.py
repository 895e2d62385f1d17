"""Shared session fixtures (keep this file to fixtures only)."""

import pytest


@pytest.fixture(scope="session")
def arrays():
    """SMPL-format arrays of the default procedural body (seed 0, 6890 vertices)."""
    from stdformer.body import make_procedural_body

    return make_procedural_body(seed=0)


@pytest.fixture(scope="session")
def small_arrays():
    from stdformer.body import make_procedural_body

    return make_procedural_body(seed=1, resolution=1200)


@pytest.fixture(scope="session")
def synth_body_dir(tmp_path_factory):
    """The default procedural body directory (data/body layout), built once per session."""
    from stdformer.body import write_body_dir

    out = tmp_path_factory.mktemp("synth_body") / "body"
    write_body_dir(out, source="procedural", seed=0)
    return out


@pytest.fixture(scope="session")
def synth_body(synth_body_dir):
    from stdformer.body import BodyModel

    return BodyModel.from_dir(synth_body_dir)


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory):
    """(body_dir, shards_dir, body, ground truth) of the evaluation tests
    (evalkit.make_eval_data)."""
    from evalkit import make_eval_data

    return make_eval_data(tmp_path_factory.mktemp("evaldata"))


@pytest.fixture(scope="session")
def train_data(tmp_path_factory):
    """(body_dir, shards_dir) the training tests train on (trainkit.make_train_data)."""
    from trainkit import make_train_data

    return make_train_data(tmp_path_factory.mktemp("traindata"))


@pytest.fixture(scope="session")
def mix_data(tmp_path_factory, train_data):
    """(body_dir, shards parent) with sources 3dpw and h36m (trainkit.make_mix_data)."""
    from trainkit import make_mix_data

    return make_mix_data(tmp_path_factory.mktemp("mixdata"), train_data)


@pytest.fixture(scope="session")
def synth_cfg():
    """A small synthetic-3DPW config: every feature present, a few seconds to build."""
    from stdformer.data.synthetic_config import SynthesizeConfig

    return SynthesizeConfig(seed=3, train_sequences=2, validation_sequences=1, test_sequences=2,
                            min_frames=10, max_frames=14, two_actor_fraction=0.5,
                            invalid_campose_fraction=0.1)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory, synth_body, synth_cfg):
    """A synthetic 3DPW root written by `synthesize` with `synth_cfg`."""
    from stdformer.data.synthetic import synthesize

    root = tmp_path_factory.mktemp("synth3dpw") / "3dpw"
    synthesize(root, synth_body, synth_cfg, progress=False)
    return root


# ---------------------------------------------------------------------------------------------
# A tiny copy of the whole project (git + DVC), for tests that run the pipeline as users do.

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
__import__("sys").path.insert(0, str(REPO / "benchmarks"))

from project_copy import (copy_project, deep_merge, dvc, project_env,  # noqa: E402,F401 (shared)
                          stage_command)

# Deep-merged over the project's params.yaml: the same pipeline, small enough for seconds.
TINY_PARAMS = {
    "body": {"resolution": 800},
    "synthesize": {"train_sequences": 2, "validation_sequences": 1, "test_sequences": 1,
                   "min_frames": 12, "max_frames": 16, "width": 128, "height": 96,
                   "two_actor_fraction": 0.5},
    # One run per split (train S1, validation S8, test S9) of one clip (8 sampled frames).
    "synthesize_h36m": {"subjects": [1, 8, 9], "actions": ["Directions"], "subactions": 1,
                        "frames": 40, "size": 64, "unfitted_runs": 0},
    "datasets": {"h36m": {"subjects": {"train": [1], "validation": [8], "test": [9]}}},
    "preprocess": {"crop_size": 32, "samples_per_shard": 4, "workers": 1},
    "train": {"steps": 3, "batch_size": 2, "checkpoint_every": 2, "val_every": 0,
              "num_workers": 0, "log_every": 1},
    "evaluate": {"overlays": 1, "overlay_size": 64, "batch_size": 4},
}


def make_tiny_project(dest, overrides: dict | None = None):
    """Copy the pipeline into a fresh git + DVC repo at `dest` with TINY_PARAMS (+ overrides)
    applied; returns dest."""
    return copy_project(dest, deep_merge(TINY_PARAMS, overrides or {}))


@pytest.fixture(scope="session")
def tiny_project_factory(tmp_path_factory):
    """Call with optional params overrides to get a fresh tiny project directory."""
    return lambda overrides=None: make_tiny_project(tmp_path_factory.mktemp("project") / "repo",
                                                    overrides)


# ---------------------------------------------------------------------------------------------
# A test that starts a process stops it. Every process of the session inherits this marker in
# its environment; those still alive at the end (after a grace period for the ones already
# exiting) are named, killed and reported as an error. Not counted: the multiprocessing
# forkserver and resource tracker of pytest's own process, which end when it does.

SESSION_MARK = "STDFORMER_TEST_SESSION"
_OWN_HELPERS = ("multiprocessing.forkserver import main", "multiprocessing.resource_tracker import")


def _left_behind(mark: str) -> list[tuple[int, str]]:
    import os
    from pathlib import Path

    found, needle, me = [], f"{SESSION_MARK}={mark}".encode(), os.getpid()
    for proc in Path("/proc").glob("[0-9]*"):
        pid = int(proc.name)
        try:
            if pid == me or needle not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):     # gone, or not ours to read
            continue
        if ppid == me and any(helper in cmd for helper in _OWN_HELPERS):
            continue
        found.append((pid, cmd.strip()[:200]))
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    import os
    import signal
    import time

    mark = f"{os.getpid()}-{time.time_ns()}"
    os.environ[SESSION_MARK] = mark
    yield
    deadline = time.monotonic() + 15.0
    while (left := _left_behind(mark)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:
        pytest.fail("processes started by the tests were still running at the end (killed "
                    "now):\n" + "\n".join(f"  {pid}: {cmd}" for pid, cmd in left))
