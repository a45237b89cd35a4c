"""A trial's per-epoch curves: stored with the trial, kept off its dashboard page.

The train loss, held-out loss, held-out accuracy, calibrated held-out loss and seconds of every epoch are
written after each epoch as one trial *system* attribute, ``curves``, the way Optuna's own artifacts record themselves
(``storage.set_trial_system_attr``). Not as user attributes: optuna-dashboard lists those on the
trial's page one unbroken line each, and 20 epochs of these lists made that page wider than the
window. People see the curves in the trial's note (a table) and in the study's live figure.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial

# eval_calibrated_loss: the held-out loss at its best temperature (search.metrics.calibrated_cross_entropy).
KEYS = ("train_loss", "eval_loss", "eval_accuracy", "eval_calibrated_loss", "epoch_seconds")


def store_curves(trial: optuna.Trial, curves: dict[str, list[float]]) -> None:
    trial.storage.set_trial_system_attr(trial._trial_id, "curves", curves)


def curves_of(trial: FrozenTrial) -> dict[str, list[float]]:
    """The trial's curves (empty lists when it stored none)."""
    stored = trial.system_attrs.get("curves")
    if not isinstance(stored, dict):
        stored = {}
    return {k: numbers(stored.get(k)) for k in KEYS}


def numbers(values) -> list[float]:
    """``values`` if it is a list of numbers, else no curve (a hand-edited or damaged attribute)."""
    if isinstance(values, list) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return list(values)
    return []
