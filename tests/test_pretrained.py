"""FastMETRO / STDFormer checkpoints in and out (stdformer.model.fastmetro / pretrained): the
key map on a state dict built from FastMETRO's key list (tests/realfiles.py, not from our
exporter), round trips, SD/TD from STDFormer's release, and bad files."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from realfiles import Evil, fastmetro_state_dict
from stdformer.io import DataError
from stdformer.model import ModelConfig, ResNet, STDFormer
from stdformer.model.pretrained import (convert_checkpoint, inspect_checkpoint,
                                        load_init_checkpoint, read_checkpoint)
from stdformer.model.stdformer import model_config_from_section

# meta.json of a body on the standard SMPL hierarchy (what write_body_dir records for an SMPL
# file with mesh_downsampling.npz) and of the procedural body
STANDARD_META = {"source": "smpl", "hierarchy": "mesh_downsampling.npz",
                 "levels": [6890, 1723, 431], "num_faces": [13776, 3442, 858],
                 "checks": {"hierarchy_fit": {}}}
PROCEDURAL_META = {**STANDARD_META, "source": "procedural",
                   "hierarchy": "built, factors [4, 4]"}
BODY_ID = "0123456789abcdef"


@pytest.fixture(scope="module")
def smpl_sized_mesh():
    """Matrices with the standard hierarchy's sizes: 431 coarse, 1723 mid, 6890 vertices."""
    rng = np.random.default_rng(0)

    def upsampling(n, m):
        rows = np.repeat(np.arange(n), 3)
        cols = np.stack([rng.choice(m, 3, replace=False) for _ in range(n)]).ravel()
        return sp.csr_array((rng.dirichlet(np.ones(3), size=n).ravel(), (rows, cols)),
                            shape=(n, m))

    i = np.arange(431)
    ring = sp.csr_array((np.ones(862), (np.r_[i, i], np.r_[(i + 1) % 431, (i - 1) % 431])),
                        shape=(431, 431))
    return ring, upsampling(1723, 431), upsampling(6890, 1723)


def fastmetro_s_r50() -> ModelConfig:
    """FastMETRO-S-R50's network with SD/TD added (to start STDFormer from FastMETRO)."""
    return dataclasses.replace(ModelConfig.resnet50(), enc_layers=1, dec_layers=1, dropout=0.0)


def small_two_stage() -> ModelConfig:
    return dataclasses.replace(ModelConfig.resnet50(), backbone_width=8,
                               backbone_blocks=[1, 1, 1, 1], widths=[32, 16], ffn_dims=[64, 32],
                               heads=2, enc_layers=1, dec_layers=1, dropout=0.0)


def build(cfg, mesh, seed=0) -> STDFormer:
    torch.manual_seed(seed)
    return STDFormer(cfg, *mesh).eval()


def test_fastmetro_checkpoint_loads_with_nothing_left_over(smpl_sized_mesh, tmp_path):
    state = fastmetro_state_dict("S", smpl_regressor=True)
    path = tmp_path / "FastMETRO-S-R50_3dpw_state_dict.bin"
    torch.save(state, path)
    model = build(fastmetro_s_r50(), smpl_sized_mesh)
    report = load_init_checkpoint(model, path, STANDARD_META, BODY_ID)

    own = model.state_dict()
    ckpt = read_checkpoint(path)
    used = set(ckpt.state) & set(own)
    assert used == set(ckpt.state)                      # every renamed tensor has a place
    assert {k for k in own if k not in used} == set(report.fresh) | {
        k for k in own if k.endswith("num_batches_tracked") and k not in used}
    assert report.fresh and all(k.startswith("disentangle.") for k in report.fresh)
    assert sorted(report.skipped) == sorted(k for k in state if k.startswith("smpl_parameter"))
    for key in used:
        assert torch.equal(own[key], ckpt.state[key]), key
    # spot checks of the table: FastMETRO name -> project name
    assert torch.equal(own["backbone.layer3.5.conv2.weight"], state["backbone.6.5.conv2.weight"])
    assert torch.equal(own["backbone.bn1.running_var"], state["backbone.1.running_var"])
    assert torch.equal(own["transformer.stages.1.decoder.layers.0.multihead_attn.in_proj_weight"],
                       state["transformer_2.decoder.layers.0.multihead_attn.in_proj_weight"])
    assert torch.equal(own["transformer.dim_reduce_dec.0.weight"], state["dim_reduce_dec.weight"])
    assert torch.equal(own["upsample_mid.weight"], state["coarse2intermediate_upsample.weight"])
    assert report.loaded["SD/TD"] == 0 and report.loaded["heads"] == 6
    text = "\n".join(report.lines())
    assert "start fresh (SD/TD: 12 keys)" in text and "SMPL-parameter regressor" in text

    info = inspect_checkpoint(path)
    assert info["name"] == "FastMETRO-S-R50" and info["backbone"] == "resnet"
    assert info["model_params"] == {"profile": "resnet50", "sd": False, "td": False,
                                    "enc_layers": 1, "dec_layers": 1, "template_head": False,
                                    "init_checkpoint": str(path)}
    assert info["vertex_tokens"] == 431 and info["needs_standard_smpl_hierarchy"]


