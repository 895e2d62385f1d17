"""FastMETRO-style transformer (Cho et al., ECCV 2022): encoder-decoder stages of shrinking width.

Per stage (pre-norm DETR layers, ReLU FFN, dropout):
  encoder input  [camera token; image tokens], 2D sine positional encoding on image tokens only
                 (added to queries and keys, not values);
  decoder input  J joint tokens + V coarse-vertex tokens; self-attention restricted by the mesh
                 mask (`decoder_attention_mask`); cross-attention to the encoded image tokens,
                 whose keys carry the positional encoding.
Between stages three Linear layers shrink the camera, image and joint/vertex features to the
next width. Heads on the last stage: one shared Linear(->3) per joint/vertex token (3D
coordinates) and one Linear(->3) on the camera token (weak-perspective s, tx, ty).

Parameter names inside a stage match FastMETRO's (encoder.layers.i.self_attn, linear1, norm1,
decoder.layers.i.multihead_attn, ...), so its checkpoints map over by renaming prefixes only.
All tensors are batch-first: (N, L, D).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F


def sine_position_encoding(h: int, w: int, dim: int, device: torch.device | None = None,
                           temperature: float = 10000.0) -> torch.Tensor:
    """DETR/FastMETRO normalised 2D sine encoding -> (h*w, dim), row-major over (h, w).

    The first dim/2 features encode y, the rest x; each half alternates sin/cos of the position
    (scaled to (0, 2*pi]) over geometric frequencies.
    """
    if dim % 4:
        raise ValueError(f"sine position encoding needs a width divisible by 4, got {dim}")
    half = dim // 2
    eps = 1e-6
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device) / (h + eps) * 2 * math.pi
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device) / (w + eps) * 2 * math.pi
    i = torch.arange(half, dtype=torch.float32, device=device)
    freq = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)   # (half,)

    def encode(pos: torch.Tensor) -> torch.Tensor:            # (n,) -> (n, half)
        angles = pos[:, None] / freq                           # (n, half)
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(h, w, half)           # (h, w, half)
    pos_x = encode(x)[None, :, :].expand(h, w, half)           # (h, w, half)
    return torch.cat([pos_y, pos_x], dim=2).reshape(h * w, dim)


def decoder_attention_mask(adjacency: sp.spmatrix | sp.sparray | np.ndarray,
                           num_joints: int) -> torch.Tensor:
    """Boolean self-attention mask for [J joint tokens; V vertex tokens], True = may NOT attend.

    Joints attend to every token. A vertex attends to all joints, to itself and to the vertices
    adjacent to it (non-zero entries of its row of the (V, V) `adjacency`).
    Returns (J+V, J+V), the `attn_mask` convention of nn.MultiheadAttention.
    """
    adj = sp.csr_array(adjacency)
    v = adj.shape[0]
    if adj.shape != (v, v):
        raise ValueError(f"adjacency must be square, got {adj.shape}")
    allowed = (adj != 0).toarray() | np.eye(v, dtype=bool)      # (V, V)
    mask = np.zeros((num_joints + v, num_joints + v), dtype=bool)
    mask[num_joints:, num_joints:] = ~allowed
    return torch.from_numpy(mask)


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + FFN. Token 0 is the camera token (no positional encoding)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """src (N, 1+HW, D), pos (HW, D) -> (N, 1+HW, D)."""
        x = self.norm1(src)
        qk = torch.cat([x[:, :1], x[:, 1:] + pos], dim=1)
        src = src + self.dropout1(self.self_attn(qk, qk, x, need_weights=False)[0])
        x = self.norm2(src)
        return src + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x)))))


class DecoderLayer(nn.Module):
    """Pre-norm masked self-attention, cross-attention to the image tokens, FFN."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """tgt (N, J+V, D) joint/vertex tokens, memory (N, HW, D) image tokens, pos (HW, D),
        mask (J+V, J+V) bool (True = blocked) -> (N, J+V, D)."""
        x = self.norm1(tgt)
        tgt = tgt + self.dropout1(self.self_attn(x, x, x, attn_mask=mask, need_weights=False)[0])
        x = self.norm2(tgt)
        tgt = tgt + self.dropout2(
            self.multihead_attn(x, memory + pos, memory, need_weights=False)[0])
        x = self.norm3(tgt)
        return tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x)))))


class Encoder(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(dim, heads, ffn_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return self.norm(src)


class Decoder(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(dim, heads, ffn_dim, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, mask)
        return self.norm(tgt)


class EncoderDecoder(nn.Module):
    """One FastMETRO transformer stage of width `dim`."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float,
                 enc_layers: int, dec_layers: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.dim = dim
        self.encoder = Encoder(dim, heads, ffn_dim, dropout, enc_layers)
        self.decoder = Decoder(dim, heads, ffn_dim, dropout, dec_layers)
        # FastMETRO/DETR: Xavier-uniform for every matrix of the stage.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, cam: torch.Tensor, img: torch.Tensor, queries: torch.Tensor,
                pos: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """cam (N, 1, D), img (N, HW, D), queries (N, J+V, D), pos (HW, D), mask (J+V, J+V)
        -> encoded cam (N, 1, D), encoded img (N, HW, D), decoded queries (N, J+V, D)."""
        encoded = self.encoder(torch.cat([cam, img], dim=1), pos)   # (N, 1+HW, D)
        cam, img = encoded[:, :1], encoded[:, 1:]
        return cam, img, self.decoder(queries, img, pos, mask)


