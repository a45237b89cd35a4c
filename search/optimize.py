"""The trial loop and the Optuna parts it runs with: samplers, the pruner (search.pruning), and "run trials
here until the study's total is reached". Used alike by search.run (one process) and search.workers.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
import time
from collections.abc import Callable

import optuna
from tqdm import tqdm

from search import space as search_space
from search.errors import EXIT_INTERRUPTED, EXIT_OK, UsageError
from search.interrupts import forget_raised, interrupt_once
from search.metrics import METRIC_NAMES
from search.objective import CATCH, Objective
from search.pruning import MIN_COMPLETE, make_pruner
from search.recovery import counts_toward_total, fail_stale
from search.rescore import rescore
from search.storage import quiet_heartbeat_failures
from search.summary import trial_line

SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc")
# Samplers that need a package of the `samplers` extra (pip install -e '.[samplers]'): Optuna imports it lazily.
SAMPLER_PACKAGES = {"cmaes": "cmaes", "gp": "scipy", "qmc": "scipy"}


def check_sampler(name: str) -> None:
    """Refuse, before any work, a sampler whose package is not installed, naming the install command."""
    package = SAMPLER_PACKAGES.get(name)
    if package is not None and importlib.util.find_spec(package) is None:
        raise UsageError(f"--sampler {name} needs the {package} package; install it with "
                         f"pip install -e '.[samplers]' (or pip install {package}), or use --sampler tpe")


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


def sampler_for(args: argparse.Namespace, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler search.run's options ask for (``--sampler``, ``--startup-trials``), seeded with ``seed``."""
    return make_sampler(args.sampler, seed, args.startup_trials)


def pruner_for(args: argparse.Namespace) -> optuna.pruners.BasePruner:
    """The pruner search.run's options ask for (``--pruner``, ``--rungs``, ``--min-complete``, the space's or
    ``--epochs-range``'s epochs as Hyperband's maximum resource)."""
    return make_pruner(args.pruner, search_space.max_epochs(args.space, args.epochs_range), args.rungs,
                       getattr(args, "min_complete", MIN_COMPLETE))


def told_elsewhere(exc: BaseException | None) -> bool:
    """Whether Optuna's final tell failed because the trial was already finished ("Cannot tell a FAIL
    trial."; for a FAIL state Optuna's own clean-up then raises AssertionError on top of it)."""
    while exc is not None:
        if isinstance(exc, ValueError) and str(exc).startswith("Cannot tell a "):
            return True
        exc = exc.__context__
    return False


def run_trials(study: optuna.Study, objective, *, budget: int, timeout: float | None, on_trial,
               log=print, clock: Callable[[], float] = time.monotonic) -> None:
    """Run trials one at a time until the study holds ``budget`` finished-or-running trials (a total
    across reruns, workers and machines) or ``timeout`` seconds have passed on ``clock``."""
    start = clock()
    running = []
    quiet_heartbeat_failures(log)

    def tracked(trial: optuna.Trial):
        running[:] = [trial.number]
        return objective(trial)

    while timeout is None or clock() - start < timeout:
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


def run_here(args, device, data, study: optuna.Study, done: int, clock: Callable[[], float] = time.monotonic) -> int:
    """``--workers 1``: run the trials in this process, with a progress bar; -> an exit code."""
    metric_name = METRIC_NAMES[args.metric]
    bar = tqdm(total=args.n_trials, initial=min(done, args.n_trials), unit="trial", desc="trials",
               dynamic_ncols=True, file=sys.stderr, disable=None)

    def on_trial(study: optuna.Study, trial) -> None:
        bar.write(trial_line(trial, metric_name))
        bar.update(1)

    objective = Objective.from_args(args, data.to(device), device, log=bar.write if args.verbose else None,
                                    clock=clock)
    previous = {sig: signal.signal(sig, interrupt_once) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_trials(study, objective, budget=args.n_trials, timeout=args.timeout, on_trial=on_trial, log=bar.write,
                   clock=clock)
    except KeyboardInterrupt:
        forget_raised()
        return EXIT_INTERRUPTED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        bar.close()
    return EXIT_OK


def rescore_here(args, device, data, study: optuna.Study) -> int:
    """--repeats: re-score the best trials here, after the trials (search.rescore)."""
    objective = Objective.from_args(args, data.to(device), device)
    previous = {sig: signal.signal(sig, interrupt_once) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        rescore(study, objective.repeat_value, args.repeats, args.seed, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        forget_raised()
        return EXIT_INTERRUPTED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK
