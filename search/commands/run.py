"""Run (or resume) a hyperparameter search of the SE + CCA network.

    python -m search.run --trials 50
    python -m search.run --trials 20 --train-subset 10000 --study-name quick
    python -m search.run --trials 50 --space extended --pruner hyperband -v

``--trials N`` is the study's total: re-running the same command after an interruption continues to
N. Ctrl-C or SIGTERM ends the running trial as FAIL and exits 130; run the same command to resume.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import signal
import sys
import time

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from model import IMPLS
from search import space as search_space
from search.cli import (
    EXIT_INTERRUPTED,
    add_compile_arg,
    add_data_args,
    add_device_arg,
    command,
    data_options,
    int_between,
    positive_float,
    positive_int,
    run_main,
    seed_int,
)
from search.data import load_splits
from search.devices import apply_compile_flag, resolve_device
from search.errors import UsageError
from search.interrupts import deferred_signals, interrupt_once
from search.live import INTERVAL_S, LiveDashboard
from search.objective import DIRECTIONS, METRIC_NAMES, METRICS, STEPS_PER_EPOCH, Objective
from search.optimize import PRUNERS, SAMPLERS, pruner_for, run_trials, sampler_for
from search.recovery import counts_toward_total, interrupted_numbers, recover, retry_interrupted
from search.rescore import TOP, missing_repeats, rescore
from search.storage import (
    HEARTBEAT_INTERVAL_S,
    check_storage_url,
    check_study_name,
    default_storage,
    journal_path,
    open_storage,
    redact,
    repair_journal_tail,
    retry_on_race,
    storage_errors,
)
from search.summary import summary, trial_line
from search.workers import run_worker_processes


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command("run"), description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", "--trials", dest="n_trials", type=positive_int, default=50,
                        help="the study's total number of finished trials (default: 50)")
    parser.add_argument("--timeout", type=positive_float, default=None,
                        help="the search's wall-clock budget in seconds: no trial starts after it, and a trial "
                             "still running then stops at the end of its current epoch (PRUNED, with the reason; "
                             "kept if that was its last epoch) (default: none)")
    parser.add_argument("--study-name", default="se-cca-mnist", help="study name (default: se-cca-mnist)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL, or journal:PATH.log (default: sqlite:///studies/<study-name>.db)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="sampler (default: tpe)")
    parser.add_argument("--startup-trials", type=int_between(1, 1000, "a number of trials from 1 to 1000"),
                        default=None,
                        help="TPE's random trials before it models the study (Optuna's n_startup_trials; a study's "
                             "trials of every run count) (default: 10, Optuna's)")
    parser.add_argument("--pruner", choices=PRUNERS, default="successive-halving",
                        help="pruner (default: successive-halving: the best third of the trials that reached a third "
                             "of an epoch go on to one epoch, the best third of those to 3, then 9)")
    parser.add_argument("--space", choices=search_space.SPACES, default="default",
                        help="search space: the four main knobs, or all of the seed's section 1.1 (default: default)")
    parser.add_argument("--rungs", type=int_between(1, 4, "a number of rungs from 1 to 4"), default=1,
                        help="successive halving over the training-set size (the seed's 'small sample first'): "
                             "with 3, every trial trains on 1/9 of the images, the best third goes on to 1/3, the "
                             "best third of those to all; the pruner becomes Optuna's SuccessiveHalvingPruner over "
                             "these rungs (default: 1, off)")
    parser.add_argument("--epochs-range", type=positive_int, nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="search epochs from LOW to HIGH only, at most the space's own maximum (quick studies; "
                             "the seed's trial gets its 10 epochs clamped into the range) (default: the space's)")
    parser.add_argument("--metric", choices=METRICS, default=None,
                        help="minimise the held-out loss, maximise held-out accuracy, or minimise the held-out loss "
                             "at its best temperature (calibrated-loss: ranks over-confident long runs by how well "
                             "they tell the classes apart) (default: a rerun keeps its study's metric; a new study "
                             "calibrated-loss with --train-subset or --space extended, where its answers retrained "
                             "better, loss otherwise)")
    parser.add_argument("--no-seed-trial", action="store_true",
                        help="do not enqueue the seed's configuration as a new study's first trial")
    parser.add_argument(
        "--seed", type=seed_int, default=0, help="seeds the split, sampler, init and batch order (default: 0)"
    )
    add_device_arg(parser)
    parser.add_argument("--impl", choices=IMPLS, default="auto", help="attention implementation (default: auto)")
    add_compile_arg(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="print per-epoch lines in the seed's format")
    parser.add_argument("--live", action=argparse.BooleanOptionalAction, default=True,
                        help="keep optuna-dashboard current while trials run: each trial's note every epoch, the "
                             "study's figures and note every few seconds; --no-live writes them once at the end "
                             "(default: live)")
    parser.add_argument("--workers", type=workers_arg, default="auto",
                        help="worker processes on this machine, one trial each at a time; auto: one "
                             "single-threaded worker per CPU core on the CPU; on GPUs one per two cores, "
                             "at most 8 per GPU (default: auto)")
    parser.add_argument("--devices", default=None,
                        help="comma-separated devices assigned to workers round-robin, e.g. cuda:0,cuda:1 "
                             "(default: --device for every worker)")
    parser.add_argument(
        "--heartbeat-interval",
        type=int_between(1, 3600, "seconds from 1 to 3600"),
        default=HEARTBEAT_INTERVAL_S,
        help="seconds between RDB heartbeats; a trial silent for 3 intervals is failed and "
        f"retried (default: {HEARTBEAT_INTERVAL_S})",
    )
    # Seconds to wait after each epoch: lets the fault tests stop a process mid-trial. Not for users.
    parser.add_argument("--slow-epoch", type=positive_float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int_between(0, 10, "a number of repeats from 0 to 10"), default=0,
                        help=f"once the trials are done, train each of the {TOP} best complete trials this many more "
                             "times with other seeds (same params, data and held-out split); export, the summary and "
                             "the report then pick the best by the mean of its runs (default: 0, off)")
    parser.add_argument("--create-only", action="store_true",
                        help="create the study (and enqueue the seed trial), then exit: start workers after")
    add_data_args(parser)
    return parser


def workers_arg(text: str) -> int | str:
    return text if text == "auto" else int_between(1, 256, "auto or a number of workers from 1 to 256")(text)


def resolve_workers(requested: int | str, devices: list, cores: int | None = None) -> int:
    """``auto``: on the CPU one single-threaded process per core (two 1-thread workers beat one 2-thread
    process: the closed form's small ops scale poorly across threads). On GPUs one process per two cores,
    at most 8 per GPU: one trial leaves the GPU mostly idle (kernel launches on the CPU are the limit), and
    on an H200 with 16 cores eight processes each trained as fast as one alone (the seed's trial: 59.9 s
    vs 59.1 s) for 5x the epochs per minute (`.ci/gpu-check`)."""
    if requested != "auto":
        return requested
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if all(d.type == "cpu" for d in devices):
        return max(1, cores)
    return max(len(devices), min(cores // 2, 8 * len(devices)))


def study_identity(args: argparse.Namespace) -> dict:
    """What must match for trials to be comparable: refuse to mix anything else into one study."""
    # Absent when off or unset: older studies still match.
    rungs = {"rungs": args.rungs} if args.rungs > 1 else {}
    epochs = {"epochs_range": list(args.epochs_range)} if args.epochs_range else {}
    return {"space": args.space, "metric": args.metric, **rungs, **epochs, **data_options(args).identity()}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("torch", "optuna", "se-cca-search"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def open_study(args: argparse.Namespace, storage_url: str, data_sizes: dict) -> optuna.Study:
    """Create the study (once: the process that creates it sets its attributes and enqueues the seed
    trial), or load it and refuse settings that would make its trials incomparable. A study whose
    creation was cut short (no identity yet, no trials) is finished by the next run."""
    storage = open_storage(storage_url, heartbeat_interval=args.heartbeat_interval)
    try:
        study_id = storage.get_study_id_from_name(args.study_name)  # there already: load it (a create attempt
        exists = True                                               # would add a CREATE_STUDY record to a
    except KeyError:                                                # journal each run)
        exists = False
    stored = storage.get_study_user_attrs(study_id).get("identity") if exists else None
    args.metric = resolve_metric(args.metric, stored, args.train_subset, args.space)
    identity = study_identity(args)
    study = None
    if not exists:
        try:
            study = retry_on_race(lambda: optuna.create_study(
                study_name=args.study_name, storage=storage, direction=DIRECTIONS[args.metric],
                sampler=sampler_for(args, args.seed), pruner=pruner_for(args)))
        except optuna.exceptions.DuplicatedStudyError:
            pass  # another process created it a moment ago: load it below
    if study is None:
        study = optuna.load_study(study_name=args.study_name, storage=storage, sampler=None,
                                  pruner=pruner_for(args))
        old = study.user_attrs.get("identity")
        if old is None and not study.trials:
            old = wait_for_identity(study)  # another process may be creating it this very moment
            if old is None:
                finish_creation(study, args, identity, data_sizes)
                return study
        if old is not None and old != identity:
            diff = ", ".join(
                f"{k} {old.get(k)!r} -> {identity.get(k)!r}" for k in identity if old.get(k) != identity[k]
            )
            raise UsageError(f"study {args.study_name!r} was run with other settings ({diff}); trials would not be "
                             "comparable: use another --study-name, or the study's own settings") from None
        # Offset the sampler's seed by the trials already there, so a resumed run does not replay the
        # random start-up points of the first run.
        study.sampler = sampler_for(args, args.seed + len(study.trials))
        return study
    finish_creation(study, args, identity, data_sizes)
    return study


def resolve_metric(requested: str | None, stored: dict | None, train_subset: int | None,
                   space: str = "default") -> str:
    """The flag if given; else the study's own metric (a rerun need not repeat it); else, for a new study,
    the calibrated loss on a --train-subset sample and in the extended space, the plain loss otherwise. On
    a sample the plain loss picked 2-3 epoch runs at high rates whose retrain lost to the seed's config
    (quick mode beat it in 1 of 5 seeds, with the calibrated loss 4 of 7); in the extended space (label
    smoothing left out) its 30-minute answers retrained to 98.60% / 98.90% where the plain loss's reached
    98.36% / 98.46%, at a lower test loss too; on the default space's 50 trials on all images the plain
    loss did better (README, "Quality per minute")."""
    if requested is not None:
        return requested
    if stored and stored.get("metric") in METRICS:
        return stored["metric"]
    return "calibrated-loss" if train_subset or space == "extended" else "loss"


def wait_for_identity(study: optuna.Study, seconds: float = 3.0) -> dict | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
        identity = study.user_attrs.get("identity")
        if identity is not None or study.trials:
            return identity
    return None


def finish_creation(study: optuna.Study, args: argparse.Namespace, identity: dict, data_sizes: dict) -> None:
    """Everything a new study gets besides its row: metric name, identity, sizes, versions, seed trial.
    The identity is written last but one: until it is there, a rerun knows creation did not finish."""
    study.set_metric_names([METRIC_NAMES[args.metric]])
    study.set_user_attr("split_sizes", data_sizes)
    study.set_user_attr("versions", versions())
    study.set_user_attr("steps_per_epoch", STEPS_PER_EPOCH)  # the pruning clock its trials report on
    if not args.no_seed_trial:
        study.enqueue_trial(search_space.baseline_params(args.space, args.epochs_range, args.metric),
                            user_attrs={"seed_config": True})
    study.set_user_attr("identity", identity)


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    check_study_name(args.study_name)
    args.epochs_range = search_space.check_epochs_range(args.epochs_range, args.space)
    if args.startup_trials is not None and args.sampler != "tpe":
        raise UsageError(f"--startup-trials is TPE's; --sampler {args.sampler} does not take it: leave it out, or "
                         "use --sampler tpe")
    storage_url = check_storage_url(args.storage or default_storage(args.study_name))
    devices = [resolve_device(d) for d in args.devices.split(",")] if args.devices else [resolve_device(args.device)]
    args.workers = resolve_workers(args.workers, devices)
    # Our own per-trial lines (with the reason of a failure) replace Optuna's warnings and tracebacks.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = load_splits(data_options(args))  # before the storage: a data error leaves no empty study behind
    sizes = data.sizes()
    journal = journal_path(storage_url)
    if journal is not None and (dropped := repair_journal_tail(journal)):
        print(f"{journal}: dropped an unfinished last record ({dropped} bytes) left by an interrupted write "
              "(a full disk or a kill); every complete record is kept", file=sys.stderr)
    # Creating a study is one unit: a Ctrl-C or SIGTERM meanwhile takes effect right after it.
    with storage_errors(storage_url), deferred_signals():
        study = open_study(args, storage_url, sizes)
        reaped, interrupted = recover(study), retry_interrupted(study)
    # Studies made before the clock had thirds of an epoch keep reporting once per epoch.
    args.steps_per_epoch = study.user_attrs.get("steps_per_epoch", 1)
    if reaped:
        print(f"failed and re-enqueued trial(s) {', '.join(map(str, reaped))}: their worker process is gone")
    if interrupted:
        print(f"re-enqueued interrupted trial(s) {', '.join(map(str, interrupted))}: they run first, same params")
    metric_name = METRIC_NAMES[args.metric]
    if args.create_only:
        print(f"study {args.study_name} is ready in {redact(storage_url)}; start workers with the same command "
              "without --create-only")
        return 0
    # Compile here, once: a failure is one line (or, with --compile, the error), and the workers then
    # load the kernels from inductor's on-disk cache instead of compiling again.
    args.compile = apply_compile_flag(args.compile, devices[0])
    trials = study.get_trials(deepcopy=False)
    done = counts_toward_total(trials) - sum(t.state == TrialState.RUNNING for t in trials)
    where = ", ".join(str(d) for d in devices)
    print(f"study {args.study_name}: {done} of {args.n_trials} trials done; training on {where} "
          f"({args.workers} worker{'s' if args.workers > 1 else ''}, "
          f"{'compiled' if args.compile else 'eager'} kernels), {sizes['train']} images, scored on "
          f"{sizes['held_out']} {args.eval_on} images", flush=True)
    start = time.perf_counter()
    interrupted_before = interrupted_numbers(study)
    with storage_errors(storage_url):
        study.set_user_attr("run_settings", {"sampler": args.sampler, "startup_trials": args.startup_trials,
                                             "pruner": args.pruner, "workers": args.workers,
                                             "device": where, "compiled": bool(args.compile)})
        # The dashboard's study figures and note follow the trials while they run (search.live).
        with LiveDashboard(study, storage_url, metric_name, interval=INTERVAL_S if args.live else None):
            if args.workers > 1:
                code = run_worker_processes(args, storage_url, devices, study)
            else:
                code = run_in_process(args, devices[0], data, study, done)
            rescoring = code == 0 and args.repeats > 0
            if rescoring:
                code = rescore_in_process(args, devices[0], data, study)
        print(f"\n{summary(study, storage_url, metric_name)}")
    print(f"wall time {time.perf_counter() - start:.1f} s")
    if code == EXIT_INTERRUPTED and rescoring:
        print(f"interrupted while re-scoring: {len(missing_repeats(study, args.repeats))} repeat run(s) left (those "
              "done are kept); run the same command to finish them", file=sys.stderr)
    elif code == EXIT_INTERRUPTED:
        stopped = sorted(interrupted_numbers(study) - interrupted_before)
        what = (f"trial(s) {', '.join(map(str, stopped))} were marked FAIL and will run again first; "
                if stopped else "no trial was running; ")
        print(f"interrupted: {what}run the same command to continue to {args.n_trials} trials", file=sys.stderr)
    return code


def run_in_process(args, device, data, study: optuna.Study, done: int) -> int:
    metric_name = METRIC_NAMES[args.metric]
    bar = tqdm(total=args.n_trials, initial=min(done, args.n_trials), unit="trial", desc="trials",
               dynamic_ncols=True, file=sys.stderr, disable=None)

    def on_trial(study: optuna.Study, trial) -> None:
        bar.write(trial_line(trial, metric_name))
        bar.update(1)

    objective = Objective.from_args(args, data.to(device), device, log=bar.write if args.verbose else None)
    previous = {sig: signal.signal(sig, interrupt_once) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_trials(study, objective, budget=args.n_trials, timeout=args.timeout, on_trial=on_trial, log=bar.write)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        bar.close()
    return 0


def rescore_in_process(args, device, data, study: optuna.Study) -> int:
    """--repeats: re-score the best trials here, after the trials (search.rescore)."""
    objective = Objective.from_args(args, data.to(device), device)
    previous = {sig: signal.signal(sig, interrupt_once) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        rescore(study, objective.repeat_value, args.repeats, args.seed, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
