"""The seed's SE + criss-cross-attention MNIST network, built from a ``NetConfig``.

    x (B,1,28,28) -> se -> conv1 (1->C, 1x1) -> cca -> conv2 (C->1, 1x1) -> flatten 784
      -> [dropout] -> fc1 (784->hidden) -> activation -> fc2 (hidden->10)

Module and parameter names are the seed's (``se.fc.0``, ``conv1``, ``cca.query_conv``, ``fc1``...),
so weights map one-to-one to the seed's ``Net``. ``impl`` picks how conv1 -> cca -> conv2 is computed:
``closed-form`` (exact scalar identity, one input channel only), ``reference`` (the general
C-channel attention) or ``auto`` (closed form whenever it applies). Both compute the same function
from the same parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from model.closed_form import closed_form_stage
from model.config import NetConfig
from model.criss_cross import CrissCrossAttention
from model.se_attention import SEAttention

IMPLS = ("auto", "closed-form", "reference")

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}


class SECCANet(nn.Module):
    def __init__(self, config: NetConfig, *, impl: str = "auto") -> None:
        super().__init__()
        self.config = config
        self.impl = impl
        c = config.cca_channels
        self.se = SEAttention(channel=config.in_channels, reduction=config.se_reduction)
        self.conv1 = nn.Conv2d(config.in_channels, c, kernel_size=1)
        self.cca = CrissCrossAttention(c)
        self.conv2 = nn.Conv2d(c, 1, kernel_size=1)
        self.drop = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.fc1 = nn.Linear(config.image_size * config.image_size, config.hidden_size)
        self.act = _ACTIVATIONS[config.activation]()
        self.fc2 = nn.Linear(config.hidden_size, config.num_classes)
        if config.init == "kaiming":
            self._kaiming_init()

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        if value not in IMPLS:
            raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {value!r}")
        if value == "closed-form" and self.config.in_channels != 1:
            raise ValueError("the closed form needs one input channel; use impl='reference'")
        self._impl = value

    @property
    def uses_closed_form(self) -> bool:
        return self._impl == "closed-form" or (self._impl == "auto" and self.config.in_channels == 1)

    def _kaiming_init(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(x)  # (B, 1, H, W)
        if self.uses_closed_form:
            x = closed_form_stage(x, self.conv1, self.cca, self.conv2)  # (B, 1, H, W)
        else:
            x = self.conv2(self.cca(self.conv1(x)))  # (B, 1, H, W) via (B, C, H, W)
        x = self.drop(x.flatten(1))  # (B, H*W)
        return self.fc2(self.act(self.fc1(x)))  # (B, classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
