"""Criss-cross attention (CCNet), the seed's general C-channel implementation.

Each pixel attends to the H + W - 1 pixels on its row and column; the ``-inf`` diagonal keeps the
centre pixel from being counted twice. Unlike the seed, which rebuilds a (B*W, H, H) ``-inf``
tensor on the CPU in every forward, the mask here is an (H, H) non-persistent buffer built once
per height on the module's device and broadcast over the batch.
"""

from __future__ import annotations

import torch
from torch import nn


class CrissCrossAttention(nn.Module):
    """gamma * (attention over the row and column) + x; gamma starts at 0 (identity at init)."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.query_conv = nn.Conv2d(in_dim, in_dim // 8, kernel_size=1)
        self.key_conv = nn.Conv2d(in_dim, in_dim // 8, kernel_size=1)
        self.value_conv = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.register_buffer("diag_mask", torch.zeros(0, 0), persistent=False)

    def _mask(self, height: int, like: torch.Tensor) -> torch.Tensor:
        mask = self.diag_mask
        if mask.shape[0] != height or mask.device != like.device or mask.dtype != like.dtype:
            mask = torch.diag(torch.full((height,), float("-inf"), device=like.device, dtype=like.dtype))
            self.diag_mask = mask  # cached: rebuilt only when the height, device or dtype changes
        return mask  # (H, H), -inf on the diagonal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.query_conv(x)  # (B, C/8, H, W)
        k = self.key_conv(x)
        v = self.value_conv(x)  # (B, C, H, W)
        # Column attention: for pixel (i, j), logits over k = 0..H-1 in column j.
        q_h = q.permute(0, 3, 2, 1).reshape(b * w, h, -1)  # (B*W, H, C/8)
        k_h = k.permute(0, 3, 1, 2).reshape(b * w, -1, h)  # (B*W, C/8, H)
        energy_h = (torch.bmm(q_h, k_h) + self._mask(h, x)).view(b, w, h, h).permute(0, 2, 1, 3)  # (B, H, W, H)
        # Row attention: for pixel (i, j), logits over l = 0..W-1 in row i.
        q_w = q.permute(0, 2, 3, 1).reshape(b * h, w, -1)  # (B*H, W, C/8)
        k_w = k.permute(0, 2, 1, 3).reshape(b * h, -1, w)  # (B*H, C/8, W)
        energy_w = torch.bmm(q_w, k_w).view(b, h, w, w)  # (B, H, W, W)
        att = torch.softmax(torch.cat([energy_h, energy_w], dim=3), dim=3)  # (B, H, W, H+W)
        att_h = att[..., :h].permute(0, 2, 1, 3).reshape(b * w, h, h)  # (B*W, H_i, H_k)
        att_w = att[..., h:].reshape(b * h, w, w)  # (B*H, W_j, W_l)
        v_h = v.permute(0, 3, 1, 2).reshape(b * w, -1, h)  # (B*W, C, H)
        v_w = v.permute(0, 2, 1, 3).reshape(b * h, -1, w)  # (B*H, C, W)
        out_h = torch.bmm(v_h, att_h.transpose(1, 2)).view(b, w, -1, h).permute(0, 2, 3, 1)  # (B, C, H, W)
        out_w = torch.bmm(v_w, att_w.transpose(1, 2)).view(b, h, -1, w).permute(0, 2, 1, 3)  # (B, C, H, W)
        return self.gamma * (out_h + out_w) + x
