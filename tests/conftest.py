"""Shared session fixtures (keep this file to fixtures only)."""

import pytest


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