def test_project_to_fastmetro_to_project_is_identical(smpl_sized_mesh, tmp_path):
    cfg = small_two_stage()
    source = build(cfg, smpl_sized_mesh, seed=1)
    torch.save(source.state_dict(), tmp_path / "project.pt")
    convert_checkpoint(tmp_path / "project.pt", tmp_path / "fastmetro.bin", to="fastmetro")
    exported = torch.load(tmp_path / "fastmetro.bin", weights_only=True)
    assert "transformer_1.encoder.layers.0.self_attn.in_proj_weight" in exported
    assert "backbone.7.0.downsample.0.weight" in exported and "backbone.sd.gn.weight" in exported
    assert not any(k.startswith(("transformer.", "disentangle.")) for k in exported)

    target = build(cfg, smpl_sized_mesh, seed=2)
    report = load_init_checkpoint(target, tmp_path / "fastmetro.bin", STANDARD_META, BODY_ID)
    assert not report.fresh and not report.skipped and report.loaded["SD/TD"] == 12
    a, b = source.state_dict(), target.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    frames = torch.randn(1, cfg.clip_len, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_a, out_b = source(frames), target(frames)
    assert all(torch.equal(out_a[k], out_b[k]) for k in out_a)

    # and back to this project's names: the same tensors under the same names
    convert_checkpoint(tmp_path / "fastmetro.bin", tmp_path / "back.pt", to="project")
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert back.keys() == a.keys() and all(torch.equal(back[k], a[k]) for k in a)


@pytest.mark.parametrize("names", [("ema_spatial", "ema_temporal"), ("block_a", "block_b")])
def test_stdformer_release_sd_td_are_found_by_name_or_shape(smpl_sized_mesh, tmp_path, names):
    """STDFormer's release keeps SD/TD inside backbone.* under undocumented names: a name that
    says spatial/temporal decides, else the channels per group (SD 16, TD S = 8)."""
    state = fastmetro_state_dict("S", ema={names[0]: 16, names[1]: 8})
    torch.save(state, tmp_path / "state_dict.bin")
    model = build(fastmetro_s_r50(), smpl_sized_mesh)
    report = load_init_checkpoint(model, tmp_path / "state_dict.bin", STANDARD_META, BODY_ID)
    assert not report.fresh and report.loaded["SD/TD"] == 12
    own = model.state_dict()
    assert torch.equal(own["disentangle.sd.conv3x3.weight"],
                       state[f"backbone.{names[0]}.conv3x3.weight"])
    assert torch.equal(own["disentangle.td.gn.bias"], state[f"backbone.{names[1]}.gn.bias"])


@pytest.mark.parametrize("ema", [None, {"ema_spatial": 16, "ema_temporal": 8}],
                         ids=["fastmetro", "stdformer-release"])
def test_inspect_suggests_params_that_rebuild_the_checkpoints_network_exactly(
        smpl_sized_mesh, tmp_path, ema):
    """Following `checkpoint inspect`'s advice builds the file's network, tensor for tensor: a
    FastMETRO file gets no fresh SD/TD blocks (its outputs stay FastMETRO's), a release file
    with SD/TD gets them with its clip length."""
    path = tmp_path / "state_dict.bin"
    torch.save(fastmetro_state_dict("S", ema=ema), path)
    params = inspect_checkpoint(path)["model_params"]
    assert params["template_head"] is False and params["init_checkpoint"] == str(path)
    assert (params["sd"], params["td"]) == ((True, True) if ema else (False, False))
    model = build(model_config_from_section(params), smpl_sized_mesh)
    report = load_init_checkpoint(model, path, STANDARD_META, BODY_ID)
    assert report.fresh == []
    own = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert own == {k for k in read_checkpoint(path).state if not k.endswith("num_batches_tracked")}
    if ema:
        assert params["clip_len"] == 8


def test_checkpoint_for_smpl_is_refused_on_another_hierarchy(smpl_sized_mesh, tmp_path):
    torch.save(fastmetro_state_dict("S"), tmp_path / "state_dict.bin")
    model = build(fastmetro_s_r50(), smpl_sized_mesh)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DataError) as err:
        load_init_checkpoint(model, tmp_path / "state_dict.bin", PROCEDURAL_META, BODY_ID,
                             body_dir="data/body")
    assert "standard SMPL mesh hierarchy" in str(err.value)
    assert "'procedural', not an SMPL file" in str(err.value)
    assert err.value.field == "model.init_checkpoint"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_checkpoints_are_refused_with_one_clear_error(smpl_sized_mesh, tmp_path):
    model = build(fastmetro_s_r50(), smpl_sized_mesh)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    good = tmp_path / "state_dict.bin"
    torch.save(fastmetro_state_dict("S"), good)

    def refused(path, match, **kw):
        with pytest.raises(DataError, match=match) as err:
            load_init_checkpoint(model, path, STANDARD_META, BODY_ID, **kw)
        assert str(path) in str(err.value)
        return err.value

    cut = tmp_path / "cut.bin"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    refused(cut, "not a readable checkpoint")
    marker = tmp_path / "pwned"
    torch.save({"weights": Evil(marker)}, tmp_path / "evil.bin")
    refused(tmp_path / "evil.bin", "may try to run code")
    assert not marker.exists()
    torch.save(ResNet(depth=50, classifier=True).state_dict(), tmp_path / "resnet50.pth")
    refused(tmp_path / "resnet50.pth", "another model's")
    torch.save(fastmetro_state_dict("L"), tmp_path / "large.bin")
    err = refused(tmp_path / "large.bin", r"no place in the model \(transformer: ")
    assert err.field == "model.init_checkpoint"
    wider = dataclasses.replace(fastmetro_s_r50(), ffn_dims=[1024, 512])
    with pytest.raises(DataError) as err:
        load_init_checkpoint(build(wider, smpl_sized_mesh), good, STANDARD_META, BODY_ID)
    assert err.value.field.startswith("transformer.stages.0.") and "linear1" in err.value.field
    assert "(2048" in str(err.value) and "does not fit the model's (1024" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    # conversion writes nothing for a bad file
    with pytest.raises(DataError):
        convert_checkpoint(cut, tmp_path / "out.pt", to="project")
    with pytest.raises(DataError, match="two transformer stages"):
        one_stage = build(dataclasses.replace(small_two_stage(), widths=[32], ffn_dims=[64]),
                          smpl_sized_mesh)
        torch.save(one_stage.state_dict(), tmp_path / "one_stage.pt")
        convert_checkpoint(tmp_path / "one_stage.pt", tmp_path / "out.bin", to="fastmetro")
    assert not (tmp_path / "out.pt").exists() and not (tmp_path / "out.bin").exists()


