"""Starting from, inspecting and converting FastMETRO / STDFormer checkpoints.

    load_init_checkpoint(model, path, body_meta, body_model_id) -> InitReport   (model.init_checkpoint)
    inspect_checkpoint(path) -> dict                  (stdformer checkpoint inspect PATH)
    published_model(path, assets) -> (STDFormer, InputProtocol)  (predict / evaluate released
                                                      weights without training)
    convert_checkpoint(src, dst, to="project" | "fastmetro")   (stdformer checkpoint convert)

Files are read with `torch.load(weights_only=True)`: a pickle that asks for anything but
tensors and plain containers is refused, never run. Accepted inputs: FastMETRO's / STDFormer's
bare `state_dict.bin` (names in `stdformer.model.fastmetro`), a state dict in this project's
names (what `convert --to project` writes), or a `models/*.pt` file of this project.

Vertex tokens, the learnable coarse -> mid up-sampling and the decoder mask refer to specific
vertices of one mesh: a checkpoint made for the standard SMPL hierarchy (FastMETRO's; any with
431 vertex tokens that is not this body's own model file) loads only into a model on that
hierarchy (`stdformer.body.checks.standard_smpl_hierarchy`).
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from stdformer.body.checks import STANDARD_SMPL_LEVELS, standard_smpl_hierarchy
from stdformer.io import DataError, write_bytes_atomic
from stdformer.safe_loading import load_torch_file
from stdformer.model.backbone import _unwrap_state_dict
from stdformer.model.fastmetro import (
    GROUPS,
    SKIPPED,
    backbone_of,
    from_fastmetro,
    group_of,
    layout_of,
    to_fastmetro,
)
from stdformer.model.assets import BodyAssets, load_body_assets
from stdformer.model.inputs import InputProtocol
from stdformer.model.model_file import (MODEL_FORMAT, input_protocol, load_model,
                                        torch_save_bytes)
from stdformer.model.stdformer import STDFormer, model_config_from_section


@dataclasses.dataclass
class PretrainedCheckpoint:
    """A checkpoint in this project's names. layout: what the file was ("fastmetro" or
    "project"); backbone: "resnet" / "hrnet" / None; body_model_id: set for a models/*.pt
    file; notes: keys that were skipped / unknown (see fastmetro.from_fastmetro)."""

    path: str
    state: dict[str, torch.Tensor]
    layout: str
    backbone: str | None
    body_model_id: str | None = None
    notes: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def num_vertex_tokens(self) -> int | None:
        w = self.state.get("transformer.vertex_token_embed.weight")
        return None if w is None else int(w.shape[0])


def read_checkpoint(path: str | os.PathLike, clip_len: int | None = None,
                    raw: object | None = None) -> PretrainedCheckpoint:
    """Read and rename a checkpoint (see module docstring); DataError for a missing,
    truncated or unsafe file, or one of another model. `raw`: the file as `load_torch_file`
    gave it, when the caller has read it already (a released file can be 600 MB)."""
    path = Path(path)
    if raw is None:
        if not path.is_file():
            raise DataError(path, "checkpoint file not found")
        raw = load_torch_file(path, "checkpoint")
    body_model_id = None
    if isinstance(raw, dict) and raw.get("format") == MODEL_FORMAT:
        body_model_id, raw = raw.get("body_model_id"), raw.get("weights")
    state = _unwrap_state_dict(raw, path)
    layout = layout_of(state)
    if layout is None:
        sample = ", ".join(sorted(state)[:3]) or "no keys"
        raise DataError(path, f"not a FastMETRO / STDFormer checkpoint (no transformer_1.* or "
                        f"transformer.stages.* keys; it has {sample}, ...): another model's?")
    backbone = backbone_of(state, layout)
    notes: dict[str, list[str]] = {}
    if layout == "fastmetro":
        state, notes = from_fastmetro(state, backbone or "hrnet", clip_len)
    return PretrainedCheckpoint(str(path), dict(state), layout, backbone, body_model_id, notes)


# --------------------------------------------------------------------------------------------
# Loading into a model


@dataclasses.dataclass
class InitReport:
    """What `load_init_checkpoint` did, by group (GROUPS)."""

    path: str
    layout: str
    loaded: dict[str, int]                  # group -> tensors loaded
    fresh: list[str]                        # model keys left at their initial values (SD/TD)
    skipped: list[str]                      # checkpoint keys with no place in the model

    def lines(self) -> list[str]:
        loaded = ", ".join(f"{g} {n}" for g, n in self.loaded.items() if n)
        out = [f"init from {self.path} ({self.layout} layout): loaded {loaded} tensors"]
        if self.fresh:
            out.append(f"  start fresh ({_summary(self.fresh)}): not in the checkpoint")
        if self.skipped:
            out.append(f"  skipped ({_summary(self.skipped)}): " + "; ".join(
                why for prefix, why in SKIPPED.items()
                if any(k.startswith(prefix) for k in self.skipped)))
        return out


def _summary(keys: list[str]) -> str:
    counts = Counter(group_of(k) for k in keys)
    return ", ".join(f"{g}: {counts[g]} keys" for g in GROUPS if counts[g])


def check_hierarchy(ckpt: PretrainedCheckpoint, body_meta: dict, body_model_id: str,
                    body_dir: str | os.PathLike = "data/body") -> None:
    """Refuse weights made for the standard SMPL hierarchy when the body is not on it."""
    own_model = ckpt.body_model_id is not None and ckpt.body_model_id == body_model_id
    made_for_smpl = ckpt.layout == "fastmetro" or (
        not own_model and ckpt.num_vertex_tokens == STANDARD_SMPL_LEVELS[-1])
    if not made_for_smpl:
        return
    standard, why = standard_smpl_hierarchy(body_meta)
    if not standard:
        raise DataError(ckpt.path, f"made for the standard SMPL mesh hierarchy (431 / 1723 / "
                        f"6890 vertices from mesh_downsampling.npz); the body in {body_dir} is "
                        f"not ({why}): its vertex tokens and up-sampling would refer to other "
                        "vertices", field="model.init_checkpoint")


def load_init_checkpoint(model: nn.Module, path: str | os.PathLike, body_meta: dict,
                         body_model_id: str, body_dir: str | os.PathLike = "data/body"
                         ) -> InitReport:
    """Initialise `model` (an STDFormer) from a checkpoint. Every model tensor must come from
    the file except SD/TD, which start fresh when the file has none; keys of the file the model
    has no place for are refused, except FastMETRO's optional SMPL-parameter regressor (skipped
    and reported). A shape mismatch is refused naming the key. Nothing is loaded unless all
    checks pass."""
    clip_len = getattr(getattr(model, "cfg", None), "clip_len", None)
    return _load_into(model, read_checkpoint(path, clip_len), body_meta, body_model_id, body_dir)


def _load_into(model: nn.Module, ckpt: PretrainedCheckpoint, body_meta: dict, body_model_id: str,
               body_dir: str | os.PathLike) -> InitReport:
    path = ckpt.path
    check_hierarchy(ckpt, body_meta, body_model_id, body_dir)
    problems = [f"unsupported: {k}" for k in ckpt.notes.get("unsupported", [])]
    problems += [f"SD/TD block of unclear role: {k}" for k in ckpt.notes.get("ambiguous", [])]
    own = model.state_dict()
    for key in sorted(ckpt.state.keys() & own.keys()):
        if ckpt.state[key].shape != own[key].shape:
            raise DataError(path, f"shape {tuple(ckpt.state[key].shape)} does not fit the "
                            f"model's {tuple(own[key].shape)} (check model.* against "
                            "`stdformer checkpoint inspect`)", field=key)
    missing = sorted(k for k in own.keys() - ckpt.state.keys()
                     if not k.endswith("num_batches_tracked"))
    fresh = [k for k in missing if group_of(k) == "SD/TD"]
    missing = [k for k in missing if k not in fresh]
    unexpected = sorted(ckpt.state.keys() - own.keys()) + ckpt.notes.get("unknown", [])
    if missing:
        problems.append(f"missing from the file ({_summary(missing)}), e.g. {missing[0]}")
    if unexpected:
        problems.append(f"no place in the model ({_summary(unexpected)}), e.g. {unexpected[0]}")
    if problems:
        raise DataError(path, "does not fit the model: " + "; ".join(problems) +
                        " (compare model.* in params.yaml with `stdformer checkpoint inspect`)",
                        field="model.init_checkpoint")
    model.load_state_dict({k: v for k, v in ckpt.state.items() if k in own}, strict=False)
    loaded = Counter(group_of(k) for k in ckpt.state if k in own)
    return InitReport(ckpt.path, ckpt.layout, {g: loaded[g] for g in GROUPS}, fresh,
                      ckpt.notes.get("skipped", []))


# --------------------------------------------------------------------------------------------
# Inspecting and converting


def inspect_checkpoint(path: str | os.PathLike) -> dict:
    """A summary: layout, backbone, transformer size, SD/TD, tokens, parameters by group, and
    the `model:` params that fit it."""
    ckpt = read_checkpoint(path)
    s = ckpt.state
    arch = architecture(ckpt)
    widths, ffn, enc, dec, sd_td = (arch[k] for k in ("widths", "ffn_dims", "enc_layers",
                                                      "dec_layers", "sd_td"))
    params = Counter()
    for key, value in s.items():
        if value.is_floating_point() and "running_" not in key:
            params[group_of(key)] += value.numel()
    size = {1: "S", 2: "M", 3: "L"}.get(enc) if enc == dec else None
    fastmetro_name = (f"FastMETRO-{size}-{'H64' if ckpt.backbone == 'hrnet' else 'R50'}"
                      if size and widths == [512, 128] else None)
    suggested = model_params_of(ckpt)
    return {
        "path": str(path), "layout": ckpt.layout, "name": fastmetro_name,
        "backbone": ckpt.backbone, "transformer": {"widths": widths, "ffn_dims": ffn,
                                                   "enc_layers": enc, "dec_layers": dec},
        "joint_tokens": (int(s["transformer.joint_token_embed.weight"].shape[0])
                         if "transformer.joint_token_embed.weight" in s else None),
        "vertex_tokens": ckpt.num_vertex_tokens,
        "sd_td": sd_td,
        "parameters": {g: params[g] for g in GROUPS}, "total_parameters": sum(params.values()),
        "body_model_id": ckpt.body_model_id,
        "skipped": ckpt.notes.get("skipped", []), "unknown": ckpt.notes.get("unknown", []),
        "needs_standard_smpl_hierarchy": ckpt.layout == "fastmetro"
        or ckpt.num_vertex_tokens == STANDARD_SMPL_LEVELS[-1],
        "model_params": suggested,
    }


def architecture(ckpt: PretrainedCheckpoint) -> dict:
    """The transformer's shape as the tensors tell it: widths and FFN sizes per stage, encoder
    and decoder layers a stage, and which of SD / TD the file holds."""
    s = ckpt.state
    stages = sorted({int(k.split(".")[2]) for k in s if k.startswith("transformer.stages.")})
    return {
        "widths": [int(s[f"transformer.stages.{i}.encoder.norm.weight"].shape[0]) for i in stages],
        "ffn_dims": [int(s[f"transformer.stages.{i}.encoder.layers.0.linear1.weight"].shape[0])
                     for i in stages],
        "enc_layers": len({k.split(".")[5] for k in s
                           if k.startswith("transformer.stages.0.encoder.layers.")}),
        "dec_layers": len({k.split(".")[5] for k in s
                           if k.startswith("transformer.stages.0.decoder.layers.")}),
        "sd_td": sorted({k.split(".")[1] for k in s if k.startswith("disentangle.")}),
    }


def model_params_of(ckpt: PretrainedCheckpoint) -> dict:
    """The `model:` params whose network has exactly the checkpoint's tensors: SD/TD only where
    the file has them (a FastMETRO file: `sd: false, td: false`, so the network stays
    FastMETRO's instead of gaining fresh SD/TD blocks), FastMETRO's coordinate head
    (`template_head: false`) unless the file is one of ours with a template head. TD's
    channels per group are the clip length S; where SD/TD sit (`sd_td_at`) cannot be read from
    EMA's parameters (they depend only on channels per group): the default, layer1, is kept."""
    s = ckpt.state
    arch = architecture(ckpt)
    params = {"profile": "full" if ckpt.backbone == "hrnet" else "resnet50",
              "sd": "sd" in arch["sd_td"], "td": "td" in arch["sd_td"],
              "enc_layers": arch["enc_layers"], "dec_layers": arch["dec_layers"],
              "template_head": any(k.endswith("template_coarse") for k in s)}
    td_gn = s.get("disentangle.td.gn.weight")
    if td_gn is not None:
        params["clip_len"] = int(td_gn.shape[0])
    if arch["widths"] != [512, 128]:
        params.update(widths=arch["widths"], ffn_dims=arch["ffn_dims"])
    params["init_checkpoint"] = ckpt.path
    return params


# --------------------------------------------------------------------------------------------
# Released weights as a ready model (predict, evaluate)

# The papers' input: 224 px crops, ImageNet normalisation. A bare state dict records no crop
# scale or context: the caller's preprocess settings stand for them.
PUBLISHED_CROP_SIZE = 224


def published_model(path: str | os.PathLike, assets: BodyAssets, clip_len: int = 8,
                    body_dir: str | os.PathLike = "data/body", raw: object | None = None
                    ) -> tuple[STDFormer, InputProtocol]:
    """A released FastMETRO / STDFormer `state_dict.bin` as a ready network (eval mode): the
    layout detected from the keys, the network built to fit them (`model_params_of`: the file's
    own architecture, nothing fresh), the body refused unless it is the standard SMPL hierarchy
    the weights refer to. Returns it with its input protocol (224 px crops, ImageNet). `raw`:
    as for `read_checkpoint`."""
    ckpt = read_checkpoint(path, clip_len, raw)
    params = {k: v for k, v in model_params_of(ckpt).items() if k != "init_checkpoint"}
    cfg = model_config_from_section({"clip_len": clip_len, **params}, source=str(path))
    model = STDFormer.from_hierarchy(cfg, assets.hierarchy)
    _load_into(model, ckpt, assets.meta, assets.body_model_id, body_dir)
    return model.eval(), InputProtocol(crop_size=PUBLISHED_CROP_SIZE, crop_scale=None,
                                       context=None, clip_len=cfg.clip_len)


def load_model_or_checkpoint(path: str | os.PathLike, body_dir: str | os.PathLike,
                             map_location: str | torch.device = "cpu", clip_len: int = 8
                             ) -> tuple[STDFormer, InputProtocol | None]:
    """This project's model file, or a released FastMETRO / STDFormer checkpoint
    (`published_model`, clips of `clip_len` frames unless its TD fixes them), with the input
    protocol it records (None for an older model file). The file is read once."""
    if not Path(path).is_file():
        raise DataError(path, "file not found")
    raw = load_torch_file(path, "model file or checkpoint", map_location)
    if not (isinstance(raw, dict) and raw.get("format") == MODEL_FORMAT):
        model, inputs = published_model(path, load_body_assets(body_dir), clip_len, body_dir,
                                        raw=raw)
        return model.to(map_location), inputs
    model = load_model(path, body_dir, map_location, payload=raw)
    return model, input_protocol(raw, path)


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, to: str) -> dict:
    """Write `src` as a bare state dict in FastMETRO's names (to="fastmetro": FastMETRO-based
    code loads it; SD/TD go to backbone.sd.* / backbone.td.*) or in this project's names
    (to="project": model.init_checkpoint loads it). Written atomically; nothing is written when
    the checkpoint cannot be expressed in the target layout. Returns inspect-like counts."""
    if to not in ("project", "fastmetro"):
        raise ValueError(f"--to must be 'project' or 'fastmetro', got {to!r}")
    ckpt = read_checkpoint(src)
    state = ckpt.state
    if ckpt.notes.get("unknown") or ckpt.notes.get("ambiguous"):
        raise DataError(src, "keys with no place in either layout: " + ", ".join(
            (ckpt.notes.get("unknown", []) + ckpt.notes.get("ambiguous", []))[:3]))
    if to == "fastmetro":
        if ckpt.backbone is None:
            raise DataError(src, "no backbone weights: FastMETRO's layout needs them")
        stages = {k.split(".")[2] for k in state if k.startswith("transformer.stages.")}
        if stages != {"0", "1"}:
            raise DataError(src, f"FastMETRO's layout has two transformer stages; this model "
                            f"has {len(stages)}")
        state, left = to_fastmetro(state, ckpt.backbone)
        if left:
            raise DataError(src, f"{len(left)} keys have no FastMETRO name, e.g. {left[0]}")
    payload = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    write_bytes_atomic(dst, torch_save_bytes(payload))
    return {"tensors": len(payload), "skipped": ckpt.notes.get("skipped", [])}


__all__ = ["PretrainedCheckpoint", "InitReport", "architecture", "check_hierarchy", "convert_checkpoint",
           "inspect_checkpoint", "load_init_checkpoint", "load_model_or_checkpoint",
           "model_params_of", "published_model", "read_checkpoint"]
