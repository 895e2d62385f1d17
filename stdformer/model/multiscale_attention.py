"""Efficient Multi-scale Attention (EMA) and STDFormer's spatial/temporal disentanglement.

EMA (Ouyang et al., ICASSP 2023) re-weights each channel group of a feature map with a spatial
attention map built from two branches: a cheap "coordinate" branch (1x1 conv on the H- and
W-pooled group) and a 3x3 conv branch, crossed through channel-softmax descriptors.

STDFormer applies it twice right after the backbone's first residual stage (stdformer.md s.1):
  SD: EMA(C, G_sd) per frame: groups are C/G_sd feature channels of one frame (spatial).
  TD: EMA(C*S, G_td) after a temporal shuffle that stacks the S frames of a clip as channels,
      ordered so that each run of S channels is one feature channel across the clip; with
      G_td = C every group is exactly one feature channel over time (temporal).
  Fusion: w = sigmoid(GAP(SD + TD)), out = w * SD + (1 - w) * TD (replaces x, no residual).
"""

from __future__ import annotations

import torch
from torch import nn


class EMA(nn.Module):
    """EMA(channels, groups) on (N, C, H, W) -> (N, C, H, W).

    Parameters (per-group shared): GroupNorm(C/G, C/G) 2*C/G, 1x1 conv (C/G)^2 + C/G,
    3x3 conv 9*(C/G)^2 + C/G. EMA(256, 16): 2,624; EMA(2048, 256): 672.
    """

    def __init__(self, channels: int, groups: int):
        super().__init__()
        if groups < 1 or channels % groups:
            raise ValueError(f"EMA: channels ({channels}) must be a multiple of groups ({groups})")
        self.channels, self.groups = channels, groups
        cg = channels // groups  # channels per group
        # GroupNorm with one channel per norm group: normalises each channel over H, W.
        self.gn = nn.GroupNorm(cg, cg)
        self.conv1x1 = nn.Conv2d(cg, cg, kernel_size=1)
        self.conv3x3 = nn.Conv2d(cg, cg, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = x.reshape(n * self.groups, c // self.groups, h, w)          # (n*G, c/G, h, w)
        ng, cg = g.shape[:2]

        # Coordinate branch: pool along W (-> h profile) and along H (-> w profile), one shared
        # 1x1 conv over both, then gate the group with both sigmoids.
        pooled_h = g.mean(dim=3, keepdim=True)                          # (nG, cg, h, 1)
        pooled_w = g.mean(dim=2, keepdim=True).transpose(2, 3)          # (nG, cg, w, 1)
        hw = self.conv1x1(torch.cat([pooled_h, pooled_w], dim=2))       # (nG, cg, h+w, 1)
        gate_h, gate_w = hw.split([h, w], dim=2)
        x1 = self.gn(g * gate_h.sigmoid() * gate_w.transpose(2, 3).sigmoid())  # (nG, cg, h, w)

        # Local branch: 3x3 conv.
        x2 = self.conv3x3(g)                                            # (nG, cg, h, w)

        # Cross-spatial learning: a channel-softmax descriptor of one branch weights the other's
        # pixels; the two products sum to one spatial map per group.
        desc1 = torch.softmax(x1.mean(dim=(2, 3)), dim=-1).unsqueeze(1)  # (nG, 1, cg)
        desc2 = torch.softmax(x2.mean(dim=(2, 3)), dim=-1).unsqueeze(1)  # (nG, 1, cg)
        spatial = (desc1 @ x2.reshape(ng, cg, h * w)
                   + desc2 @ x1.reshape(ng, cg, h * w))                  # (nG, 1, h*w)
        out = g * spatial.reshape(ng, 1, h, w).sigmoid()                 # (nG, cg, h, w)
        return out.reshape(n, c, h, w)


def temporal_shuffle(x: torch.Tensor, clip_len: int) -> torch.Tensor:
    """(B*S, C, H, W) frame-major -> (B, C*S, H, W) with channel c*S + s = channel c of frame s.

    So each run of S consecutive channels is one feature channel across the clip.
    """
    bs, c, h, w = x.shape
    if bs % clip_len:
        raise ValueError(f"batch of {bs} frames is not a whole number of clips of {clip_len}")
    x = x.reshape(bs // clip_len, clip_len, c, h, w)    # (B, S, C, H, W)
    return x.transpose(1, 2).reshape(bs // clip_len, c * clip_len, h, w)


def temporal_unshuffle(x: torch.Tensor, clip_len: int) -> torch.Tensor:
    """Inverse of `temporal_shuffle`: (B, C*S, H, W) -> (B*S, C, H, W)."""
    b, cs, h, w = x.shape
    x = x.reshape(b, cs // clip_len, clip_len, h, w)    # (B, C, S, H, W)
    return x.transpose(1, 2).reshape(b * clip_len, cs // clip_len, h, w)


class SpatioTemporalDisentangle(nn.Module):
    """SD/TD block on (B*S, C, H, W) frame-major clips -> same shape.

    channels: C; clip_len: S (TD's group size depends on it, so clips must have exactly S
    frames); sd_groups: G_sd; td_groups: G_td (over the C*S shuffled channels).
    sd/td switch the branches for the ablations: both -> gated fusion; one -> that branch's
    output; neither -> identity (FastMETRO), with no parameters.
    """

    def __init__(self, channels: int, clip_len: int, sd_groups: int, td_groups: int,
                 sd: bool = True, td: bool = True):
        super().__init__()
        self.channels, self.clip_len = channels, clip_len
        self.sd = EMA(channels, sd_groups) if sd else None
        self.td = EMA(channels * clip_len, td_groups) if td else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sd is None and self.td is None:
            return x
        sd = self.sd(x) if self.sd is not None else None                # (B*S, C, H, W)
        td = None
        if self.td is not None:
            shuffled = temporal_shuffle(x, self.clip_len)               # (B, C*S, H, W)
            td = temporal_unshuffle(self.td(shuffled), self.clip_len)   # (B*S, C, H, W)
        if td is None:
            return sd
        if sd is None:
            return td
        w = torch.sigmoid((sd + td).mean(dim=(2, 3), keepdim=True))     # (B*S, C, 1, 1)
        return w * sd + (1 - w) * td

    def extra_repr(self) -> str:
        return f"channels={self.channels}, clip_len={self.clip_len}"
