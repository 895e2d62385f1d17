"""Every params file the project ships parses into its stages' config classes, so a profile
cannot drift from the code that reads it."""

from pathlib import Path

import pytest

from stdformer.body.files import BodyConfig
from stdformer.config import from_dict, read_params
from stdformer.data.datasets import all_dataset_configs
from stdformer.data.preprocess_config import PreprocessConfig
from stdformer.data.synthetic_config import SynthesizeConfig
from stdformer.data.synthetic_h36m_config import SynthesizeH36MConfig
from stdformer.evaluation import EvaluateConfig
from stdformer.losses import LossConfig
from stdformer.model.stdformer import STDFormer
from stdformer.registry import RegisterConfig
from stdformer.model.stdformer import model_config_from_section
from stdformer.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SECTIONS = {"body": BodyConfig, "synthesize": SynthesizeConfig,
            "synthesize_h36m": SynthesizeH36MConfig, "preprocess": PreprocessConfig,
            "loss": LossConfig, "train": TrainConfig, "evaluate": EvaluateConfig,
            "register": RegisterConfig}


RECIPES = ["params.yaml", "configs/3dpw.yaml", "configs/h36m.yaml"]


@pytest.mark.parametrize("name", RECIPES)
def test_params_file_sections_parse(name, monkeypatch):
    path = REPO / name
    params = read_params(path)
    for section, cls in SECTIONS.items():
        if section == "body" and params[section]["source"] != "procedural":
            # real-SMPL paths are the user's; only the types are checked here
            monkeypatch.setattr(BodyConfig, "validate", lambda self: None)
        from_dict(cls, params[section], source=str(path), prefix=section)
    for variant in params["variants"].values():
        model = model_config_from_section({**params["model"], **variant}, source=str(path))
        model.validate()
    assert "stdformer" in params["variants"]
    assert all_dataset_configs(params, path)["3dpw"].layout == "3dpw"


def test_full_profile_has_the_published_size(synth_body):
    params = read_params(REPO / "configs/3dpw.yaml")
    cfg = model_config_from_section({**params["model"], "backbone_weights": None})
    counts = STDFormer.from_hierarchy(cfg, synth_body.hierarchy).parameter_counts()
    assert abs(counts["total"] / 1e6 - 153.7) < 0.1, counts


@pytest.mark.parametrize("name", RECIPES)
def test_mix_evaluation_and_gate_name_datasets_that_exist(name):
    """train.mix and evaluate.datasets name `datasets` entries; the gate's primary dataset is
    scored. (params.yaml's `datasets` section comes with the multi-source preprocess.)"""
    params = read_params(REPO / name)
    train = from_dict(TrainConfig, params["train"])
    evaluate = from_dict(EvaluateConfig, params["evaluate"])
    register = from_dict(RegisterConfig, params["register"])
    assert register.primary_dataset in evaluate.datasets
    sources = {spec.source for spec in evaluate.datasets.values()}
    assert {s for s, w in train.mix.items() if w > 0} <= set(params.get("datasets") or train.mix)
    if "datasets" in params:
        assert sources <= set(params["datasets"]) and set(train.mix) <= set(params["datasets"])


def test_h36m_recipe_is_the_published_setup():
    params = read_params(REPO / "configs/h36m.yaml")
    assert params["train"]["mix"] == {"h36m": 1.0}
    assert params["model"]["init_checkpoint"].endswith("FastMETRO-L-H64_h36m_state_dict.bin")
    assert params["model"]["profile"] == "full"
    assert params["evaluate"]["datasets"] == {"h36m_p1": {"source": "h36m"},
                                              "h36m_p2": {"source": "h36m", "camera": 4}}
    assert params["datasets"]["h36m"]["subjects"]["test"] == [9, 11]
