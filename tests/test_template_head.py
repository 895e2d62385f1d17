"""model.template_head: the xyz head predicts offsets from the body's rest template, so an
untrained model already outputs a whole, upright body facing the camera."""

import pytest
import torch

from stdformer.metrics import j14_from_h36m, j14_pelvis
from stdformer.model.assets import load_body_assets
from stdformer.model.stdformer import model_config_from_section
from stdformer.train.loop import build_model

SMALL = {"profile": "cpu", "backbone_width": 8, "widths": [32], "ffn_dims": [32], "heads": 2}


@pytest.fixture(scope="module")
def assets(synth_body_dir):
    return load_body_assets(synth_body_dir)


def test_camera_template_stands_upright_and_faces_the_camera(assets):
    joints, coarse = assets.camera_template()
    assert joints.shape == (14, 3) and coarse.shape == (assets.hierarchy.num_vertices[2], 3)
    assert torch.allclose(j14_pelvis(joints), torch.zeros(3), atol=1e-6)   # mid-hip centred
    head_top, r_ankle, l_hip, r_hip = joints[13], joints[0], joints[3], joints[2]
    assert head_top[1] < -0.5 and r_ankle[1] > 0.5           # camera y points down
    assert l_hip[0] > r_hip[0]                               # its left on the image's right


def test_untrained_template_head_outputs_the_template_and_fastmetro_head_does_not(assets,
                                                                                   tmp_path):
    torch.manual_seed(0)
    frames = torch.randn(1, 8, 3, 64, 64)
    model = build_model(model_config_from_section({**SMALL, "template_head": True}), assets)
    with torch.no_grad():
        out = model(frames)
    joints, coarse = assets.camera_template()
    assert torch.allclose(out["joints3d"][0, 0], joints, atol=1e-6)
    assert torch.allclose(out["vertices_coarse"][0, 3], coarse, atol=1e-6)
    fine = out["vertices"][0, 0]
    regressed = j14_from_h36m(assets.regressor_h36m @ fine)
    assert float((regressed[13] - regressed[0])[1]) < -1.0   # a whole body, head to ankle
    # The template is saved with the weights: a reloaded model gives the same output.
    state = model.state_dict()
    assert {"template_joints", "template_coarse"} <= set(state)
    fresh = build_model(model_config_from_section({**SMALL, "template_head": True}), assets)
    fresh.template_joints.zero_()
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh(frames)["joints3d"], out["joints3d"])

    plain = build_model(model_config_from_section(SMALL), assets)
    assert "template_joints" not in plain.state_dict()
    with torch.no_grad():
        plain_joints = plain(frames)["joints3d"][0, 0]
    assert float((plain_joints[13] - plain_joints[0])[1]) > -0.5   # no body yet
    with pytest.raises(ValueError, match="template_head"):
        plain.set_template(joints, coarse)
