"""The network's configuration: a frozen dataclass, the only thing needed to rebuild the model.

A saved model stores this as ``config.json`` beside its safetensors weights (see ``model.io``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

ACTIVATIONS = ("relu", "gelu", "tanh", "leaky_relu")
INITS = ("default", "kaiming")


@dataclass(frozen=True)
class NetConfig:
    """Shape and knobs of the SE + criss-cross-attention network (defaults are the seed's)."""

    hidden_size: int = 128  # width of fc1 (seed: 128)
    cca_channels: int = 64  # channels between conv1 and conv2 (seed: 64); q/k get cca_channels // 8
    se_reduction: int = 8  # SE squeeze ratio (seed: 8); SE width is max(1, in_channels // se_reduction)
    activation: str = "relu"  # head activation between fc1 and fc2 (seed: ReLU)
    dropout: float = 0.0  # dropout on the flattened features before the head (seed: none)
    init: str = "default"  # "default" (PyTorch's) or "kaiming" (Kaiming-normal weights, zero biases)
    num_classes: int = 10
    image_size: int = 28
    in_channels: int = 1

    def __post_init__(self) -> None:
        # ValueError, not a domain error: model/ stays free of the CLI's exception hierarchy.
        if self.hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {self.hidden_size}")
        if self.cca_channels < 8:
            raise ValueError(f"cca_channels must be >= 8 (q/k use cca_channels // 8), got {self.cca_channels}")
        if self.se_reduction < 1:
            raise ValueError(f"se_reduction must be >= 1, got {self.se_reduction}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_classes < 2 or self.image_size < 2 or self.in_channels < 1:
            raise ValueError("num_classes >= 2, image_size >= 2 and in_channels >= 1 are required")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NetConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**data)
