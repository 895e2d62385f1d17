"""STDFormer network: backbones, EMA / SD / TD, transformer mask, full model shapes and sizes.

Large models (HRNet-W64, the full profile) are built on the meta device: parameter shapes and
names without allocating or initialising 128M weights.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from stdformer.config import from_dict
from stdformer.io import DataError
from stdformer.model import (EMA, HRNet, ModelConfig, ResNet, STDFormer,
                             SpatioTemporalDisentangle, count_parameters,
                             decoder_attention_mask, load_backbone_weights,
                             sine_position_encoding, temporal_shuffle, temporal_unshuffle)
from stdformer.model.stdformer import sparse_rows_padded
from stdformer.model.transformer import DecoderLayer

# --------------------------------------------------------------------------------------------
# Small synthetic meshes


def ring_adjacency(n: int) -> sp.csr_array:
    """Vertex i adjacent to i-1 and i+1 (mod n): every vertex has 2 neighbours."""
    i = np.arange(n)
    rows = np.concatenate([i, i])
    cols = np.concatenate([(i + 1) % n, (i - 1) % n])
    return sp.csr_array((np.ones(2 * n), (rows, cols)), shape=(n, n))


def random_upsampling(n: int, m: int, rng: np.random.Generator) -> sp.csr_array:
    """(n, m) with 3 non-zeros a row summing to 1, like the SMPL hierarchy's U."""
    rows = np.repeat(np.arange(n), 3)
    cols = np.stack([rng.choice(m, 3, replace=False) for _ in range(n)]).ravel()
    w = rng.dirichlet(np.ones(3), size=n).ravel()
    return sp.csr_array((w, (rows, cols)), shape=(n, m))


@pytest.fixture(scope="module")
def small_mesh():
    rng = np.random.default_rng(0)
    return ring_adjacency(24), random_upsampling(60, 24, rng), random_upsampling(150, 60, rng)


@pytest.fixture(scope="module")
def full_size_mesh():
    rng = np.random.default_rng(1)
    return ring_adjacency(431), random_upsampling(1723, 431, rng), random_upsampling(6890, 1723, rng)


def build(cfg: ModelConfig, mesh, seed: int = 0) -> STDFormer:
    torch.manual_seed(seed)
    return STDFormer(cfg, *mesh).eval()


# --------------------------------------------------------------------------------------------
# Full model


