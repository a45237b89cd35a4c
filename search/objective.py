"""The Optuna objective: params -> configs -> model -> fit -> report/prune -> value.

Data is loaded once per process and handed in; every trial is scored on the same held-out split.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import torch

from model import SECCANet, count_parameters
from search import space as search_space
from search.data import Splits, nested_balanced_order, rung_sizes
from search.diagnosis import diagnose_trial, note_markdown
from search.errors import DivergedError
from search.recovery import INTERRUPTED
from search.training import EpochResult, Scores, evaluate, fit
from search.trial_curves import KEYS as CURVE_KEYS
from search.trial_curves import store_curves

# What a trial is scored by (--metric): its name, its direction, and the EpochResult/Scores field (and curves
# key) that holds it. "calibrated-loss" is the held-out loss at its best temperature (training.py says why).
METRICS = ("loss", "accuracy", "calibrated-loss")
METRIC_NAMES = {"loss": "held-out loss", "accuracy": "held-out accuracy",
                "calibrated-loss": "calibrated held-out loss"}
DIRECTIONS = {"loss": "minimize", "accuracy": "maximize", "calibrated-loss": "minimize"}
METRIC_FIELDS = {"loss": "eval_loss", "accuracy": "eval_accuracy", "calibrated-loss": "eval_calibrated_loss"}


def metric_value(scores, metric: str) -> float:
    """``metric`` read from an EpochResult or a Scores."""
    return getattr(scores, METRIC_FIELDS[metric])


# The pruner's clock when trials are pruned per epoch: a trial reports its held-out value a third of the way
# into its first epoch (step 1) and after every epoch e (step 3e). Successive halving's rungs (1, 3, 9, 27)
# then fall at a third of an epoch, 1, 3 and 9 epochs, so most trials stop before paying for one epoch.
# A study records its clock (user attribute "steps_per_epoch"); studies made before it report per epoch (1).
STEPS_PER_EPOCH = 3


@dataclass
class Objective:
    data: Splits  # already on ``device``
    device: torch.device
    space: str = "default"
    metric: str = "loss"
    seed: int = 0
    impl: str = "auto"
    log: Callable[[str], None] | None = None  # per-epoch seed-style lines (-v)
    # Successive halving over the training-set size (the seed's "try a small sample first", section 1.4):
    # with 3 rungs a trial trains on 1/9 of the images, then 1/3 if its score is in the top third of
    # that rung, then all of them; each rung is a fresh model. 1: every trial trains on all images and
    # is pruned per epoch instead.
    rungs: int = 1
    live: bool = True  # rewrite the trial's dashboard note after every epoch (else only when it ends)
    epochs: tuple[int, int] | None = None  # --epochs-range (None: the space's own)
    slow_epoch_s: float = 0.0  # search.run's hidden --slow-epoch: lets fault tests stop a process mid-trial
    steps_per_epoch: int = STEPS_PER_EPOCH  # the study's pruning clock (1: once per epoch, no early report)
    # --timeout as a deadline on time.monotonic(): a trial still running then stops at the end of its epoch
    # (PRUNED, with the reason), so a search ends near its budget instead of finishing 20-epoch trials.
    deadline: float | None = None

    @classmethod
    def from_args(cls, args, data: Splits, device: torch.device, log: Callable[[str], None] | None = None):
        """The objective ``search.run``'s options describe (in its process and in each worker process)."""
        return cls(data=data, device=device, space=args.space, metric=args.metric, seed=args.seed, impl=args.impl,
                   log=log, rungs=args.rungs, live=args.live, epochs=args.epochs_range, slow_epoch_s=args.slow_epoch,
                   steps_per_epoch=args.steps_per_epoch,
                   deadline=None if args.timeout is None else time.monotonic() + args.timeout)

    def __post_init__(self) -> None:
        self.sizes = rung_sizes(len(self.data.train_y), self.rungs) if self.rungs > 1 else [len(self.data.train_y)]
        self.order = nested_balanced_order(self.data.train_y.cpu(), self.seed).to(self.device) \
            if self.rungs > 1 else None

    def __call__(self, trial: optuna.Trial) -> float:
        # Who runs the trial, recorded first: a journal storage has no heartbeat, so the next run
        # fails and retries RUNNING trials whose process is gone (search.recovery).
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("device", str(self.device))
        net_config, train_config = search_space.suggest(trial, self.space, self.epochs, self.metric)
        start = time.perf_counter()
        rung_values = {}
        for rung, size in enumerate(self.sizes):
            last_rung = rung == len(self.sizes) - 1
            model, history, curves, speeds = self._fit(trial, net_config, train_config, size,
                                                       per_epoch=self.rungs == 1, last_rung=last_rung)
            last = history[-1]
            value = metric_value(last, self.metric)
            if self.rungs > 1:
                step = 3 ** rung  # the resource in Optuna's SuccessiveHalvingPruner: 1, 3, 9 (x 1/9 of the images)
                trial.report(value, step)
                rung_values[str(size)] = round(value, 4)
                trial.set_user_attr("rung_values", rung_values)  # {training images: held-out value}
                if not last_rung and trial.should_prune():
                    reason = (f"pruned at rung {rung + 1}/{len(self.sizes)} ({size} images): "
                              f"{METRIC_NAMES[self.metric]} {value:.4f}")
                    trial.set_user_attr("reason", reason)
                    annotate(trial, {**curves, "n_params": count_parameters(model), "reason": reason},
                             status="pruned")
                    raise optuna.TrialPruned(reason)
        test_loss, test_acc = evaluate(model, self.data.test_x, self.data.test_y)
        # Rounded: enough for every figure and note, and short enough that no dashboard page overflows.
        final = {"seconds": round(time.perf_counter() - start, 2),
                 "images_per_second": round(sum(speeds) / len(speeds), 1),  # training throughput
                 "test_loss": round(test_loss, 4), "test_accuracy": round(test_acc, 4)}
        for key, v in final.items():
            trial.set_user_attr(key, v)
        annotate(trial, {**curves, **final, "n_params": count_parameters(model)}, status="complete")
        return value

    def repeat_value(self, params: dict, seed: int) -> float | None:
        """One more run of a trial's params with another ``seed`` (search.rescore): all of this process's
        training images (a trial's last rung), no pruning, scored once at the end. None: it diverged."""
        net_config, train_config = search_space.configs(params)
        torch.manual_seed(seed)
        model = SECCANet(net_config, impl=self.impl).to(self.device)
        try:
            history = fit(model, self.data.train_x, self.data.train_y, self.data.held_out_x, self.data.held_out_y,
                          train_config, seed=seed, score_every_epoch=False,
                          on_epoch=(lambda _: time.sleep(self.slow_epoch_s)) if self.slow_epoch_s else None)
        except DivergedError:
            return None
        return metric_value(history[-1], self.metric)

    def _fit(self, trial: optuna.Trial, net_config, train_config, size: int, *, per_epoch: bool,
             last_rung: bool = True):
        """Train a fresh model on the first ``size`` training images; with ``per_epoch``, report the held-out
        value a third into the first epoch and after every epoch (``STEPS_PER_EPOCH``) and prune by it.
        Past the deadline, stop after any epoch but the trial's very last (its result is then paid for).
        -> (model, history, curves, images/s per epoch)."""
        torch.manual_seed(self.seed + trial.number)  # init differs per trial, reproducible per study
        model = SECCANet(net_config, impl=self.impl).to(self.device)
        n_params = count_parameters(model)
        trial.set_user_attr("n_params", n_params)
        if size < len(self.data.train_y):
            idx = self.order[:size]
            train_x, train_y = self.data.train_x[idx], self.data.train_y[idx]
        else:
            train_x, train_y = self.data.train_x, self.data.train_y
        curves = {key: [] for key in CURVE_KEYS}
        speeds = []
        start = time.perf_counter()
        on = f" on {size} images" if size < len(self.data.train_y) else ""  # a small rung says so in its texts

        def report_or_prune(value: float, step: int, where: str) -> None:
            trial.report(value, step)
            if trial.should_prune():
                reason = f"pruned {where}: {METRIC_NAMES[self.metric]} {value:.4f}"
                trial.set_user_attr("reason", reason)
                annotate(trial, {**curves, "n_params": n_params, "reason": reason}, status="pruned")
                raise optuna.TrialPruned(reason)

        def on_peek(scores: Scores) -> None:
            report_or_prune(metric_value(scores, self.metric), 1,  # step 1: a third of an epoch
                            f"a third into epoch 1/{train_config.epochs}")

        def stop_at_deadline(epoch: int) -> None:
            if self.deadline is None or time.monotonic() < self.deadline:
                return
            if last_rung and epoch == train_config.epochs:  # finished: keep it
                return
            reason = f"stopped at the --timeout deadline after epoch {epoch}/{train_config.epochs}{on}"
            trial.set_user_attr("reason", reason)
            annotate(trial, {**curves, "n_params": n_params, "reason": reason}, status="stopped")
            raise optuna.TrialPruned(reason)

        def on_epoch(result: EpochResult) -> None:
            speeds.append(result.train_images_per_second)
            if result.eval_loss is None:  # an unscored epoch of a small rung
                stop_at_deadline(result.epoch)
                return
            curves["train_loss"].append(round(result.train_loss, 4))
            curves["eval_loss"].append(round(result.eval_loss, 4))
            curves["eval_accuracy"].append(round(result.eval_accuracy, 4))
            curves["eval_calibrated_loss"].append(round(result.eval_calibrated_loss, 4))
            curves["epoch_seconds"].append(round(result.seconds, 2))
            # Stored every epoch: pruned trials keep their curves, and the dashboard shows a running
            # trial's progress (its note; the study's live figure).
            store_curves(trial, curves)
            trial.set_user_attr("images_per_second", round(sum(speeds) / len(speeds), 1))
            if self.live:
                write_note(trial, {**curves, "n_params": n_params},
                           status=f"running, epoch {result.epoch}/{train_config.epochs}{on}")
            if self.slow_epoch_s:  # after the epoch is on record: tests watch a running trial's curves meanwhile
                time.sleep(self.slow_epoch_s)
            if per_epoch:
                value = metric_value(result, self.metric)
                # Never at the last epoch: the trial has already paid for its whole run, and its final value
                # is exactly what the study compares; pruning it then only throws a finished result away.
                if result.epoch < train_config.epochs:
                    report_or_prune(value, result.epoch * self.steps_per_epoch,
                                    f"at epoch {result.epoch}/{train_config.epochs}")
                else:
                    trial.report(value, result.epoch * self.steps_per_epoch)
            stop_at_deadline(result.epoch)

        try:
            history = fit(model, train_x, train_y, self.data.held_out_x, self.data.held_out_y, train_config,
                          seed=self.seed + trial.number, on_epoch=on_epoch, log=self.log,
                          score_every_epoch=last_rung,
                          peek_at=1 / STEPS_PER_EPOCH,
                          on_peek=on_peek if per_epoch and self.steps_per_epoch == STEPS_PER_EPOCH else None)
        except DivergedError as exc:
            trial.set_user_attr("reason", str(exc))
            trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
            annotate(trial, {**curves, "n_params": n_params, "reason": str(exc)}, diagnosis="not converging",
                     status="failed")
            raise  # listed in optimize(catch=...): the trial ends FAIL and the study goes on
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: Optuna marks the trial FAIL and re-raises
            trial.set_user_attr("reason", INTERRUPTED)
            raise
        return model, history, curves, speeds


def annotate(trial: optuna.Trial, attrs: dict, diagnosis: str | None = None, *, status: str = "") -> None:
    """At the end of a trial: store the fit diagnosis as a user attribute and in the trial's note."""
    diagnosis = diagnosis or diagnose_trial(attrs)
    if diagnosis:
        trial.set_user_attr("diagnosis", diagnosis)
    write_note(trial, attrs, diagnosis, status=status)


def write_note(trial: optuna.Trial, attrs: dict, diagnosis: str | None = None, *, status: str = "") -> None:
    """The trial's note in optuna-dashboard (markdown on the trial's page), replaced on every call."""
    from optuna_dashboard import save_note  # imported here: only the search needs the dashboard package

    save_note(trial, note_markdown(trial.number, attrs, diagnosis, status=status))


# What a trial may fail with while the study goes on (Optuna's ``catch``): a diverged run. Anything else
# is a bug or a storage failure and stops the search.
CATCH = (DivergedError,)
