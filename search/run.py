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
import platform
import signal
import sys
import time
import warnings

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from tqdm import tqdm

from model import IMPLS
from search import space as search_space
from search.cli import (EXIT_INTERRUPTED, add_compile_arg, add_data_args, apply_compile_flag, data_options,
                         positive_float, positive_int, run_main)
from search.data import load_splits
from search.devices import resolve_device
from search.errors import UsageError
from search.objective import DIRECTIONS, METRIC_NAMES, METRICS, Objective, catchable
from search.storage import check_storage_url, check_study_name, default_storage, open_storage, storage_error
from search.summary import summary, trial_line

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc")
PRUNERS = ("median", "hyperband", "successive-halving", "none")


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        # Five full trials before pruning, and never on the first (noisiest) epoch.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=search_space.max_epochs(),
                                              reduction_factor=3)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search.run", description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", "--trials", dest="n_trials", type=positive_int, default=50,
                        help="the study's total number of finished trials (default: 50)")
    parser.add_argument("--timeout", type=positive_float, default=None,
                        help="stop starting new trials after this many seconds (default: none)")
    parser.add_argument("--study-name", default="se-cca-mnist", help="study name (default: se-cca-mnist)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL (default: sqlite:///studies/<study-name>.db)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="sampler (default: tpe)")
    parser.add_argument("--pruner", choices=PRUNERS, default="median", help="pruner (default: median)")
    parser.add_argument("--space", choices=search_space.SPACES, default="default",
                        help="search space: the four main knobs, or all of the seed's section 1.1 (default: default)")
    parser.add_argument("--metric", choices=METRICS, default="loss",
                        help="minimise held-out loss or maximise held-out accuracy (default: loss)")
    parser.add_argument("--no-seed-trial", action="store_true",
                        help="do not enqueue the seed's configuration as a new study's first trial")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split, sampler, init and batch order (default: 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--impl", choices=IMPLS, default="auto", help="attention implementation (default: auto)")
    add_compile_arg(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="print per-epoch lines in the seed's format")
    add_data_args(parser)
    return parser


def study_identity(args: argparse.Namespace) -> dict:
    """What must match for trials to be comparable: refuse to mix anything else into one study."""
    return {"space": args.space, "metric": args.metric, **data_options(args).identity()}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("torch", "optuna", "se-cca-search"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def open_study(args: argparse.Namespace, storage_url: str, data_sizes: dict) -> optuna.Study:
    storage = open_storage(storage_url)
    identity = study_identity(args)
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if args.study_name in existing:
        old = existing[args.study_name].user_attrs.get("identity")
        if old is not None and old != identity:
            diff = ", ".join(f"{k} {old.get(k)!r} -> {identity.get(k)!r}" for k in identity if old.get(k) != identity[k])
            raise UsageError(f"study {args.study_name!r} was run with other settings ({diff}); trials would not be "
                             "comparable: use another --study-name, or the study's own settings")
    n_before = existing[args.study_name].n_trials if args.study_name in existing else 0
    # Offset the sampler's seed by the trials already there, so a resumed run does not replay the
    # random start-up points of the first run.
    study = optuna.create_study(study_name=args.study_name, storage=storage, direction=DIRECTIONS[args.metric],
                                sampler=make_sampler(args.sampler, args.seed + n_before),
                                pruner=make_pruner(args.pruner), load_if_exists=True)
    if args.study_name not in existing:
        study.set_metric_names([METRIC_NAMES[args.metric]])
        study.set_user_attr("identity", identity)
        study.set_user_attr("split_sizes", data_sizes)
        study.set_user_attr("versions", versions())
        study.set_user_attr("space_ranges", search_space.ranges(args.space))
        if not args.no_seed_trial:
            study.enqueue_trial(search_space.seed_params(args.space), user_attrs={"seed_config": True})
    return study


def raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    check_study_name(args.study_name)
    storage_url = check_storage_url(args.storage or default_storage(args.study_name))
    device = resolve_device(args.device)
    apply_compile_flag(args.compile, device)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own per-trial lines replace Optuna's
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    data = load_splits(data_options(args))  # before the storage: a data error leaves no empty study behind
    sizes = data.sizes()
    data = data.to(device)
    try:
        study = open_study(args, storage_url, sizes)
    except UsageError:
        raise
    except Exception as exc:
        raise storage_error(exc, storage_url) from exc
    metric_name = METRIC_NAMES[args.metric]
    done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
    remaining = args.n_trials - done
    print(f"study {args.study_name}: {done} of {args.n_trials} trials done; training on {device}, "
          f"{sizes['train']} images, scored on {sizes['held_out']} {args.eval_on} images", flush=True)
    bar = tqdm(total=args.n_trials, initial=min(done, args.n_trials), unit="trial", desc="trials",
               dynamic_ncols=True, file=sys.stderr, disable=None)

    def on_trial(study: optuna.Study, trial) -> None:
        bar.write(trial_line(trial, metric_name))
        bar.update(1)

    objective = Objective(data=data, device=device, space=args.space, metric=args.metric, seed=args.seed,
                          impl=args.impl, log=bar.write if args.verbose else None)
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    interrupted = False
    start = time.perf_counter()
    try:
        if remaining > 0:
            study.optimize(objective, n_trials=remaining, timeout=args.timeout, catch=catchable(),
                           callbacks=[MaxTrialsCallback(args.n_trials, states=FINISHED), on_trial])
    except KeyboardInterrupt:
        interrupted = True
    except Exception as exc:
        if type(exc).__module__.startswith(("sqlalchemy", "optuna.exceptions")) or "Storage" in type(exc).__name__:
            raise storage_error(exc, storage_url) from exc
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
    print(f"\n{summary(study, storage_url, metric_name)}")
    print(f"wall time {time.perf_counter() - start:.1f} s")
    if interrupted:
        print(f"interrupted: the running trial was marked FAIL; run the same command to continue to "
              f"{args.n_trials} trials", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