def test_cpu_profile_shapes_and_gradients(small_mesh):
    cfg = ModelConfig.cpu()
    model = build(cfg, small_mesh)
    b, s = 2, cfg.clip_len
    frames = torch.randn(b, s, 3, 64, 64)
    out = model(frames)
    j = cfg.num_joints
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "joints3d": (b, s, j, 3), "vertices_coarse": (b, s, 24, 3),
        "vertices_mid": (b, s, 60, 3), "vertices": (b, s, 150, 3), "cam": (b, s, 3)}
    assert all(torch.isfinite(v).all() for v in out.values())

    # Only the mesh outputs train SD/TD (no extra loss): gradients must reach them.
    model.train()
    out = model(frames)
    (out["vertices"].abs().mean() + out["cam"].abs().mean()).backward()
    for name in ("disentangle.sd.conv3x3.weight", "disentangle.td.conv1x1.weight",
                 "backbone.conv1.weight", "transformer.vertex_token_embed.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_resnet50_width_variant_shapes(small_mesh):
    """ResNet-50 widths (stem 256 ch, output 2048 ch) with 1 block a stage and a small
    transformer: SD/TD get the paper's sizes."""
    cfg = ModelConfig(backbone="resnet", backbone_depth=50, backbone_width=64,
                      backbone_blocks=[1, 1, 1, 1], sd_groups=16, td_groups=256,
                      widths=[32, 16], ffn_dims=[64, 32], heads=2, enc_layers=1, dec_layers=1)
    model = build(cfg, small_mesh)
    assert model.backbone.stem_channels == 256 and model.backbone.out_channels == 2048
    counts = model.parameter_counts()
    assert (counts["sd"], counts["td"]) == (2624, 672)
    frames = torch.randn(1, 8, 3, 64, 64)
    with torch.no_grad():
        stem = model.backbone.stem(frames.flatten(0, 1))
        assert stem.shape == (8, 256, 16, 16)
        assert model.backbone.rest(stem).shape == (8, 2048, 2, 2)
        out = model(frames)
    assert out["vertices"].shape == (1, 8, 150, 3) and out["joints3d"].shape == (1, 8, 14, 3)


def test_full_profile_parameter_count(full_size_mesh):
    """HRNet-W64 + SD/TD + FastMETRO-L with 431/1723/6890 vertices: 153.7M, as published
    (128.06M backbone incl. SD+TD, 25.68M transformer)."""
    with torch.device("meta"):
        model = STDFormer(ModelConfig.full(), *full_size_mesh)
    c = model.parameter_counts()
    assert c["sd"] == 2624 and c["td"] == 672
    assert c["backbone"] == 128_059_944               # HRNet-W64 incl. its ImageNet classifier
    assert c["backbone_total"] == 128_063_240
    assert c["transformer_total"] == 25_679_894
    assert c["upsample_mid"] == 431 * 1723 + 1723
    assert c["total"] == 153_743_134 == c["backbone_total"] + c["transformer_total"]
    assert "153.74M" in model.summary()


def test_same_seed_same_output(small_mesh):
    cfg = ModelConfig.cpu()
    frames = torch.randn(1, cfg.clip_len, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = build(cfg, small_mesh, seed=7)(frames)
        b = build(cfg, small_mesh, seed=7)(frames)
        c = build(cfg, small_mesh, seed=8)(frames)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["vertices"], c["vertices"])


def test_clip_length_must_match_td(small_mesh):
    cfg = ModelConfig.cpu()
    model = build(cfg, small_mesh)
    with pytest.raises(ValueError, match="clips of 8 frames"):
        model(torch.randn(1, 4, 3, 64, 64))
    cfg.td = False  # without TD frames are independent: any clip length works
    out = build(cfg, small_mesh)(torch.randn(1, 3, 3, 64, 64))
    assert out["cam"].shape == (1, 3, 3)


def test_upsampling_and_mesh_checks(small_mesh):
    adjacency, up_mid, up_fine = small_mesh
    model = build(ModelConfig.cpu(), small_mesh)
    mid = torch.randn(5, 60, 3, dtype=torch.float64)
    expected = np.stack([up_fine @ m for m in mid.numpy()])
    # float32 weights: agree to float32 precision
    np.testing.assert_allclose(model.upsample_fine(mid).numpy(), expected, rtol=1e-5, atol=1e-6)
    # The learnable coarse -> mid Linear starts as the hierarchy's interpolation.
    np.testing.assert_allclose(model.upsample_mid.weight.detach().numpy(), up_mid.toarray(),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="do not chain"):
        STDFormer(ModelConfig.cpu(), adjacency, up_mid, up_fine[:, :50])
    cfg = ModelConfig.cpu()
    cfg.num_coarse_vertices = 431
    with pytest.raises(ValueError, match="431 coarse vertices"):
        STDFormer(cfg, *small_mesh)


def test_from_hierarchy_takes_levels_in_order(small_mesh):
    adjacency, up_mid, up_fine = small_mesh
    hierarchy = SimpleNamespace(adjacency=[ring_adjacency(150), ring_adjacency(60), adjacency],
                                up=[up_fine, up_mid])
    torch.manual_seed(0)
    model = STDFormer.from_hierarchy(ModelConfig.cpu(), hierarchy)
    assert model.num_vertices == (24, 60, 150)
    with pytest.raises(ValueError, match="3-level"):
        STDFormer.from_hierarchy(ModelConfig.cpu(), SimpleNamespace(
            adjacency=hierarchy.adjacency[:2], up=hierarchy.up[:1]))


def test_sparse_rows_padded_pads_short_rows():
    m = sp.csr_array(np.array([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0], [0.0, 0.0, 0.0]]))
    index, weight = sparse_rows_padded(m)
    x = torch.randn(3, 4)
    y = (x[index] * weight[..., None]).sum(1)
    np.testing.assert_allclose(y.numpy(), m @ x.numpy(), rtol=1e-6)


