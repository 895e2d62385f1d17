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
def synth_cfg():
    """A small synthetic-3DPW config: every feature present, a few seconds to build."""
    from stdformer.data.synthetic import SynthesizeConfig

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

# Deep-merged over the project's params.yaml: the same pipeline, small enough for seconds.
TINY_PARAMS = {
    "body": {"resolution": 800},
    "synthesize": {"train_sequences": 2, "validation_sequences": 1, "test_sequences": 1,
                   "min_frames": 12, "max_frames": 16, "width": 128, "height": 96,
                   "two_actor_fraction": 0.5},
    "preprocess": {"crop_size": 32, "samples_per_shard": 4, "workers": 1},
    "train": {"steps": 3, "batch_size": 2, "checkpoint_every": 2, "val_every": 0,
              "num_workers": 0, "log_every": 1},
    "evaluate": {"overlays": 1, "overlay_size": 64, "batch_size": 4},
}


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = (deep_merge(out[key], value)
                    if isinstance(value, dict) and isinstance(out.get(key), dict) else value)
    return out


def project_env() -> dict:
    """Environment for running the project's commands in a subprocess (venv first on PATH)."""
    import os
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{__import__('pathlib').Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.update(DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", PYTHONHASHSEED="0")
    return env


def make_tiny_project(dest, overrides: dict | None = None):
    """Copy the pipeline (dvc.yaml, stages/, stdformer/, flows/) into a fresh git + DVC repo at
    `dest` with TINY_PARAMS (+ overrides) applied; returns dest."""
    import shutil
    import subprocess

    import yaml

    dest = __import__("pathlib").Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("stages", "stdformer", "flows"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, dest / name)
    (dest / "data").mkdir(exist_ok=True)
    shutil.copy(REPO / "data" / ".gitignore", dest / "data" / ".gitignore")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params = deep_merge(deep_merge(params, TINY_PARAMS), overrides or {})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = project_env()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)
    return dest


@pytest.fixture(scope="session")
def tiny_project_factory(tmp_path_factory):
    """Call with optional params overrides to get a fresh tiny project directory."""
    return lambda overrides=None: make_tiny_project(tmp_path_factory.mktemp("project") / "repo",
                                                    overrides)
