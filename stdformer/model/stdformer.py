"""STDFormer: clip of crops -> per-frame 3D joints, 3-level mesh and weak-perspective camera.

    frames (B, S, 3, H, W), ImageNet-normalised crops
      -> backbone.stem               (B*S, C1, H/4, W/4)      C1 = 256 for ResNet-50 / HRNet-W64
      -> SD/TD disentanglement       (B*S, C1, H/4, W/4)      mixes frames only inside a clip
      -> backbone.rest               (B*S, C_out, H/32, W/32) C_out = 2048
    (sd_td_at: stem puts SD/TD between backbone.stem_conv (64 channels) and backbone.layer1)
      -> conv_1x1                    (B*S, D0, h, w)          image tokens of the first width
      -> MeshTransformer             cam (B*S, 3), joints (B*S, J, 3), coarse verts (B*S, Vc, 3)
      -> Linear over the vertex axis (B*S, Vm, 3)             learnable coarse -> mid upsampling
      -> fixed sparse upsampling     (B*S, V, 3)              the mesh hierarchy's U matrix

The transformer runs per frame (as in FastMETRO); temporal context enters only through TD.
The mesh comes in as plain matrices (scipy sparse or dense), so this module does not depend on
how the body model / mesh hierarchy was made.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from stdformer.config import from_dict
from stdformer.io import DataError, repr_for_message
from stdformer.model.backbone import LoadReport, build_backbone, load_backbone_weights
from stdformer.model.multiscale_attention import SpatioTemporalDisentangle
from stdformer.model.transformer import MeshTransformer, decoder_attention_mask

SD_CHANNELS_PER_GROUP = 16   # the paper's SD: EMA(256, 16)


@dataclass
class ModelConfig:
    """The `model` section of params.yaml. Profiles: `full()`, `resnet50()`, `cpu()`."""

    backbone: Literal["resnet", "hrnet"] = "resnet"
    backbone_depth: int = 50                 # ResNet depth (18/34/50/101/152); unused by HRNet
    backbone_width: int = 64                 # ResNet base width / HRNet branch width W
    backbone_blocks: list[int] | None = None  # ResNet blocks per stage override, e.g. [1,1,1,1]
    backbone_classifier: bool = False        # keep the unused ImageNet classifier (see full())
    backbone_weights: str | None = None      # local ImageNet state dict to load, or None
    init_checkpoint: str | None = None       # FastMETRO / STDFormer / project checkpoint to
                                             # start from (stdformer.model.pretrained), or None
    sd: bool = True                          # spatial disentanglement branch
    td: bool = True                          # temporal disentanglement branch
    sd_td_at: Literal["layer1", "stem"] = "layer1"  # after the first residual stage (paper) or
                                             # before it, on the 64-channel stem (release code)
    clip_len: int = 8                        # S: frames per clip (TD's group size)
    sd_groups: int | None = None             # None -> stem channels / 16 (16 channels a group)
    td_groups: int | None = None             # None -> stem channels (a group = 1 channel x S)
    widths: list[int] = field(default_factory=lambda: [512, 128])
    ffn_dims: list[int] = field(default_factory=lambda: [2048, 512])
    heads: int = 8
    enc_layers: int = 3                      # per stage
    dec_layers: int = 3                      # per stage
    dropout: float = 0.1
    num_joints: int = 14
    num_coarse_vertices: int | None = None   # None -> from the mesh; else checked against it
    template_head: bool = False              # joints/vertices = body template + head output

    @classmethod
    def full(cls) -> "ModelConfig":
        """The paper's model: HRNet-W64 + SD/TD + FastMETRO-L, S = 8 (about 153.7M params).

        The HRNet keeps its unused ImageNet classifier (2.05M params) as FastMETRO's does, so the
        count matches the published one and FastMETRO checkpoints load without leftovers.
        """
        return cls(backbone="hrnet", backbone_width=64, backbone_classifier=True)

    @classmethod
    def resnet50(cls) -> "ModelConfig":
        """FastMETRO-L's lighter variant: ResNet-50 backbone, same transformer and SD/TD."""
        return cls(backbone="resnet", backbone_depth=50, backbone_width=64)

    @classmethod
    def cpu(cls) -> "ModelConfig":
        """Small enough to train on 2 CPU cores: a 1-block-per-stage ResNet-50 of width 16
        (stem 64 ch, output 512 ch), SD/TD with the paper's group sizes (16 ch; S ch), and one
        64-wide transformer stage with 1 + 1 layers (a second stage doubles the CPU step time).
        No dropout: on the CPU, attention dropout forces PyTorch's unfused attention path,
        about 20x slower."""
        return cls(backbone="resnet", backbone_depth=50, backbone_width=16,
                   backbone_blocks=[1, 1, 1, 1], widths=[64], ffn_dims=[128],
                   heads=4, enc_layers=1, dec_layers=1, dropout=0.0)

    @classmethod
    def profile(cls, name: str) -> "ModelConfig":
        profiles = {"full": cls.full, "resnet50": cls.resnet50, "cpu": cls.cpu}
        if name not in profiles:
            raise ValueError(f"unknown model profile {name!r}; expected one of {sorted(profiles)}")
        return profiles[name]()

    @property
    def sd_td_channels(self) -> int:
        """Channels where SD/TD act: after the first residual stage (256 for ResNet-50 and
        HRNet), or after the stem convolutions (64) with sd_td_at: stem."""
        if self.sd_td_at == "stem":
            return 64 if self.backbone == "hrnet" else self.backbone_width
        if self.backbone == "hrnet":
            return 256
        return self.backbone_width * (4 if self.backbone_depth >= 50 else 1)

    def groups(self) -> tuple[int, int]:
        """(G_sd, G_td) with the defaults filled in: 16 channels a SD group, one channel
        across the S frames a TD group (the paper's EMA(256, 16) and EMA(2048, 256) at layer1;
        the same parameter counts at the stem: EMA(64, 4) and EMA(512, 64))."""
        c = self.sd_td_channels
        sd = self.sd_groups if self.sd_groups is not None else max(1, c // SD_CHANNELS_PER_GROUP)
        td = self.td_groups if self.td_groups is not None else c
        return sd, td

    def validate(self) -> None:
        if self.clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {self.clip_len}")
        if self.sd_td_at not in ("layer1", "stem"):
            raise ValueError(f"sd_td_at must be 'layer1' or 'stem', got {self.sd_td_at!r}")
        sd_groups, td_groups = self.groups()
        c = self.sd_td_channels
        if self.sd and (sd_groups < 1 or c % sd_groups):
            raise ValueError(f"sd_groups={sd_groups} must divide the {c} stem channels")
        if self.td and (td_groups < 1 or (c * self.clip_len) % td_groups):
            raise ValueError(f"td_groups={td_groups} must divide the {c} x {self.clip_len} "
                             f"shuffled channels")
        if not self.widths or len(self.widths) != len(self.ffn_dims):
            raise ValueError(f"widths {self.widths} and ffn_dims {self.ffn_dims} need one entry "
                             f"per transformer stage")
        for d in self.widths:
            if d % self.heads or d % 4:
                raise ValueError(f"transformer width {d} must be divisible by heads "
                                 f"({self.heads}) and by 4 (sine position encoding)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.enc_layers < 1 or self.dec_layers < 1 or self.num_joints < 1:
            raise ValueError("enc_layers, dec_layers and num_joints must be >= 1")


def model_config_from_section(section: dict[str, Any] | None, source: str = "<dict>",
                              prefix: str = "model"):
    """The `model` section -> ModelConfig. An optional `profile` key (full, resnet50, cpu)
    picks the starting values; the other keys override them."""
    section = dict(section or {})
    profile = section.pop("profile", None)
    base: dict[str, Any] = {}
    if profile is not None:
        try:
            base = dataclasses.asdict(ModelConfig.profile(profile))
        except ValueError as e:
            raise DataError(source, str(e), field=f"{prefix}.profile") from e
    return from_dict(ModelConfig, {**base, **section}, source=source, prefix=prefix)


def variant_names(params: Mapping[str, Any], source: str = "<params>") -> list[str]:
    """The names of params' `variants` (the models the train stage trains, one each)."""
    variants = params.get("variants") or {}
    if not isinstance(variants, Mapping):
        raise DataError(source, f"expected a mapping, got {repr_for_message(variants)}",
                        field="variants")
    return list(variants)


def variant_model_config(params: Mapping[str, Any], variant: str | None,
                         source: str = "<params>") -> ModelConfig:
    """The model one variant trains: params' `model` section with `variants.<variant>`'s
    overrides on top (variant None: the section alone). The one place that resolves variants:
    the train stage, the retrain flow's override checks and the ablation benchmark use it."""
    base = dict(params.get("model") or {})
    if variant is None:
        return model_config_from_section(base, source, prefix="model")
    names = variant_names(params, source)
    if variant not in names:
        raise DataError(source, f"no such variant (known: {', '.join(names) or 'none'})",
                        field=f"variants.{variant}")
    changes = params["variants"][variant]
    if not isinstance(changes, (Mapping, type(None))):
        raise DataError(source, f"expected a mapping, got {repr_for_message(changes)}",
                        field=f"variants.{variant}")
    return model_config_from_section({**base, **(changes or {})}, source,
                                     prefix=f"variants.{variant}")


def sparse_rows_padded(matrix: sp.spmatrix | sp.sparray | np.ndarray
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """A sparse (n, m) matrix as per-row (index (n, k), weight (n, k)), k = max non-zeros a row,
    short rows padded with weight 0. Then M @ x == (x[index] * weight[..., None]).sum(1):
    a gather that runs the same on every device and is deterministic."""
    csr = sp.csr_array(matrix, dtype=np.float64)
    csr.sum_duplicates()
    n = csr.shape[0]
    counts = np.diff(csr.indptr)
    k = max(int(counts.max(initial=0)), 1)
    rows = np.repeat(np.arange(n), counts)
    slots = np.arange(csr.nnz) - csr.indptr[rows]
    index = np.zeros((n, k), dtype=np.int64)
    weight = np.zeros((n, k), dtype=np.float32)
    index[rows, slots] = csr.indices
    weight[rows, slots] = csr.data
    return torch.from_numpy(index), torch.from_numpy(weight)


class STDFormer(nn.Module):
    """coarse_adjacency: (Vc, Vc) coarse-mesh adjacency (decoder mask).
    up_mid_from_coarse: (Vm, Vc) upsampling matrix; sizes and initialises the learnable
        coarse -> mid Linear (weight = this matrix, bias 0: training starts from the
        hierarchy's interpolation; FastMETRO initialises randomly and loads its checkpoint).
    up_fine_from_mid: (V, Vm) fixed upsampling matrix (3 non-zeros a row for SMPL).

    With cfg.template_head (a deviation from FastMETRO, off in the paper's profile) the xyz
    head predicts offsets from a fixed body template (buffers `template_joints` (J, 3) and
    `template_coarse` (Vc, 3), saved with the weights, set by `set_template`) and starts at
    zero, so the first prediction is a whole human body instead of a point cloud near the
    origin.
    """

    def __init__(self, cfg: ModelConfig, coarse_adjacency, up_mid_from_coarse, up_fine_from_mid):
        super().__init__()
        cfg.validate()
        self.cfg = copy.deepcopy(cfg)  # own copy: later edits to `cfg` do not leak in
        n_coarse = coarse_adjacency.shape[0]
        n_mid, n_fine = up_mid_from_coarse.shape[0], up_fine_from_mid.shape[0]
        if cfg.num_coarse_vertices is not None and cfg.num_coarse_vertices != n_coarse:
            raise ValueError(f"config expects {cfg.num_coarse_vertices} coarse vertices, the "
                             f"mesh has {n_coarse}")
        if up_mid_from_coarse.shape[1] != n_coarse or up_fine_from_mid.shape[1] != n_mid:
            raise ValueError(
                f"upsampling shapes do not chain: coarse {n_coarse}, mid<-coarse "
                f"{up_mid_from_coarse.shape}, fine<-mid {up_fine_from_mid.shape}")
        self.num_joints, self.num_vertices = cfg.num_joints, (n_coarse, n_mid, n_fine)

        self.backbone = build_backbone(cfg.backbone, cfg.backbone_depth, cfg.backbone_width,
                                       cfg.backbone_blocks, cfg.backbone_classifier)
        self.backbone_load_report: LoadReport | None = None
        if cfg.backbone_weights is not None:
            self.backbone_load_report = load_backbone_weights(self.backbone, cfg.backbone_weights)
        sd_groups, td_groups = cfg.groups()
        channels = (self.backbone.stem_conv_channels if cfg.sd_td_at == "stem"
                    else self.backbone.stem_channels)
        assert channels == cfg.sd_td_channels, (channels, cfg.sd_td_channels)
        self.disentangle = SpatioTemporalDisentangle(
            channels, cfg.clip_len, sd_groups, td_groups, cfg.sd, cfg.td)
        self.conv_1x1 = nn.Conv2d(self.backbone.out_channels, cfg.widths[0], kernel_size=1)
        self.transformer = MeshTransformer(
            cfg.widths, cfg.ffn_dims, cfg.heads, cfg.enc_layers, cfg.dec_layers, cfg.dropout,
            cfg.num_joints, decoder_attention_mask(coarse_adjacency, cfg.num_joints))

        # Learnable coarse -> mid upsampling over the vertex axis, initialised as the hierarchy.
        self.upsample_mid = nn.Linear(n_coarse, n_mid)
        with torch.no_grad():
            dense = up_mid_from_coarse.toarray() if sp.issparse(up_mid_from_coarse) \
                else np.asarray(up_mid_from_coarse)
            self.upsample_mid.weight.copy_(torch.as_tensor(dense, dtype=torch.float32))
            self.upsample_mid.bias.zero_()
        if cfg.template_head:
            self.register_buffer("template_joints", torch.zeros(cfg.num_joints, 3))
            self.register_buffer("template_coarse", torch.zeros(n_coarse, 3))
            with torch.no_grad():
                self.transformer.xyz_regressor.weight.zero_()
                self.transformer.xyz_regressor.bias.zero_()
        # Fixed mid -> fine upsampling; rebuilt from the mesh, so not saved in checkpoints.
        index, weight = sparse_rows_padded(up_fine_from_mid)
        self.register_buffer("fine_index", index, persistent=False)     # (V, k) long
        self.register_buffer("fine_weight", weight, persistent=False)   # (V, k) float

    @classmethod
    def from_hierarchy(cls, cfg: ModelConfig, hierarchy) -> "STDFormer":
        """Take the matrices from a mesh hierarchy with levels 0 (full), 1 (mid), 2 (coarse):
        `adjacency[2]`, `up[1]` (mid <- coarse), `up[0]` (full <- mid)."""
        if len(hierarchy.adjacency) != 3 or len(hierarchy.up) != 2:
            raise ValueError(f"STDFormer needs a 3-level mesh hierarchy (full, mid, coarse), "
                             f"got {len(hierarchy.adjacency)} levels")
        return cls(cfg, hierarchy.adjacency[2], hierarchy.up[1], hierarchy.up[0])

    def set_template(self, joints: torch.Tensor, coarse_vertices: torch.Tensor) -> None:
        """The template_head's starting body: joints (J, 3), coarse vertices (Vc, 3), metres,
        in the targets' frame (camera axes, pelvis-centred)."""
        if not self.cfg.template_head:
            raise ValueError("set_template needs model.template_head: true")
        with torch.no_grad():
            self.template_joints.copy_(torch.as_tensor(joints).reshape(self.template_joints.shape))
            self.template_coarse.copy_(
                torch.as_tensor(coarse_vertices).reshape(self.template_coarse.shape))

    def upsample_fine(self, mid: torch.Tensor) -> torch.Tensor:
        """(N, Vm, 3) -> (N, V, 3) through the fixed sparse matrix."""
        gathered = mid[:, self.fine_index]                        # (N, V, k, 3)
        return (gathered * self.fine_weight[None, :, :, None].to(mid.dtype)).sum(dim=2)

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """frames (B, S, 3, H, W), H and W multiples of 32 -> dict of
        joints3d (B, S, J, 3), vertices_coarse (B, S, Vc, 3), vertices_mid (B, S, Vm, 3),
        vertices (B, S, V, 3), cam (B, S, 3) = weak-perspective (s, tx, ty)."""
        b, s = frames.shape[:2]
        if self.cfg.td and s != self.cfg.clip_len:
            # TD's groups hold exactly clip_len frames; another S would mix unrelated frames.
            raise ValueError(f"TD is built for clips of {self.cfg.clip_len} frames, got {s}")
        x = frames.flatten(0, 1)                          # (B*S, 3, H, W)
        if self.cfg.sd_td_at == "stem":
            x = self.backbone.stem_conv(x)                # (B*S, C0, H/4, W/4)
            x = self.backbone.layer1(self.disentangle(x))  # (B*S, C1, H/4, W/4)
        else:
            x = self.backbone.stem(x)                     # (B*S, C1, H/4, W/4)
            x = self.disentangle(x)                       # (B*S, C1, H/4, W/4)
        x = self.backbone.rest(x)                         # (B*S, C_out, H/32, W/32)
        x = self.conv_1x1(x)                              # (B*S, D0, h, w)
        cam, joints, coarse = self.transformer(x)         # (N, 3), (N, J, 3), (N, Vc, 3)
        if self.cfg.template_head:
            joints, coarse = joints + self.template_joints, coarse + self.template_coarse
        mid = self.upsample_mid(coarse.transpose(1, 2)).transpose(1, 2)   # (N, Vm, 3)
        fine = self.upsample_fine(mid)                                     # (N, V, 3)
        out = {"joints3d": joints, "vertices_coarse": coarse, "vertices_mid": mid,
               "vertices": fine, "cam": cam}
        return {k: v.reshape(b, s, *v.shape[1:]) for k, v in out.items()}

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component; "backbone_total" = backbone + SD + TD, "transformer_total"
        = everything after the backbone (1x1 conv, tokens, stages, heads, upsampling)."""
        d = self.disentangle
        counts = {
            "backbone": count_parameters(self.backbone),
            "sd": count_parameters(d.sd) if d.sd is not None else 0,
            "td": count_parameters(d.td) if d.td is not None else 0,
            "conv_1x1": count_parameters(self.conv_1x1),
            "transformer": count_parameters(self.transformer),
            "upsample_mid": count_parameters(self.upsample_mid),
        }
        counts["backbone_total"] = counts["backbone"] + counts["sd"] + counts["td"]
        counts["transformer_total"] = (counts["conv_1x1"] + counts["transformer"]
                                       + counts["upsample_mid"])
        counts["total"] = count_parameters(self)
        return counts

    def summary(self) -> str:
        """A small table of parameter counts, for logs."""
        c = self.cfg
        lines = [f"STDFormer: {c.backbone}"
                 f"{c.backbone_depth if c.backbone == 'resnet' else ''}-w{c.backbone_width}, "
                 f"SD={'on' if c.sd else 'off'}, TD={'on' if c.td else 'off'} at {c.sd_td_at}, "
                 f"S={c.clip_len}, "
                 f"widths={c.widths}, layers={c.enc_layers}+{c.dec_layers}, "
                 f"J={self.num_joints}, V={'/'.join(map(str, self.num_vertices))}"]
        for name, n in self.parameter_counts().items():
            lines.append(f"  {name:<18}{n:>14,}  ({n / 1e6:.2f}M)")
        return "\n".join(lines)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