def test_model_config_from_params_and_validation():
    cfg = from_dict(ModelConfig, {"backbone": "hrnet", "widths": [512, 128], "td": False,
                                  "backbone_weights": None}, source="params.yaml",
                    prefix="model")
    assert cfg.backbone == "hrnet" and cfg.widths == [512, 128] and not cfg.td
    with pytest.raises(DataError, match="model.backbone"):
        from_dict(ModelConfig, {"backbone": "vgg"}, source="params.yaml", prefix="model")
    with pytest.raises(DataError, match="ffn_dims"):
        from_dict(ModelConfig, {"ffn_dims": [2048]}, source="params.yaml", prefix="model")
    with pytest.raises(ValueError, match="sd_groups"):
        ModelConfig(sd_groups=3).validate()
    assert ModelConfig.cpu().groups() == (4, 64)        # 16 channels a group; S channels a group
    assert ModelConfig.full().groups() == (16, 256)
    assert ModelConfig.profile("cpu") == ModelConfig.cpu()


# --------------------------------------------------------------------------------------------
# EMA, SD, TD


def test_ema_parameter_counts():
    assert count_parameters(EMA(256, 16)) == 2624
    assert count_parameters(EMA(2048, 256)) == 672
    with pytest.raises(ValueError):
        EMA(100, 16)


def test_ema_preserves_shape_and_rescales_input():
    torch.manual_seed(0)
    ema = EMA(32, 4)
    x = torch.randn(2, 32, 7, 9)
    y = ema(x)
    assert y.shape == x.shape
    # output = x * sigmoid(map): a per-pixel gate in (0, 1) shared by a group's channels
    gate = (y / x).reshape(2, 4, 8, 7, 9)
    assert torch.all((gate > 0) & (gate < 1))
    torch.testing.assert_close(gate, gate[:, :, :1].expand_as(gate))


@pytest.mark.parametrize("sd,td,params", [(True, True, 2624 + 672), (True, False, 2624),
                                          (False, True, 672), (False, False, 0)])
def test_ablation_switches(sd, td, params):
    torch.manual_seed(0)
    block = SpatioTemporalDisentangle(256, clip_len=8, sd_groups=16, td_groups=256, sd=sd, td=td)
    assert count_parameters(block) == params
    assert (block.sd is not None, block.td is not None) == (sd, td)
    x = torch.randn(8, 256, 6, 6)  # one clip of 8 frames
    with torch.no_grad():
        out = block(x)
        sd_out = block.sd(x) if sd else None
        td_out = temporal_unshuffle(block.td(temporal_shuffle(x, 8)), 8) if td else None
    if sd and td:
        w = torch.sigmoid((sd_out + td_out).mean(dim=(2, 3), keepdim=True))
        torch.testing.assert_close(out, w * sd_out + (1 - w) * td_out)
        assert not torch.allclose(out, sd_out) and not torch.allclose(out, td_out)
    elif sd:
        torch.testing.assert_close(out, sd_out)
    elif td:
        torch.testing.assert_close(out, td_out)
    else:
        assert out is x


def test_temporal_shuffle_layout_and_round_trip():
    b, s, c = 2, 3, 4
    x = torch.randn(b * s, c, 5, 5)
    shuffled = temporal_shuffle(x, s)
    assert shuffled.shape == (b, c * s, 5, 5)
    for bi in range(b):
        for ci in range(c):
            for si in range(s):  # channel c*S + s is feature c of frame s of clip b
                assert torch.equal(shuffled[bi, ci * s + si], x[bi * s + si, ci])
    assert torch.equal(temporal_unshuffle(shuffled, s), x)
    with pytest.raises(ValueError, match="whole number of clips"):
        temporal_shuffle(torch.randn(7, c, 5, 5), s)


