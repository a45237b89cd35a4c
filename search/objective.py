"""The Optuna objective: params -> configs -> model -> fit -> report/prune -> value.

Data is loaded once per process and handed in; every trial is scored on the same held-out split.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass
from typing import Callable

import optuna
import torch

from model import SECCANet, count_parameters
from search import space as search_space
from search.data import Splits
from search.diagnosis import diagnose_trial, note_markdown
from search.errors import DivergedError
from search.training import EpochResult, evaluate, fit

METRICS = ("loss", "accuracy")
# Test-only knob: seconds to sleep after each epoch, so fault tests can kill a worker mid-trial.
SLOW_EPOCH_S = float(os.environ.get("SE_CCA_TEST_SLOW_EPOCH", "0"))
METRIC_NAMES = {"loss": "held-out loss", "accuracy": "held-out accuracy"}
DIRECTIONS = {"loss": "minimize", "accuracy": "maximize"}


@dataclass
class Objective:
    data: Splits  # already on ``device``
    device: torch.device
    space: str = "default"
    metric: str = "loss"
    seed: int = 0
    impl: str = "auto"
    log: Callable[[str], None] | None = None  # per-epoch seed-style lines (-v)

    def __call__(self, trial: optuna.Trial) -> float:
        # Who runs the trial, recorded first: a journal storage has no heartbeat, so the next run
        # fails and retries RUNNING trials whose process is gone (search.recovery).
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("device", str(self.device))
        net_config, train_config = search_space.suggest(trial, self.space)
        torch.manual_seed(self.seed + trial.number)  # init differs per trial, reproducible per study
        model = SECCANet(net_config, impl=self.impl).to(self.device)
        trial.set_user_attr("n_params", count_parameters(model))
        curves = {"train_loss": [], "eval_loss": [], "eval_accuracy": [], "epoch_seconds": []}
        speeds = []
        start = time.perf_counter()

        def on_epoch(result: EpochResult) -> None:
            curves["train_loss"].append(result.train_loss)
            curves["eval_loss"].append(result.eval_loss)
            curves["eval_accuracy"].append(result.eval_accuracy)
            curves["epoch_seconds"].append(result.seconds)
            speeds.append(result.train_images_per_second)
            for key, values in curves.items():
                trial.set_user_attr(key, values)  # stored every epoch: pruned trials keep their curves
            value = result.eval_loss if self.metric == "loss" else result.eval_accuracy
            trial.report(value, result.epoch)
            if SLOW_EPOCH_S:
                time.sleep(SLOW_EPOCH_S)
            if trial.should_prune():
                reason = f"pruned at epoch {result.epoch}/{train_config.epochs}: {METRIC_NAMES[self.metric]} {value:.4f}"
                trial.set_user_attr("reason", reason)
                annotate(trial, {**curves, "reason": reason})
                raise optuna.TrialPruned(reason)

        try:
            history = fit(model, self.data.train_x, self.data.train_y, self.data.held_out_x, self.data.held_out_y,
                          train_config, seed=self.seed + trial.number, on_epoch=on_epoch, log=self.log)
        except DivergedError as exc:
            trial.set_user_attr("reason", str(exc))
            trial.set_user_attr("seconds", time.perf_counter() - start)
            annotate(trial, {**curves, "reason": str(exc)}, diagnosis="not converging")
            raise  # listed in optimize(catch=...): the trial ends FAIL and the study goes on
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: Optuna marks the trial FAIL and re-raises
            trial.set_user_attr("reason", "interrupted (Ctrl-C or SIGTERM)")
            raise
        seconds = time.perf_counter() - start
        test_loss, test_acc = evaluate(model, self.data.test_x, self.data.test_y)
        trial.set_user_attr("seconds", seconds)
        trial.set_user_attr("images_per_second", sum(speeds) / len(speeds))  # training throughput
        trial.set_user_attr("test_loss", test_loss)
        trial.set_user_attr("test_accuracy", test_acc)
        annotate(trial, curves)
        last = history[-1]
        value = last.eval_loss if self.metric == "loss" else last.eval_accuracy
        if not math.isfinite(value):
            raise DivergedError(last.epoch, 0, value)
        return value


def annotate(trial: optuna.Trial, attrs: dict, diagnosis: str | None = None) -> None:
    """Store the fit diagnosis as a user attribute and as the trial's note in optuna-dashboard."""
    from optuna_dashboard import save_note  # imported here: only the search needs the dashboard package

    diagnosis = diagnosis or diagnose_trial(attrs)
    if diagnosis:
        trial.set_user_attr("diagnosis", diagnosis)
    save_note(trial, note_markdown(trial.number, attrs, diagnosis))


def catchable() -> tuple[type[Exception], ...]:
    return (DivergedError,)
