"""When a trial stops early: the pruning rule, in pure functions.

The clock. A trial reports its held-out value a third of the way into its first epoch (step 1, the
*peek*) and after every epoch e (step 3e). Successive halving's rungs at steps 1, 3, 9, 27 then fall at a
third of an epoch, 1, 3 and 9 epochs, and the best third of the trials that reached a rung go on: most
trials stop before paying for one epoch.

Size rungs (``--rungs N``). Instead of epochs, the training-set size is the budget: with 3 rungs a trial
trains on 1/9 of the images, the best third goes on to 1/3, the best third of those to all of them (the
seed's "try a small sample first"); each rung is a fresh model, reported at step 1, 3, 9.

A pool to choose from (``--min-complete K``, default 5). Successive halving measures every trial against
all that reached a rung before it, the baseline config's full run included, so on some seeds and data sets
almost nothing completes (Fashion-MNIST: 1 of 30, the baseline) and the search hands back the seed's config
with no models to build an ensemble from. So while fewer than K trials besides the baseline have completed,
a trial that got past the peek is not pruned: it runs to its end. Optuna's ``bootstrap_count`` does not do
this: it prunes the first trials to reach each rung (docs/experiments.md).

Three rules hold for every pruner:
- never the baseline-config trial: it is the study's reference, which every summary compares with, so it
  runs to its end, in a first run and in a retry (only the ``--timeout`` deadline stops it);
- never at a trial's last epoch: it has paid for its whole run, and its final value is what the study
  compares, so pruning it then only throws a finished result away;
- the ``--timeout`` deadline stops a running trial at the end of its current epoch (PRUNED, with the
  reason), except after its very last epoch, where the result is kept.

``search.objective`` asks these functions; Optuna's pruners (``make_pruner``) make the comparisons.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.idx import NUM_CLASSES

STEPS_PER_EPOCH = 3  # pruner steps per epoch: the peek is step 1, the end of epoch e is step 3e
PEEK_STEP = 1
PEEK_AT = PEEK_STEP / STEPS_PER_EPOCH  # the fraction of epoch 1 after which a trial is scored once
RUNG_FACTOR = 3  # successive halving's reduction factor: the best third goes on
PRUNERS = ("successive-halving", "median", "hyperband", "none")
MIN_COMPLETE = 5  # the default --min-complete: the pool an ensemble is chosen from


def make_pruner(name: str, max_epochs: int = 12, rungs: int = 1,
                min_complete: int = MIN_COMPLETE) -> optuna.pruners.BasePruner:
    """The pruner ``--pruner name`` asks for; with size rungs, successive halving over the rungs. Successive
    halving keeps a pool of ``min_complete`` complete trials (``PoolPruner``)."""
    if rungs > 1 and name != "none":
        return PoolPruner(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=RUNG_FACTOR,
                                                                 min_early_stopping_rate=0), min_complete)
    if name == "successive-halving":
        # The default: rungs from the very first trials on, where the median rule waits for five full ones.
        # On the 50-trial default search it cut the wall time and found better answers (docs/experiments.md).
        return PoolPruner(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=RUNG_FACTOR),
                          min_complete)
    if name == "median":
        # Five full trials before any pruning; after that a trial can be pruned from its first report on.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs * STEPS_PER_EPOCH,
                                              reduction_factor=RUNG_FACTOR)
    return optuna.pruners.NopPruner()


def prunes_per_epoch(rungs: int) -> bool:
    """Whether trials are pruned per epoch, with the peek a third into the first: when there are no size
    rungs."""
    return rungs == 1


def epoch_step(epoch: int) -> int:
    """The pruner step at the end of ``epoch`` (from 1)."""
    return epoch * STEPS_PER_EPOCH


def step_name(step: int, rungs: int = 1) -> str:
    """What a pruner step stands for, in words: "epoch 2", "1/3 of epoch 1" (the peek), "rung 2/3"."""
    if rungs > 1:
        rung = next((k for k in range(rungs) if rung_step(k) == step), None)
        return f"rung {rung + 1}/{rungs}" if rung is not None else f"step {step}"
    epochs, part = divmod(step, STEPS_PER_EPOCH)
    return f"epoch {epochs}" if part == 0 else f"{part}/{STEPS_PER_EPOCH} of epoch {epochs + 1}"


def last_report(trial: FrozenTrial, rungs: int = 1) -> tuple[float, str] | None:
    """A trial's last reported value and when it reported it (``step_name``), or None if it reported none."""
    if not trial.intermediate_values:
        return None
    step = max(trial.intermediate_values)
    return trial.intermediate_values[step], step_name(step, rungs)


def prunable(user_attrs: dict) -> bool:
    """Whether a trial may be pruned at all: every trial but the baseline config's (user attribute
    ``baseline``, which its retries keep)."""
    return not user_attrs.get("baseline")


def may_prune_after(epoch: int, epochs: int) -> bool:
    """Whether the pruner may stop a trial after ``epoch`` of its ``epochs``: never after its last."""
    return epoch < epochs


def rung_sizes(n: int, rungs: int) -> list[int]:
    """Training-set sizes of ``rungs`` size rungs ending at all ``n`` images: n/9, n/3, n for three; never
    below 10 images a class."""
    return [max(10 * NUM_CLASSES, n // RUNG_FACTOR ** (rungs - 1 - k)) for k in range(rungs)]


def rung_step(rung: int) -> int:
    """The pruner step (Optuna's resource) of size rung ``rung`` (from 0): 1, 3, 9."""
    return RUNG_FACTOR ** rung


def stops_at_deadline(now: float, deadline: float | None, epoch: int, epochs: int, *, last_rung: bool = True) -> bool:
    """Whether a trial stops after ``epoch`` of ``epochs`` because the search's deadline has passed: yes,
    unless this was its very last epoch (of its last rung), whose result is then paid for."""
    if deadline is None or now < deadline:
        return False
    return not (last_rung and epoch == epochs)


class PoolPruner(optuna.pruners.BasePruner):
    """``inner``'s decisions, except that while fewer than ``min_complete`` trials besides the baseline config
    have completed, a trial past the peek (the first report) is not pruned. ``inner`` is still asked at every
    report, so successive halving records each rung's values as it always does."""

    def __init__(self, inner: optuna.pruners.BasePruner, min_complete: int) -> None:
        self.inner, self.min_complete = inner, min_complete

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if not self.inner.prune(study, trial):
            return False
        if trial.last_step is None or trial.last_step <= PEEK_STEP or self.min_complete <= 0:
            return True
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return sum(prunable(t.user_attrs) for t in complete) >= self.min_complete