def test_td_mixes_frames_within_a_clip_and_sd_does_not():
    torch.manual_seed(0)
    s, c = 4, 16
    block = SpatioTemporalDisentangle(c, clip_len=s, sd_groups=1, td_groups=c).eval()
    x = torch.randn(2 * s, c, 8, 8)          # two clips
    x2 = x.clone()
    x2[0] += torch.randn(c, 8, 8)            # perturb frame 0 of clip 0
    with torch.no_grad():
        td = lambda t: temporal_unshuffle(block.td(temporal_shuffle(t, s)), s)  # noqa: E731
        assert not torch.allclose(td(x)[1], td(x2)[1])        # TD: frame 1 sees frame 0
        assert torch.equal(td(x)[s:], td(x2)[s:])              # ...but not another clip
        assert torch.equal(block.sd(x)[1:], block.sd(x2)[1:])  # SD: frames independent
        assert not torch.allclose(block(x)[1], block(x2)[1])
        assert torch.equal(block(x)[s:], block(x2)[s:])


# --------------------------------------------------------------------------------------------
# Transformer


def test_decoder_attention_mask_from_adjacency():
    adjacency = ring_adjacency(6)
    mask = decoder_attention_mask(adjacency, num_joints=3)   # True = blocked
    assert mask.shape == (9, 9) and mask.dtype == torch.bool
    assert not mask[:3].any()              # joints see everything
    assert not mask[3:, :3].any()          # vertices see all joints
    allowed = ~mask[3:, 3:]
    expected = torch.from_numpy((adjacency.toarray() != 0) | np.eye(6, dtype=bool))
    assert torch.equal(allowed, expected)  # a vertex sees itself and its ring neighbours only
    assert allowed[0].nonzero().flatten().tolist() == [0, 1, 5]


def test_decoder_vertex_ignores_non_neighbours():
    torch.manual_seed(0)
    j, v, d = 3, 10, 16
    mask = decoder_attention_mask(ring_adjacency(v), j)
    layer = DecoderLayer(d, heads=2, ffn_dim=32, dropout=0.1).eval()
    tokens = torch.randn(1, j + v, d)
    memory, pos = torch.randn(1, 4, d), torch.randn(4, d)
    vertex = j + 0                      # vertex 0: neighbours 1 and 9

    def output_after(token: int) -> torch.Tensor:
        perturbed = tokens.clone()
        perturbed[0, token] += 5 * torch.randn(d)
        with torch.no_grad():
            return layer(perturbed, memory, pos, mask)[0, vertex]

    with torch.no_grad():
        base = layer(tokens, memory, pos, mask)[0, vertex]
        x = layer.norm1(tokens)
        _, weights = layer.self_attn(x, x, x, attn_mask=mask, need_weights=True)
    assert torch.all(weights[0, vertex, j + 2: j + 9] == 0)      # non-neighbours: weight 0
    assert torch.all(weights[0, vertex, :j] > 0)                  # all joints
    assert torch.all(weights[0, vertex, [j + 1, j + 9, vertex]] > 0)
    for non_neighbour in range(j + 2, j + 9):
        assert torch.equal(output_after(non_neighbour), base), non_neighbour
    for seen in (0, 1, 2, j + 1, j + 9):
        assert not torch.allclose(output_after(seen), base), seen
    # joints see every vertex
    with torch.no_grad():
        joint_base = layer(tokens, memory, pos, mask)[0, 0]
        perturbed = tokens.clone()
        perturbed[0, j + 5] += 5 * torch.randn(d)
        assert not torch.allclose(layer(perturbed, memory, pos, mask)[0, 0], joint_base)


