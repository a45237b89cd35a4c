"""Run (or resume) a hyperparameter search of the SE + CCA network.

    python -m search.run --trials 50
    python -m search.run --trials 30 --train-subset 10000 --study-name quick
    python -m search.run --trials 100 --space extended --rungs 3 --timeout 1800 --study-name extended

``--trials N`` is the study's total: re-running the same command after an interruption continues to
N. Ctrl-C or SIGTERM ends the running trial as FAIL and exits 130; run the same command to resume.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from model import IMPLS
from search import space as search_space
from search.artifacts import KEEP_MODELS, check_dir, resolve_dir
from search.cli import (
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
from search.errors import EXIT_INTERRUPTED, EXIT_OK, UsageError
from search.live import INTERVAL_S, LiveDashboard
from search.metrics import METRIC_NAMES, METRICS
from search.optimize import SAMPLERS, check_sampler, rescore_here, run_here
from search.pruning import MIN_COMPLETE, PRUNERS
from search.recovery import counts_toward_total, interrupted_numbers
from search.rescore import TOP, missing_repeats
from search.storage import (
    HEARTBEAT_INTERVAL_S,
    check_storage_url,
    check_study_name,
    default_storage,
    redact,
    storage_errors,
)
from search.studies import DEFAULT_STUDY_NAME, open_for_search
from search.summary import summary
from search.workers import resolve_workers, run_worker_processes, workers_arg


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command("run"), description=__doc__.splitlines()[0])
    parser.add_argument("--trials", dest="n_trials", metavar="N", type=positive_int, default=50,
                        help="the study's total number of finished trials; a rerun continues to it (default: 50)")
    parser.add_argument("--timeout", type=positive_float, default=None,
                        help="the search's wall-clock budget in seconds: no trial starts after it, and a trial "
                             "still running then stops at the end of its current epoch (PRUNED, with the reason; "
                             "kept if that was its last epoch) (default: none)")
    parser.add_argument("--study-name", default=DEFAULT_STUDY_NAME, help=f"study name (default: {DEFAULT_STUDY_NAME})")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL, or journal:PATH.log (default: sqlite:///studies/<study-name>.db)")
    parser.add_argument("--space", choices=search_space.SPACES, default="default",
                        help="search space: the four main knobs, or all of the seed's section 1.1 (default: default)")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="seeds the split, sampler, init and batch order (default: 0)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print per-epoch lines in the seed's format")
    add_data_args(parser)

    how = parser.add_argument_group("how trials are picked, scored and stopped")
    how.add_argument("--metric", choices=METRICS, default=None,
                     help="minimise the held-out loss, maximise held-out accuracy, or minimise the held-out loss "
                          "at its best temperature (calibrated-loss: ranks over-confident long runs by how well "
                          "they tell the classes apart) (default: a rerun keeps its study's metric; a new study "
                          "calibrated-loss with --train-subset or --space extended, loss otherwise)")
    how.add_argument("--epochs-range", type=positive_int, nargs=2, metavar=("LOW", "HIGH"), default=None,
                     help="search epochs from LOW to HIGH only, at most the space's own maximum (the baseline "
                          "config's 10 epochs are clamped into the range) (default: the space's)")
    how.add_argument("--pruner", choices=PRUNERS, default="successive-halving",
                     help="pruner (default: successive-halving: the best third of the trials that reached a third "
                          "of an epoch go on to one epoch, the best third of those to 3, then 9)")
    how.add_argument("--min-complete", type=int_between(0, 1000, "a number of trials from 0 to 1000"),
                     default=MIN_COMPLETE, metavar="K",
                     help="successive halving prunes no trial past its first third of an epoch until K trials "
                          "besides the baseline config have completed: a pool for the answer and the ensemble; 0: "
                          f"plain successive halving (default: {MIN_COMPLETE})")
    how.add_argument("--rungs", type=int_between(1, 4, "a number of rungs from 1 to 4"), default=1,
                     help="successive halving over the training-set size (the seed's 'small sample first'): "
                          "with 3, every trial trains on 1/9 of the images, the best third goes on to 1/3, the "
                          "best third of those to all (default: 1, off)")
    how.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                     help="sampler; cmaes, gp and qmc need the samplers extra (default: tpe)")
    how.add_argument("--startup-trials", type=int_between(1, 1000, "a number of trials from 1 to 1000"),
                     default=None,
                     help="TPE's random trials before it models the study (Optuna's n_startup_trials; a study's "
                          "trials of every run count) (default: 10, Optuna's)")
    how.add_argument("--no-baseline-trial", action="store_true",
                     help="do not enqueue the baseline config as a new study's first trial")
    how.add_argument("--repeats", type=int_between(0, 10, "a number of repeats from 0 to 10"), default=0,
                     help=f"once the trials are done, train each of the {TOP} best complete trials this many more "
                          "times with other seeds; export, the summary and the report then pick the best by the "
                          "mean of its runs (default: 0, off)")

    hardware = parser.add_argument_group("where trials run")
    hardware.add_argument("--workers", type=workers_arg, default="auto",
                          help="worker processes on this machine, one trial each at a time; auto: one "
                               "single-threaded worker per CPU core on the CPU; on GPUs one per two cores, "
                               "at most 8 per GPU (default: auto)")
    add_device_arg(hardware)
    hardware.add_argument("--devices", default=None,
                          help="comma-separated devices assigned to workers round-robin, e.g. cuda:0,cuda:1 "
                               "(default: --device for every worker)")
    hardware.add_argument("--impl", choices=IMPLS, default="auto", help="attention implementation (default: auto)")
    add_compile_arg(hardware)

    kept = parser.add_argument_group("models kept for an ensemble (se-cca-search ensemble)")
    kept.add_argument("--keep-models", type=int_between(0, 10000, "a number of models from 0 to 10000"),
                      default=KEEP_MODELS,
                      help="store the models of the best N complete trials (weights and held-out predictions, "
                           "0.8-3.7 MB each) as Optuna artifacts, deleting those pushed out; 0: store none "
                           f"(default: {KEEP_MODELS})")
    kept.add_argument("--artifacts", default=None, metavar="DIR",
                      help="the folder of the study's artifact store; for workers on many machines a folder they "
                           "all see, or s3://BUCKET[/PREFIX] (boto3's credentials; pip install -e '.[s3]') "
                           "(default: beside a file study, studies/NAME.artifacts/; else "
                           "studies/<study-name>.artifacts/)")

    machines = parser.add_argument_group("watching, and many machines")
    machines.add_argument("--live", action=argparse.BooleanOptionalAction, default=True,
                          help="keep optuna-dashboard current while trials run; --no-live writes the study's "
                               "figures and note once at the end (default: live)")
    machines.add_argument("--create-only", action="store_true",
                          help="create the study (and enqueue the baseline config), then exit: start workers after")
    machines.add_argument("--heartbeat-interval", type=int_between(1, 3600, "seconds from 1 to 3600"),
                          default=HEARTBEAT_INTERVAL_S,
                          help="seconds between RDB heartbeats; a trial silent for 3 intervals is failed and "
                               f"retried (default: {HEARTBEAT_INTERVAL_S})")
    return parser


def check_args(args: argparse.Namespace) -> str:
    """Every flag checked before any work; -> the storage URL."""
    check_study_name(args.study_name)
    args.epochs_range = search_space.check_epochs_range(args.epochs_range, args.space)
    if args.startup_trials is not None and args.sampler != "tpe":
        raise UsageError(f"--startup-trials is TPE's; --sampler {args.sampler} does not take it: leave it out, or "
                         "use --sampler tpe")
    check_sampler(args.sampler)
    if args.artifacts is not None:
        check_dir(args.artifacts)
    return check_storage_url(args.storage or default_storage(args.study_name))


def main(argv=None, *, clock: Callable[[], float] = time.monotonic) -> int:
    """``clock``: what ``--timeout`` is measured on in this process (tests pass a fake one)."""
    args = get_args_parser().parse_args(argv)
    storage_url = check_args(args)
    devices = [resolve_device(d) for d in args.devices.split(",")] if args.devices else [resolve_device(args.device)]
    args.workers = resolve_workers(args.workers, devices)
    # Our own per-trial lines (with the reason of a failure) replace Optuna's warnings and tracebacks.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = load_splits(data_options(args))  # before the storage: a data error leaves no empty study behind
    sizes = data.sizes()
    study, reaped, interrupted = open_for_search(args, storage_url, sizes)
    if reaped:
        print(f"failed and re-enqueued trial(s) {', '.join(map(str, reaped))}: their worker process is gone")
    if interrupted:
        print(f"re-enqueued interrupted trial(s) {', '.join(map(str, interrupted))}: they run first, same params")
    args.artifact_dir = resolve_dir(study, storage_url, args.artifacts) if args.keep_models else None
    if args.create_only:
        print(f"study {args.study_name} is ready in {redact(storage_url)}; start workers with the same command "
              "without --create-only")
        return EXIT_OK
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
    metric_name = METRIC_NAMES[args.metric]
    with storage_errors(storage_url):
        study.set_user_attr("run_settings", {"sampler": args.sampler, "startup_trials": args.startup_trials,
                                             "pruner": args.pruner, "min_complete": args.min_complete,
                                             "workers": args.workers,
                                             "device": where, "compiled": bool(args.compile)})
        # The dashboard's study figures and note follow the trials while they run (search.live).
        with LiveDashboard(study, storage_url, metric_name, interval=INTERVAL_S if args.live else None):
            if args.workers > 1:
                code = run_worker_processes(args, storage_url, devices, study)
            else:
                code = run_here(args, devices[0], data, study, done, clock=clock)
            rescoring = code == EXIT_OK and args.repeats > 0
            if rescoring:
                code = rescore_here(args, devices[0], data, study)
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


if __name__ == "__main__":
    sys.exit(run_main(main))