def test_checkpoint_cli_inspect_and_convert(tmp_path, capsys):
    from stdformer.cli import main

    torch.save(fastmetro_state_dict("S", smpl_regressor=True), tmp_path / "s.bin")
    assert main(["checkpoint", "inspect", str(tmp_path / "s.bin")]) == 0
    out = capsys.readouterr().out
    assert "FastMETRO-S-R50 checkpoint in fastmetro layout" in out
    assert "SD/TD        none (sd: false, td: false)" in out
    assert "sd: false" in out and "td: false" in out and "template_head: false" in out
    assert "smpl_parameter_regressor" in out and "init_checkpoint:" in out
    assert main(["checkpoint", "convert", str(tmp_path / "s.bin"), str(tmp_path / "p.pt")]) == 0
    assert "project layout; skipped 4 keys" in capsys.readouterr().out
    assert main(["checkpoint", "inspect", str(tmp_path / "missing.bin")]) == 2
    assert "checkpoint file not found" in capsys.readouterr().err


@pytest.mark.slow
def test_fastmetro_checkpoint_trains_and_evaluates_through_the_stages(tiny_project_factory,
                                                                       arrays, tmp_path):
    """A user's official files (SMPL pickle, J_regressor_h36m_correct.npy, mesh_downsampling.npz
    and a FastMETRO-S-R50 state_dict.bin) -> body, synthesize, preprocess, train (from the
    checkpoint, a few steps), evaluate, as `dvc repro` runs them."""
    import subprocess

    import yaml
    from conftest import project_env
    from realfiles import official_like_hierarchy, official_smpl_pickle, write_mesh_downsampling

    from stdformer.body import build_hierarchy, derive_h36m_regressor

    files = tmp_path / "user_files"
    files.mkdir()
    (files / "SMPL_NEUTRAL.pkl").write_bytes(official_smpl_pickle(arrays, protocol=2))
    np.save(files / "J_regressor_h36m_correct.npy", derive_h36m_regressor(arrays).toarray())
    hierarchy = official_like_hierarchy(
        build_hierarchy(arrays["v_template"], arrays["f"].astype(np.int64)), arrays["v_template"])
    write_mesh_downsampling(files / "mesh_downsampling.npz", hierarchy, arrays["v_template"])
    checkpoint = files / "FastMETRO-S-R50_3dpw_state_dict.bin"
    torch.save(fastmetro_state_dict("S", smpl_regressor=True), checkpoint)

    project = tiny_project_factory({
        "body": {"source": str(files / "SMPL_NEUTRAL.pkl"),
                 "h36m_regressor": str(files / "J_regressor_h36m_correct.npy"),
                 "mesh_downsampling": str(files / "mesh_downsampling.npz")},
        "model": {"profile": "resnet50", "enc_layers": 1, "dec_layers": 1, "dropout": 0.0,
                  "template_head": False, "init_checkpoint": str(checkpoint)},
        "train": {"steps": 2, "batch_size": 1, "joint_warmup_steps": 0},
        "evaluate": {"overlays": 0, "smoothing": {"enabled": False}, "device": "cpu"}})
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["variants"] = {"stdformer": {}}                       # one model is enough here
    params["evaluate"]["models"] = {"stdformer": "models/stdformer.pt"}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    done = subprocess.run(["dvc", "repro", "evaluate"], cwd=project, capture_output=True,
                          text=True, env={**project_env(), "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    log = done.stdout + done.stderr
    assert f"init from {checkpoint} (fastmetro layout)" in log
    assert "start fresh (SD/TD: 12 keys)" in log and "SMPL-parameter regressor" in log
    meta = json.loads((project / "data/body/meta.json").read_text())
    assert meta["standard_smpl_hierarchy"]["ok"] is True
    overall = json.loads((project / "metrics/eval.json").read_text())["datasets"]["3dpw"]
    assert overall["stdformer"]["frames"] > 0 and np.isfinite(overall["stdformer"]["mpvpe"])
    trained = torch.load(project / "models/stdformer.pt", weights_only=True)
    assert trained["model_config"]["init_checkpoint"] == str(checkpoint)


def test_hrnet_w64_layout_maps_both_ways(smpl_sized_mesh):
    """FastMETRO-L-H64: HRNet keeps the classification network's names (classifier included),
    so `profile: full` takes every tensor (shapes only: built on the meta device)."""
    from stdformer.model.fastmetro import backbone_of, from_fastmetro, layout_of, to_fastmetro

    with torch.device("meta"):
        model = STDFormer(ModelConfig.full(), *smpl_sized_mesh)
    own = model.state_dict()
    exported, left = to_fastmetro(own, "hrnet")
    assert not left and layout_of(exported) == "fastmetro"
    assert backbone_of(exported, "fastmetro") == "hrnet"
    assert "backbone.classifier.weight" in exported
    assert "backbone.stage4.2.fuse_layers.0.3.0.weight" in exported
    assert "transformer_2.decoder.layers.2.norm3.bias" in exported
    back, notes = from_fastmetro({k: v for k, v in exported.items()
                                  if not k.startswith(("backbone.sd.", "backbone.td."))}, "hrnet")
    assert not any(notes.values())
    assert set(own) - set(back) == {k for k in own if k.startswith("disentangle.")}
    assert all(back[k].shape == own[k].shape for k in back)


# --------------------------------------------------------------------------------------------
# Released weights straight to predict and evaluate


@pytest.fixture(scope="module")
def standard_body_dir(arrays, tmp_path_factory):
    """A body on the standard SMPL hierarchy as users build it from their official files
    (SMPL pickle, J_regressor_h36m_correct.npy, mesh_downsampling.npz)."""
    from realfiles import official_like_hierarchy, official_smpl_pickle, write_mesh_downsampling

    from stdformer.body import build_hierarchy, derive_h36m_regressor, write_body_dir

    files = tmp_path_factory.mktemp("user_files")
    (files / "SMPL_NEUTRAL.pkl").write_bytes(official_smpl_pickle(arrays, protocol=2))
    np.save(files / "J_regressor_h36m_correct.npy", derive_h36m_regressor(arrays).toarray())
    template = arrays["v_template"]
    write_mesh_downsampling(files / "mesh_downsampling.npz", official_like_hierarchy(
        build_hierarchy(template, arrays["f"].astype(np.int64)), template), template)
    meta = write_body_dir(files / "body", source=str(files / "SMPL_NEUTRAL.pkl"),
                          h36m_regressor=files / "J_regressor_h36m_correct.npy",
                          mesh_downsampling=files / "mesh_downsampling.npz")
    assert meta["standard_smpl_hierarchy"]["ok"], meta["standard_smpl_hierarchy"]
    return files / "body"


def test_released_checkpoint_is_a_ready_model_on_the_standard_hierarchy_only(
        standard_body_dir, synth_body_dir, tmp_path):
    from stdformer.model.assets import load_body_assets
    from stdformer.model.pretrained import published_model

    path = tmp_path / "FastMETRO-S-R50_3dpw_state_dict.bin"
    state = fastmetro_state_dict("S", smpl_regressor=True)
    torch.save(state, path)
    model, inputs = published_model(path, load_body_assets(standard_body_dir), clip_len=4)
    assert (inputs.crop_size, inputs.clip_len) == (224, 4) and not model.training
    assert not model.cfg.sd and not model.cfg.td            # FastMETRO's network, nothing fresh
    own = model.state_dict()
    assert torch.equal(own["upsample_mid.weight"], state["coarse2intermediate_upsample.weight"])
    with pytest.raises(DataError, match="standard SMPL mesh hierarchy"):
        published_model(path, load_body_assets(synth_body_dir))


@pytest.mark.slow
def test_released_checkpoint_predicts_and_evaluates_without_training(
        standard_body_dir, synth_root, tmp_path):
    """`stdformer predict VIDEO --model state_dict.bin` writes meshes, and `stdformer checkpoint
    evaluate state_dict.bin` scores the weights on preprocessed shards with no training step,
    its lineage naming the file's sha256 (FastMETRO-S-R50 names and shapes, random weights)."""
    from test_predict import annotation_boxes_file

    from stdformer.cli import main
    from stdformer.data.datasets import ThreeDPWDataset
    from stdformer.data.preprocess import PreprocessConfig, preprocess
    from stdformer.data.threedpw import iter_tracks
    from stdformer.io import file_digest

    ckpt = tmp_path / "FastMETRO-S-R50_3dpw_state_dict.bin"
    torch.save(fastmetro_state_dict("S"), ckpt)
    sequence = sorted({t.sequence for t in iter_tracks(synth_root, "test")})[0]
    boxes = annotation_boxes_file(synth_root, sequence, tmp_path / "boxes.json")
    assert main(["predict", str(synth_root / "imageFiles" / sequence), "--model", str(ckpt),
                 "--body", str(standard_body_dir), "--out", str(tmp_path / "pred"),
                 "--boxes", str(boxes), "--no-glb", "--no-overlay", "--quiet"]) == 0
    with np.load(tmp_path / "pred" / f"{sequence}.npz") as z:
        assert z["vertices"].shape[1:] == (6890, 3) and len(z["vertices"])
        assert np.isfinite(z["vertices"]).all()
        assert json.loads(str(z["meta"]))["crop_size"] == 224

    shards = tmp_path / "shards"
    preprocess(ThreeDPWDataset(root=str(synth_root), splits=["test"]), standard_body_dir,
               shards, PreprocessConfig(crop_size=224, clip_len=4, executor="serial", workers=0),
               progress=False)
    out = tmp_path / "published"
    assert main(["checkpoint", "evaluate", str(ckpt), "--body", str(standard_body_dir),
                 "--shards", str(shards), "--out", str(out), "--overlays", "0", "--quiet"]) == 0
    (dataset, overall), = json.loads((out / "eval.json").read_text())["datasets"].items()
    name = ckpt.stem
    assert overall[name]["frames"] > 0 and np.isfinite(overall[name]["mpjpe"])
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["sha256"] == file_digest(ckpt) and lineage["checkpoint"] == ckpt.name
    assert lineage["metrics"][dataset]["mpjpe"] == pytest.approx(overall[name]["mpjpe"],
                                                                 abs=0.01)