def test_sine_position_encoding_layout():
    pos = sine_position_encoding(3, 4, 8)
    assert pos.shape == (12, 8)
    grid = pos.reshape(3, 4, 8)
    # first half encodes the row (y), second half the column (x)
    assert torch.equal(grid[:, :1, :4].expand(3, 4, 4), grid[:, :, :4])
    assert torch.equal(grid[:1, :, 4:].expand(3, 4, 4), grid[:, :, 4:])
    # normalised to (0, 2*pi]: the last row's lowest-frequency sine is sin(2*pi) ~ 0
    assert abs(grid[-1, 0, 0].item()) < 1e-4


# --------------------------------------------------------------------------------------------
# Backbones


TORCHVISION_RESNET50_NAMES = [
    "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
    "layer1.0.conv1.weight", "layer1.0.bn3.weight", "layer1.0.downsample.0.weight",
    "layer1.0.downsample.1.running_var", "layer2.0.downsample.0.weight",
    "layer3.5.conv3.weight", "layer4.2.bn3.bias", "fc.weight", "fc.bias",
]


def test_resnet50_matches_torchvision_layout():
    model = ResNet(depth=50, classifier=True)
    assert count_parameters(model) == 25_557_032          # torchvision resnet50
    state = model.state_dict()
    assert len(state) == 320 and len(list(model.parameters())) == 161
    assert all(name in state for name in TORCHVISION_RESNET50_NAMES)
    assert "layer4.3.conv1.weight" not in state and "layer1.1.downsample.0.weight" not in state
    assert state["layer4.0.downsample.0.weight"].shape == (2048, 1024, 1, 1)
    assert state["fc.weight"].shape == (1000, 2048)
    with torch.device("meta"):
        assert count_parameters(ResNet(depth=18, classifier=True)) == 11_689_512
        assert count_parameters(ResNet(depth=34, classifier=True)) == 21_797_672


def test_resnet_stem_rest_interface():
    model = ResNet(depth=50, width=16, blocks=[1, 1, 1, 1]).eval()
    with torch.no_grad():
        stem = model.stem(torch.randn(2, 3, 64, 96))
        assert stem.shape == (2, 64, 16, 24) and model.stem_channels == 64
        assert model.rest(stem).shape == (2, 512, 2, 3) and model.out_channels == 512
    basic = ResNet(depth=18, width=8, blocks=[1, 1, 1, 1]).eval()
    assert basic.stem_channels == 8 and basic.out_channels == 64
    with torch.no_grad():
        assert basic(torch.randn(1, 3, 64, 64)).shape == (1, 64, 2, 2)


def test_hrnet_w64_official_names_and_size():
    with torch.device("meta"):
        model = HRNet(width=64, classifier=True)
    state = model.state_dict()
    for name in ["conv1.weight", "bn2.running_mean", "layer1.3.conv3.weight",
                 "transition1.0.0.weight", "transition1.1.0.0.weight",
                 "transition3.3.0.0.weight", "stage2.0.branches.1.3.bn2.weight",
                 "stage3.3.fuse_layers.2.0.1.0.weight", "stage4.2.fuse_layers.3.0.0.0.weight",
                 "stage4.2.fuse_layers.0.3.1.running_var", "incre_modules.0.0.conv1.weight",
                 "incre_modules.3.0.downsample.0.weight", "downsamp_modules.2.0.bias",
                 "final_layer.0.weight", "final_layer.1.running_var", "classifier.weight"]:
        assert name in state, name
    assert "transition2.0.0.weight" not in state        # identity transitions have no weights
    assert state["final_layer.0.weight"].shape == (2048, 1024, 1, 1)
    assert state["stage4.2.fuse_layers.3.0.2.0.weight"].shape == (512, 64, 3, 3)
    assert count_parameters(model) == 128_059_944       # "HRNet-W64-C 128.1M"
    assert model.stem_channels == 256 and model.out_channels == 2048


