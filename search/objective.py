"""The Optuna objective: params -> configs -> model -> fit -> report/prune -> value.

Data is loaded once per process and handed in; every trial is scored on the same held-out split.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
import torch

from model import SECCANet, count_parameters
from search import pruning
from search import space as search_space
from search.artifacts import ModelKeeper
from search.data import Splits, nested_balanced_order, offset_seed
from search.diagnosis import diagnose_trial, note_markdown
from search.errors import DivergedError
from search.metrics import METRIC_NAMES, Scores, evaluate, held_out_logits, metric_value
from search.recovery import INTERRUPTED
from search.training import EpochResult, fit
from search.trial_curves import KEYS as CURVE_KEYS
from search.trial_curves import store_curves


@dataclass
class Objective:
    data: Splits  # already on ``device``
    device: torch.device
    space: str = "default"
    metric: str = "loss"
    seed: int = 0
    impl: str = "auto"
    log: Callable[[str], None] | None = None  # per-epoch seed-style lines (-v)
    rungs: int = 1  # size rungs (search.pruning); 1: every trial trains on all images, pruned per epoch
    live: bool = True  # rewrite the trial's dashboard note after every epoch (else only when it ends)
    epochs: tuple[int, int] | None = None  # --epochs-range (None: the space's own)
    # --timeout as a deadline on ``clock``: a trial still running then stops at the end of its epoch
    # (PRUNED, with the reason), so a search ends near its budget instead of finishing 20-epoch trials.
    deadline: float | None = None
    clock: Callable[[], float] = time.monotonic
    keeper: ModelKeeper | None = None  # stores each completing trial's model (search.artifacts); None: none

    @classmethod
    def from_args(cls, args, data: Splits, device: torch.device, log: Callable[[str], None] | None = None,
                  clock: Callable[[], float] = time.monotonic):
        """The objective ``search.run``'s options describe (in its process and in each worker process)."""
        return cls(data=data, device=device, space=args.space, metric=args.metric, seed=args.seed, impl=args.impl,
                   log=log, rungs=args.rungs, live=args.live, epochs=args.epochs_range,
                   deadline=None if args.timeout is None else clock() + args.timeout, clock=clock,
                   keeper=keeper_of(args))

    def __post_init__(self) -> None:
        n = len(self.data.train_y)
        self.sizes = pruning.rung_sizes(n, self.rungs) if self.rungs > 1 else [n]
        self.order = nested_balanced_order(self.data.train_y.cpu(), self.seed).to(self.device) \
            if self.rungs > 1 else None

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self._run(trial)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM at any point of the trial: Optuna marks it FAIL and
            trial.set_user_attr("reason", INTERRUPTED)  # re-raises; the reason has the next run retry it
            raise

    def _run(self, trial: optuna.Trial) -> float:
        # Who runs the trial, recorded first: a journal storage has no heartbeat, so the next run
        # fails and retries RUNNING trials whose process is gone (search.recovery).
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("device", str(self.device))
        # The seed of its initialisation and batch order. A retry inherits the interrupted trial's
        # (search.recovery and Optuna's heartbeat retry copy it), so a resumed search is the same search.
        if trial.user_attrs.get("train_seed") is None:
            trial.set_user_attr("train_seed", offset_seed(self.seed, trial.number))
        net_config, train_config = search_space.suggest(trial, self.space, self.epochs, self.metric)
        start = time.perf_counter()
        rung_values = {}
        for rung, size in enumerate(self.sizes):
            last_rung = rung == len(self.sizes) - 1
            model, history, curves, speeds = self._fit(trial, net_config, train_config, size, last_rung=last_rung,
                                                       per_epoch=pruning.prunes_per_epoch(self.rungs))
            last = history[-1]
            value = metric_value(last, self.metric)
            if self.rungs > 1:
                trial.report(value, pruning.rung_step(rung))
                rung_values[str(size)] = round(value, 4)
                trial.set_user_attr("rung_values", rung_values)  # {training images: held-out value}
                if not last_rung and trial.should_prune() and pruning.prunable(trial.user_attrs):
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
        if self.keeper is not None:  # after the training loop: it never slows a trial's images/s
            def logits():
                return held_out_logits(model, self.data.held_out_x)

            try:
                self.keeper.offer(trial, value, model, logits, self.data.held_out_y,
                                  {"train": train_config.to_dict(), "params": dict(trial.params)})
            except OSError as exc:  # a full disk costs the trial's model file, never its result
                print(f"warning: trial {trial.number}'s model was not stored ({exc.strerror or exc}); its result "
                      "is kept", file=sys.stderr, flush=True)
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
                          train_config, seed=seed, score_every_epoch=False)
        except DivergedError:
            return None
        return metric_value(history[-1], self.metric)

    def _fit(self, trial: optuna.Trial, net_config, train_config, size: int, *, per_epoch: bool,
             last_rung: bool = True):
        """Train a fresh model on the first ``size`` training images; with ``per_epoch``, report the held-out
        value on search.pruning's clock and prune by it; past the deadline, stop where search.pruning says.
        -> (model, history, curves, images/s per epoch)."""
        seed = trial.user_attrs["train_seed"]
        prunable = pruning.prunable(trial.user_attrs)
        torch.manual_seed(seed)  # init differs per trial, reproducible per study
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
            # Asked even for the baseline: successive halving records each trial's rung as it asks, and the
            # baseline's values stay in every rung's comparison; only its answer is not followed.
            if trial.should_prune() and prunable:
                reason = f"pruned {where}: {METRIC_NAMES[self.metric]} {value:.4f}"
                trial.set_user_attr("reason", reason)
                annotate(trial, {**curves, "n_params": n_params, "reason": reason}, status="pruned")
                raise optuna.TrialPruned(reason)

        def on_peek(scores: Scores) -> None:
            report_or_prune(metric_value(scores, self.metric), pruning.PEEK_STEP,
                            f"a third into epoch 1/{train_config.epochs}")

        def stop_at_deadline(epoch: int) -> None:
            if not pruning.stops_at_deadline(self.clock(), self.deadline, epoch, train_config.epochs,
                                             last_rung=last_rung):
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
            if self.live:  # the diagnosis so far: a running trial's curves already show an overfit
                write_note(trial, {**curves, "n_params": n_params}, diagnose_trial(curves),
                           status=f"running, epoch {result.epoch}/{train_config.epochs}{on}")
            if per_epoch:
                value, step = metric_value(result, self.metric), pruning.epoch_step(result.epoch)
                if pruning.may_prune_after(result.epoch, train_config.epochs):
                    report_or_prune(value, step, f"at epoch {result.epoch}/{train_config.epochs}")
                else:
                    trial.report(value, step)
            stop_at_deadline(result.epoch)

        try:
            history = fit(model, train_x, train_y, self.data.held_out_x, self.data.held_out_y, train_config,
                          seed=seed, on_epoch=on_epoch, log=self.log,
                          score_every_epoch=last_rung,
                          peek_at=pruning.PEEK_AT, on_peek=on_peek if per_epoch else None)
        except DivergedError as exc:
            trial.set_user_attr("reason", str(exc))
            trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
            annotate(trial, {**curves, "n_params": n_params, "reason": str(exc)}, diagnosis="not converging",
                     status="failed")
            raise  # listed in optimize(catch=...): the trial ends FAIL and the study goes on
        return model, history, curves, speeds


def keeper_of(args) -> ModelKeeper | None:
    """The model keeper search.run's --artifacts and --keep-models ask for (the place resolved by the run)."""
    place, keep = getattr(args, "artifact_dir", None), getattr(args, "keep_models", 0)
    return ModelKeeper(place, keep) if place and keep > 0 else None


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
