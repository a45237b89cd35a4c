"""Squeeze-and-excitation gate, as in the seed (``SEAttention``), with one deliberate fix.

The seed builds ``SEAttention(channel=1, reduction=8)``: ``1 // 8 == 0``, so both Linear layers have
zero width, PyTorch warns "Initializing zero-element tensors is a no-op", and the block multiplies
every image by the constant ``sigmoid(0) = 0.5``. Here the squeezed width is
``max(1, channel // reduction)``, so the gate is a real learned function of the image mean.
"""

from __future__ import annotations

import torch
from torch import nn


class SEAttention(nn.Module):
    """x * sigmoid(fc(avgpool(x))): one gate in (0, 1) per channel and image."""

    def __init__(self, channel: int = 1, reduction: int = 8) -> None:
        super().__init__()
        width = max(1, channel // reduction)  # the seed's channel // reduction is 0 for channel=1
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        # Same indices as the seed's Sequential, so weights are named se.fc.0 / se.fc.2.
        self.fc = nn.Sequential(
            nn.Linear(channel, width, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(width, channel, bias=False),
            nn.Sigmoid(),
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.shape
        return self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)  # (B, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)
