"""A weighted ensemble of saved networks: one folder, one call to load, averaged probabilities out.

    from model import load_model
    net = load_model("runs/ensemble")     # an ensemble folder (ensemble.json) or a single model folder
    probs = net.probabilities(x)          # the members' softmax outputs, averaged with their weights
    log_probs = net(x)                    # their log: cross_entropy(net(x), y) is the ensemble's loss

The folder holds ``ensemble.json`` (``members``: sub-folder and weight each) and one saved model folder per
member (``model.io``). The forward pass returns log-probabilities, so every scorer that reads logits
(softmax, argmax, cross-entropy) scores the averaged probabilities.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from model.net import SECCANet

ENSEMBLE = "ensemble.json"
ENSEMBLE_FORMAT = "se-cca-search ensemble"


class SECCAEnsemble(nn.Module):
    def __init__(self, members: list[SECCANet], weights: list[float]) -> None:
        super().__init__()
        if not members or len(members) != len(weights):
            raise ValueError("an ensemble needs one weight per member and at least one member")
        if any(not (w > 0 and math.isfinite(w)) for w in weights):
            raise ValueError(f"ensemble weights must be positive, got {weights}")
        self.members = nn.ModuleList(members)
        total = sum(weights)
        self.register_buffer("log_weights", torch.tensor([math.log(w / total) for w in weights]))
        self.config = members[0].config  # the input and output shapes every member shares

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """log of the weighted mean of the members' probabilities, (B, classes)."""
        stacked = torch.stack([torch.log_softmax(m(x).float(), dim=1) for m in self.members])  # (M, B, C)
        return torch.logsumexp(stacked + self.log_weights.view(-1, 1, 1), dim=0)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).exp()


def is_ensemble_folder(folder: Path) -> bool:
    return (Path(folder) / ENSEMBLE).is_file()


def read_ensemble(folder: Path) -> dict:
    """``ensemble.json``, checked: members with a sub-folder of ``folder`` and a positive weight each."""
    folder = Path(folder)
    record = json.loads((folder / ENSEMBLE).read_text(encoding="utf-8"))
    members = record.get("members") if isinstance(record, dict) else None
    if record.get("format") != ENSEMBLE_FORMAT or not isinstance(members, list) or not members:
        raise ValueError(f"{ENSEMBLE} is not an ensemble of this tool (it needs format and members)")
    for m in members:
        sub = m.get("folder") if isinstance(m, dict) else None
        weight = m.get("weight") if isinstance(m, dict) else None
        if not isinstance(sub, str) or "/" in sub or "\\" in sub or sub in ("", ".", ".."):
            raise ValueError(f"{ENSEMBLE}: a member's folder must be a sub-folder name, got {sub!r}")
        number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
        if not (number and weight > 0 and math.isfinite(weight)):
            raise ValueError(f"{ENSEMBLE}: member {sub}'s weight must be a positive number, got {weight!r}")
    return record


def load_ensemble(folder: Path, *, device: str | torch.device = "cpu", impl: str = "auto") -> SECCAEnsemble:
    from model.io import load_model

    folder = Path(folder)
    record = read_ensemble(folder)
    members = [load_model(folder / m["folder"], impl=impl) for m in record["members"]]
    return SECCAEnsemble(members, [m["weight"] for m in record["members"]]).to(device)
