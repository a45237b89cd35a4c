"""The trial loop and the Optuna parts it runs with: samplers, pruners, and "run trials here until the
study's total is reached". Used alike by search.run (one process) and search.workers (worker processes).
"""

from __future__ import annotations

import argparse
import time

import optuna

from search import space as search_space
from search.objective import CATCH, STEPS_PER_EPOCH
from search.recovery import counts_toward_total, fail_stale

SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc")
PRUNERS = ("median", "hyperband", "successive-halving", "none")


def make_sampler(name: str, seed: int, startup_trials: int | None = None) -> optuna.samplers.BaseSampler:
    """``startup_trials``: TPE's random trials before it models the study (Optuna's n_startup_trials;
    None keeps Optuna's 10). Only TPE takes it (``--startup-trials`` is refused for other samplers)."""
    if name == "tpe":
        if startup_trials is None:
            return optuna.samplers.TPESampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)


def make_pruner(name: str, max_epochs: int = 12, rungs: int = 1) -> optuna.pruners.BasePruner:
    if rungs > 1 and name != "none":
        # Successive halving over the training-set size: the objective reports at resource 1, 3, 9
        # (1/9, 1/3, all of the images); the top third of each rung goes on.
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3,
                                                      min_early_stopping_rate=0)
    if name == "median":
        # Five full trials before any pruning; after that a trial can be pruned from its first report on.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs * STEPS_PER_EPOCH,
                                              reduction_factor=3)
    if name == "successive-halving":
        # The default: rungs at 1, 3, 9, 27 steps (a third of an epoch, 1, 3, 9 epochs: STEPS_PER_EPOCH),
        # from the very first trials on, where the median rule waits for five full ones. On the 50-trial
        # default search it cut the wall time and found better answers (README, "Quality per minute").
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def sampler_for(args: argparse.Namespace, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler search.run's options ask for (``--sampler``, ``--startup-trials``), seeded with ``seed``."""
    return make_sampler(args.sampler, seed, args.startup_trials)


def pruner_for(args: argparse.Namespace) -> optuna.pruners.BasePruner:
    """The pruner search.run's options ask for (``--pruner``, ``--rungs``, the space's or ``--epochs-range``'s
    epochs as Hyperband's maximum resource)."""
    return make_pruner(args.pruner, search_space.max_epochs(args.space, args.epochs_range), args.rungs)


def told_elsewhere(exc: BaseException | None) -> bool:
    """Whether Optuna's final tell failed because the trial was already finished ("Cannot tell a FAIL
    trial."; for a FAIL state Optuna's own clean-up then raises AssertionError on top of it)."""
    while exc is not None:
        if isinstance(exc, ValueError) and str(exc).startswith("Cannot tell a "):
            return True
        exc = exc.__context__
    return False


def run_trials(study: optuna.Study, objective, *, budget: int, timeout: float | None, on_trial,
               log=print) -> None:
    """Run trials one at a time until the study holds ``budget`` finished-or-running trials (a total
    across reruns, workers and machines) or ``timeout`` seconds have passed."""
    start = time.monotonic()
    running = []

    def tracked(trial: optuna.Trial):
        running[:] = [trial.number]
        return objective(trial)

    while timeout is None or time.monotonic() - start < timeout:
        fail_stale(study)  # heartbeat check: a dead worker's trial must not hold a budget slot
        trials = study.get_trials(deepcopy=False)
        if counts_toward_total(trials) >= budget:
            return
        try:
            study.optimize(tracked, n_trials=1, catch=CATCH, callbacks=[on_trial])
        except (ValueError, AssertionError) as exc:
            if not (running and told_elsewhere(exc)):
                raise
            # Another process finished this trial while it ran: a peer's heartbeat check failed it
            # (this process's heartbeat came late: the machine paused, the database was slow) and
            # queued a retry. The study keeps that outcome; this run's result is dropped, and the
            # worker goes on instead of dying with it.
            log(f"trial {running[0]}: finished by another process while it ran here (its heartbeat came "
                "late); this result is dropped, the study keeps the other outcome and its retry")