def test_hrnet_stem_rest_shapes():
    torch.manual_seed(0)
    model = HRNet(width=18).eval()
    with torch.no_grad():
        stem = model.stem(torch.randn(1, 3, 64, 64))
        assert stem.shape == (1, 256, 16, 16)
        assert model.rest(stem).shape == (1, 2048, 2, 2)


def test_load_backbone_weights_reports_and_checks(tmp_path):
    torch.manual_seed(0)
    source = ResNet(depth=50, width=16, blocks=[1, 1, 1, 1], classifier=True)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    del state["layer2.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": state}, path)

    torch.manual_seed(1)
    target = ResNet(depth=50, width=16, blocks=[1, 1, 1, 1], classifier=False)
    report = load_backbone_weights(target, path)
    assert report.missing == ["layer2.0.conv1.weight"]
    assert report.unexpected == ["extra.weight", "fc.bias", "fc.weight"]
    assert torch.equal(target.conv1.weight, source.conv1.weight)   # the rest was loaded

    bad = dict(state, **{"layer1.0.conv2.weight": torch.zeros(1, 1, 3, 3)})
    torch.save(bad, path)
    with pytest.raises(DataError, match="layer1.0.conv2.weight"):
        load_backbone_weights(target, path)
    with pytest.raises(DataError, match="not found"):
        load_backbone_weights(target, tmp_path / "absent.pth")


def test_model_loads_backbone_weights_from_config(tmp_path, small_mesh):
    torch.manual_seed(0)
    source = ResNet(depth=50, width=16, blocks=[1, 1, 1, 1])
    path = tmp_path / "r50tiny.pth"
    torch.save(source.state_dict(), path)
    cfg = ModelConfig.cpu()
    cfg.backbone_weights = str(path)
    model = build(cfg, small_mesh, seed=5)
    assert model.backbone_load_report == ([], [])
    assert torch.equal(model.backbone.layer4[0].conv3.weight, source.layer4[0].conv3.weight)


@pytest.mark.parametrize("profile,backbone_total,total", [
    ("full", 128_063_240, 153_743_134), ("resnet50", 23_511_328, 49_191_222)])
def test_sd_td_placement_option_parameter_counts(full_size_mesh, profile, backbone_total, total):
    """model.sd_td_at: layer1 (the paper: after the first residual stage, 256 channels) or stem
    (the release code's hint: before it, 64 channels). With 16 channels a SD group and one
    channel across the S frames a TD group, both readings have the published counts."""
    for at, channels, groups in (("layer1", 256, (16, 256)), ("stem", 64, (4, 64))):
        cfg = dataclasses.replace(ModelConfig.profile(profile), sd_td_at=at)
        with torch.device("meta"):
            model = STDFormer(cfg, *full_size_mesh)
        c = model.parameter_counts()
        assert model.disentangle.channels == channels and cfg.groups() == groups
        assert (c["sd"], c["td"]) == (2624, 672)
        assert (c["backbone_total"], c["total"]) == (backbone_total, total)
        assert f"at {at}" in model.summary()


def test_sd_td_at_stem_acts_before_the_first_residual_stage(small_mesh):
    cfg = dataclasses.replace(ModelConfig.cpu(), sd_td_at="stem")
    model = build(cfg, small_mesh)
    assert model.disentangle.channels == cfg.backbone_width == 16
    seen = []
    model.disentangle.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    frames = torch.randn(1, cfg.clip_len, 3, 64, 64)
    out = model(frames)
    assert seen == [(cfg.clip_len, 16, 16, 16)]               # (B*S, stem channels, H/4, W/4)
    assert out["vertices"].shape == (1, cfg.clip_len, 150, 3)
    out["vertices"].abs().mean().backward()
    assert model.disentangle.td.conv3x3.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="sd_td_at"):
        dataclasses.replace(ModelConfig.cpu(), sd_td_at="layer2").validate()