class MeshTransformer(nn.Module):
    """Learnable tokens + FastMETRO stages + heads.

    forward(img (N, widths[0], h, w)) -> cam (N, 3), joints (N, J, 3), vertices (N, V, 3).
    attention_mask: (J+V, J+V) bool from `decoder_attention_mask`, stored as a buffer.
    """

    def __init__(self, widths: list[int], ffn_dims: list[int], heads: int, enc_layers: int,
                 dec_layers: int, dropout: float, num_joints: int,
                 attention_mask: torch.Tensor):
        super().__init__()
        if len(widths) != len(ffn_dims) or not widths:
            raise ValueError(f"need one FFN width per stage: widths={widths} ffn_dims={ffn_dims}")
        n_tokens = attention_mask.shape[0]
        self.num_joints, self.num_vertices = num_joints, n_tokens - num_joints
        self.cam_token_embed = nn.Embedding(1, widths[0])
        self.joint_token_embed = nn.Embedding(num_joints, widths[0])
        self.vertex_token_embed = nn.Embedding(self.num_vertices, widths[0])
        self.stages = nn.ModuleList(
            EncoderDecoder(d, heads, f, dropout, enc_layers, dec_layers)
            for d, f in zip(widths, ffn_dims))
        # Between stage k and k+1: separate reductions for camera, image and query features.
        self.dim_reduce_enc_cam = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.dim_reduce_enc_img = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.dim_reduce_dec = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.xyz_regressor = nn.Linear(widths[-1], 3)
        self.cam_predictor = nn.Linear(widths[-1], 3)
        self.register_buffer("attention_mask", attention_mask.bool(), persistent=False)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, _, h, w = img.shape
        img = img.flatten(2).transpose(1, 2)                               # (N, hw, D0)
        cam = self.cam_token_embed.weight.expand(n, -1, -1)                # (N, 1, D0)
        queries = torch.cat([self.joint_token_embed.weight,
                             self.vertex_token_embed.weight]).expand(n, -1, -1)  # (N, J+V, D0)
        for k, stage in enumerate(self.stages):
            if k > 0:
                cam = self.dim_reduce_enc_cam[k - 1](cam)
                img = self.dim_reduce_enc_img[k - 1](img)
                queries = self.dim_reduce_dec[k - 1](queries)
            pos = sine_position_encoding(h, w, stage.dim, img.device).to(img.dtype)  # (hw, Dk)
            cam, img, queries = stage(cam, img, queries, pos, self.attention_mask)
        cam = self.cam_predictor(cam[:, 0])                                 # (N, 3)
        xyz = self.xyz_regressor(queries)                                   # (N, J+V, 3)
        return cam, xyz[:, :self.num_joints], xyz[:, self.num_joints:]
