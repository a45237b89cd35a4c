"""How ``retrain`` picks its epochs: the rules that map a trial's training onto all training images.

    same-epochs  the trial's own epochs (the default: export records it as the file's ``retrain_rule``)
    best-epoch   the epoch of the trial's best held-out score, read from the file's curves

``--epochs N`` overrides both; ``--epochs-rule`` overrides the file. Measured side by side over retrain seeds
10, 11, 12 (docs/experiments.md): best-epoch trades accuracy for test loss, so export records same-epochs. A
third rule, as many optimiser steps as the trial took, underfit by far (a trial on a sample takes few steps:
1.1-1.2 points less accuracy) and is not offered.
"""

from __future__ import annotations

import math

from search.errors import UsageError
from search.metrics import DIRECTIONS, METRIC_FIELDS

EPOCH_RULES = ("same-epochs", "best-epoch")
RETRAIN_RULE = "same-epochs"


def best_epoch(record: dict, where: str = "the file") -> int:
    """The epoch (from 1) of the trial's best held-out score, from the file's curves."""
    metric = record.get("metric", "loss")
    scores = record.get("curves", {}).get(METRIC_FIELDS.get(metric, "eval_loss"))
    usable = isinstance(scores, list) and scores and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in scores)
    if not usable:
        raise UsageError(f"{where} has no usable per-epoch held-out scores (curves) for --epochs-rule best-epoch; "
                         "use --epochs-rule same-epochs or --epochs N")
    pick = max if DIRECTIONS.get(metric) == "maximize" else min
    return 1 + scores.index(pick(scores))


def retrain_epochs(rule: str, record: dict, epochs: int, where: str = "the file") -> int:
    """Epochs to retrain for under ``rule`` (EPOCH_RULES); the trial trained ``epochs`` epochs."""
    if rule == "best-epoch":
        return min(best_epoch(record, where), epochs)
    return epochs
