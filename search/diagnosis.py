"""Fit diagnosis from a trial's curves, after the seed's sections 1.2 (what curves show) and 1.3 (remedies).

The rules, checked in this order on per-epoch mean train loss ``train`` and held-out loss ``held``
(n epochs; C classes; chance-level loss is ln C):

1. not converging   a curve is empty or non-finite, or both the last train loss and the last held-out
                    loss are above half of ln C (2.303 for 10 classes: the network barely beats
                    guessing). Both, because the train loss is a mean over the epoch: after one epoch
                    it still carries the first steps' ln C while the held-out loss, scored at the
                    epoch's end, already shows a network at 75% accuracy.
2. overfitting      n >= 3, the held-out loss bottomed out at an earlier epoch e*, ended more than 10%
                    above that minimum, and the train loss kept falling after e*.
3. oscillating      n >= 4 and, over the last ``WINDOW`` epochs, the held-out loss changes direction at
                    least twice with a fluctuation (mean |epoch-to-epoch change| / mean held-out loss)
                    above 5%.
4. underfitting     the last train loss is above 0.25 and the held-out loss is within 25% of it (no
                    generalisation gap to blame: the model itself is too weak or too short-trained).
5. good fit         none of the above.

A stored trial with fewer than 2 epochs (pruned early) gets no diagnosis unless it is not converging;
one with no epoch on record gets none.

``fluctuation`` is also what ``search.compare`` reports as the seed's "less stable", made a number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

NOT_CONVERGING = "not converging"
OVERFITTING = "overfitting"
OSCILLATING = "oscillating"
UNDERFITTING = "underfitting"
GOOD_FIT = "good fit"

REMEDIES = {
    OVERFITTING: "data augmentation, early stopping, dropout, a lower learning rate, fewer epochs",
    UNDERFITTING: "a deeper or wider network, non-linear activations such as ReLU, more epochs",
    OSCILLATING: "less data augmentation, a lower learning rate",
    GOOD_FIT: "nothing to fix: this is the fit to keep",
    NOT_CONVERGING: "check the data set and the model (and try a lower learning rate)",
}

WINDOW = 5
OVERFIT_RISE = 0.10
OSCILLATION_LEVEL = 0.05
UNDERFIT_LOSS = 0.25
UNDERFIT_GAP = 0.25


def fluctuation(held: Sequence[float], window: int = WINDOW) -> float:
    """Mean absolute epoch-to-epoch change of the last ``window`` held-out losses, relative to their mean."""
    tail = list(held)[-window:]
    if len(tail) < 2:
        return 0.0
    steps = [abs(b - a) for a, b in zip(tail, tail[1:])]
    mean = sum(tail) / len(tail)
    return (sum(steps) / len(steps)) / mean if mean > 0 else 0.0


def direction_changes(values: Sequence[float]) -> int:
    signs = [1 if b > a else -1 for a, b in zip(values, values[1:]) if b != a]
    return sum(1 for a, b in zip(signs, signs[1:]) if a != b)


def diagnose(train: Sequence[float], held: Sequence[float], *, num_classes: int = 10) -> str:
    n = min(len(train), len(held))  # a hand-edited file may hold curves of unequal length: read their overlap
    train, held = list(train)[:n], list(held)[:n]
    if not train or not held or not all(math.isfinite(v) for v in train + held):
        return NOT_CONVERGING
    if min(train[-1], held[-1]) > 0.5 * math.log(num_classes):
        return NOT_CONVERGING
    best = min(range(n), key=held.__getitem__)
    if n >= 3 and best < n - 1 and held[-1] > held[best] * (1 + OVERFIT_RISE) and train[-1] < train[best]:
        return OVERFITTING
    tail = held[-WINDOW:]
    if n >= 4 and direction_changes(tail) >= 2 and fluctuation(held) > OSCILLATION_LEVEL:
        return OSCILLATING
    if train[-1] > UNDERFIT_LOSS and held[-1] - train[-1] < UNDERFIT_GAP * train[-1]:
        return UNDERFITTING
    return GOOD_FIT


UNSTABLE_RISE = 0.5  # a healthy run ends near its lowest train loss; a measured blow-up doubled it (0.138 -> 0.287)


def unstable_end(train: Sequence[float]) -> str | None:
    """Why a finished run's weights are not to be trusted, or None: its last epoch's mean train loss is
    non-finite or more than 50% above the lowest earlier one. Such a run blew up at its end (a high constant
    rate does so now and then: one of three retrain seeds of a measured 30-minute answer ended at 79% test
    accuracy, the other two at 98.2-98.5%), so its scores say little about the configuration. It reads the
    train loss only, never a held-out or test score."""
    train = list(train)
    earlier = [v for v in train[:-1] if math.isfinite(v)]
    if not earlier or (math.isfinite(train[-1]) and train[-1] <= min(earlier) * (1 + UNSTABLE_RISE)):
        return None
    low = min(earlier)
    return (f"the mean training loss rose from {low:.4f} (epoch {train.index(low) + 1}) to {train[-1]:.4f} in the "
            f"last epoch ({len(train)}): the run went unstable")


def diagnose_trial(user_attrs: dict) -> str | None:
    """The diagnosis of a stored trial, or None when its curves are too short to tell (fewer than 2
    epochs, e.g. pruned after its first epoch) unless they already show it is not converging. A trial
    with no epoch on record (pruned a third into its first) gets none: nothing was measured to judge."""
    train, held = user_attrs.get("train_loss") or [], user_attrs.get("eval_loss") or []
    if not train or not held:
        return None
    verdict = diagnose(train, held)
    if len(held) < 2 and verdict != NOT_CONVERGING:
        return None
    return verdict


def note_markdown(trial_number: int, user_attrs: dict, diagnosis: str | None, *, status: str = "") -> str:
    """The trial's note in optuna-dashboard, rewritten after every epoch: where the trial stands, its
    diagnosis and remedy, test accuracy, time, size and speed, and the per-epoch curves."""
    lines = [f"## Trial {trial_number}" + (f": {status}" if status else "")]
    if diagnosis:
        lines += [f"**Fit diagnosis: {diagnosis}.** Remedies (seed, section 1.3): {REMEDIES[diagnosis]}.", ""]
    if user_attrs.get("reason"):
        lines += [f"Ended early: {user_attrs['reason']}", ""]
    facts = [("test accuracy (not used for tuning)", user_attrs.get("test_accuracy"), "{:.2%}"),
             ("test loss", user_attrs.get("test_loss"), "{:.4f}"),
             ("time", user_attrs.get("seconds"), "{:.1f} s"),
             ("parameters", user_attrs.get("n_params"), "{:,}"),
             ("training images/s", user_attrs.get("images_per_second"), "{:,.0f}")]
    facts = [(name, fmt.format(value)) for name, value, fmt in facts if value is not None]
    if facts:
        lines += ["| " + " | ".join(n for n, _ in facts) + " |", "|" + "---:|" * len(facts),
                  "| " + " | ".join(v for _, v in facts) + " |", ""]
    train, held, acc = (user_attrs.get(k, []) for k in ("train_loss", "eval_loss", "eval_accuracy"))
    seconds = user_attrs.get("epoch_seconds", [])
    if held:
        lines += ["| epoch | train loss | held-out loss | held-out accuracy | seconds |", "|---:|---:|---:|---:|---:|"]
        lines += [f"| {i + 1} | {t:.4f} | {h:.4f} | {a:.4f} | {s} |"
                  for i, (t, h, a, s) in enumerate(zip(train, held, acc, [*(f"{v:.1f}" for v in seconds),
                                                                          *[""] * len(held)]))]
    return "\n".join(lines) + "\n"
