"""FastMETRO / STDFormer checkpoint names <-> this project's parameter names: one table.

FastMETRO's `state_dict.bin` (FastMETRO-{S,M,L}-{R50,H64}) is a bare `model.state_dict()`
(reference section 7); STDFormer's release uses the same names plus its SD/TD (EMA) blocks
somewhere under `backbone.`, under names it does not document. A key is renamed by the first
row whose prefix it starts with (longest prefix first), in either direction:

| this project                                  | FastMETRO / STDFormer release           | group       |
|-----------------------------------------------|-----------------------------------------|-------------|
| backbone.conv1. / bn1. (ResNet)               | backbone.0. / backbone.1.               | backbone    |
| backbone.layer1. .. layer4. (ResNet)          | backbone.4. .. backbone.7.              | backbone    |
| backbone.* (HRNet, its classifier included)   | backbone.* (the same names)             | backbone    |
| disentangle.sd. / disentangle.td.             | backbone.sd. / backbone.td. (export);   | SD/TD       |
|                                               | the release's EMA blocks: by shape      |             |
| conv_1x1.                                     | conv_1x1.                               | transformer |
| transformer.cam_token_embed. (joint, vertex)  | cam_token_embed. (joint_, vertex_)      | transformer |
| transformer.stages.0. / stages.1.             | transformer_1. / transformer_2.         | transformer |
| transformer.dim_reduce_enc_cam.0. (enc_img,   | dim_reduce_enc_cam. (enc_img, dec)      | transformer |
| dec)                                          |                                         |             |
| transformer.xyz_regressor. / cam_predictor.   | xyz_regressor. / cam_predictor.         | heads       |
| upsample_mid.                                 | coarse2intermediate_upsample.           | heads       |
| -                                             | smpl_parameter_regressor.* (optional)   | skipped     |

Inside a transformer stage the names are equal (encoder.layers.i.self_attn.in_proj_weight,
linear1, norm1, decoder.layers.i.multihead_attn, ..., encoder.norm, decoder.norm). FastMETRO
has no keys for the positional encodings, the mesh up-sampling matrix or the attention mask:
both sides rebuild them (the mask and the fixed up-sampling from the mesh hierarchy).

STDFormer's EMA blocks are found as groups of `<prefix>.gn.{weight,bias}`,
`<prefix>.conv1x1.{weight,bias}`, `<prefix>.conv3x3.{weight,bias}` under `backbone.`; a
prefix naming sd/spatial or td/temporal says which is which, else the channels per group do
(SD: 16; TD: S, the clip length).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

GROUPS = ("backbone", "SD/TD", "transformer", "heads")

_COMMON = [
    ("disentangle.sd.", "backbone.sd."),
    ("disentangle.td.", "backbone.td."),
    ("conv_1x1.", "conv_1x1."),
    ("transformer.cam_token_embed.", "cam_token_embed."),
    ("transformer.joint_token_embed.", "joint_token_embed."),
    ("transformer.vertex_token_embed.", "vertex_token_embed."),
    ("transformer.stages.0.", "transformer_1."),
    ("transformer.stages.1.", "transformer_2."),
    ("transformer.dim_reduce_enc_cam.0.", "dim_reduce_enc_cam."),
    ("transformer.dim_reduce_enc_img.0.", "dim_reduce_enc_img."),
    ("transformer.dim_reduce_dec.0.", "dim_reduce_dec."),
    ("transformer.xyz_regressor.", "xyz_regressor."),
    ("transformer.cam_predictor.", "cam_predictor."),
    ("upsample_mid.", "coarse2intermediate_upsample."),
]
_BACKBONE = {
    # torchvision's resnet50 without avgpool and fc, as `nn.Sequential`: 0 conv1, 1 bn1,
    # 2 relu, 3 maxpool, 4-7 layer1-4.
    "resnet": [("backbone.conv1.", "backbone.0."), ("backbone.bn1.", "backbone.1."),
               ("backbone.layer1.", "backbone.4."), ("backbone.layer2.", "backbone.5."),
               ("backbone.layer3.", "backbone.6."), ("backbone.layer4.", "backbone.7.")],
    "hrnet": [("backbone.", "backbone.")],
}
# FastMETRO keys with no place here: reported and skipped.
SKIPPED = {"smpl_parameter_regressor.": "FastMETRO's optional SMPL-parameter regressor"}
# FastMETRO's optional learnable 1723 -> 6890 up-sampling (use_learnable_upsample): this project
# uses the hierarchy's fixed matrix, so such a checkpoint's fine meshes could not be reproduced.
UNSUPPORTED = {"intermediate2fine_upsample.": "FastMETRO's optional learnable fine up-sampling "
                                              "(use_learnable_upsample) is not supported"}
EMA_PARTS = ("gn.weight", "gn.bias", "conv1x1.weight", "conv1x1.bias", "conv3x3.weight",
             "conv3x3.bias")


def key_map(backbone: str) -> list[tuple[str, str]]:
    """(project prefix, FastMETRO prefix) rows for a backbone kind ("resnet" / "hrnet")."""
    return _COMMON + _BACKBONE[backbone]


def _rename(key: str, rows: list[tuple[str, str]], reverse: bool) -> str | None:
    pairs = [(b, a) if reverse else (a, b) for a, b in rows]
    for src, dst in sorted(pairs, key=lambda p: -len(p[0])):
        if key.startswith(src):
            return dst + key[len(src):]
    return None


def group_of(key: str) -> str:
    """The report group of a key in either naming."""
    if key.startswith(("disentangle.", "backbone.sd.", "backbone.td.")):
        return "SD/TD"
    if key.startswith("backbone."):
        return "backbone"
    if key.startswith(("transformer.xyz_regressor.", "transformer.cam_predictor.", "upsample_mid.",
                       "xyz_regressor.", "cam_predictor.", "coarse2intermediate_upsample.",
                       *SKIPPED, *UNSUPPORTED)):
        return "heads"
    return "transformer"


def layout_of(keys) -> str | None:
    """"fastmetro" (FastMETRO / STDFormer release names), "project" (this project's), or None
    (another model's checkpoint)."""
    keys = list(keys)
    if any(k.startswith(("transformer_1.", "coarse2intermediate_upsample.")) for k in keys):
        return "fastmetro"
    if any(k.startswith("transformer.stages.") for k in keys):
        return "project"
    return None


def backbone_of(keys, layout: str) -> str | None:
    """"resnet" or "hrnet" from the backbone's key names, None when there is no backbone."""
    keys = list(keys)
    resnet_first = "backbone.0." if layout == "fastmetro" else "backbone.conv1."
    if any(k.startswith("backbone.stage2.") for k in keys):
        return "hrnet"
    if any(k.startswith(resnet_first) for k in keys):
        return "resnet"
    return None


def _ema_blocks(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """{prefix: channels per group} of every complete EMA block under backbone."""
    blocks = {}
    for key in state:
        if key.startswith("backbone.") and key.endswith(".gn.weight"):
            prefix = key[: -len("gn.weight")]
            if all(prefix + part in state for part in EMA_PARTS):
                blocks[prefix] = int(state[prefix + "conv3x3.weight"].shape[0])
    return blocks


def _sd_or_td(prefix: str, channels: int, others: dict[str, int], clip_len: int | None
              ) -> str | None:
    name = prefix.lower()
    if any(h in name for h in ("sd", "spatial")) and not any(h in name for h in ("td", "tempor")):
        return "sd"
    if any(h in name for h in ("td", "tempor")):
        return "td"
    same = [p for p, c in others.items() if c == channels and p != prefix]
    if same:
        return None                          # two blocks of one size and neutral names
    if clip_len is not None and channels == clip_len and channels != 16:
        return "td"
    if channels == 16 and clip_len != 16:
        return "sd"
    return None


def from_fastmetro(state: Mapping[str, torch.Tensor], backbone: str,
                   clip_len: int | None = None
                   ) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """FastMETRO / STDFormer-release names -> this project's. Returns (renamed state, notes):
    notes["skipped"] (known keys with no place here), notes["unsupported"], notes["unknown"]
    (keys no row maps), notes["ambiguous"] (EMA blocks whose role is unclear)."""
    rows = key_map(backbone)
    out: dict[str, torch.Tensor] = {}
    notes: dict[str, list[str]] = {"skipped": [], "unsupported": [], "unknown": [],
                                   "ambiguous": []}
    ema = {p: c for p, c in _ema_blocks(state).items()
           if p not in ("backbone.sd.", "backbone.td.")}
    ema_keys = {p + part for p in ema for part in EMA_PARTS}
    for prefix, channels in ema.items():
        role = _sd_or_td(prefix, channels, ema, clip_len)
        if role is None:
            notes["ambiguous"].append(f"{prefix}* ({channels} channels a group)")
            continue
        for part in EMA_PARTS:
            out[f"disentangle.{role}.{part}"] = state[prefix + part]
    for key, value in state.items():
        if key in ema_keys:
            continue
        if key.startswith(tuple(SKIPPED)):
            notes["skipped"].append(key)
        elif key.startswith(tuple(UNSUPPORTED)):
            notes["unsupported"].append(key)
        elif (new := _rename(key, rows, reverse=True)) is not None:
            out[new] = value
        else:
            notes["unknown"].append(key)
    return out, notes


def to_fastmetro(state: Mapping[str, torch.Tensor], backbone: str
                 ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """This project's names -> FastMETRO's (SD/TD as backbone.sd.* / backbone.td.*, which
    FastMETRO's own loader, load_state_dict(strict=False), ignores). Returns (state, keys with
    no FastMETRO name)."""
    rows = key_map(backbone)
    out, left = {}, []
    for key, value in state.items():
        new = _rename(key, rows, reverse=False)
        if new is None:
            left.append(key)
        else:
            out[new] = value
    return out, left


__all__ = ["GROUPS", "SKIPPED", "backbone_of", "from_fastmetro", "group_of", "key_map",
           "layout_of", "to_fastmetro"]
