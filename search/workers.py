"""Several worker processes on one machine, sharing one study (``search.run --workers N``).

The parent creates the storage and the study before any worker starts (several processes creating
the same study at once crash Optuna), then spawns N processes; each loads the data once onto its
device (``--devices`` round-robin) and runs one trial at a time until the study total is reached.
SIGINT/SIGTERM to the parent stops every worker: each marks its running trial FAIL and exits; the
parent waits for all of them (no orphans), kills any that hang, and fails their trials.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys

import optuna
import torch

from search.cli import data_options, int_between
from search.data import load_splits, offset_seed
from search.devices import apply_compile_flag, resolve_device
from search.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_STORAGE, one_line, root_cause
from search.interrupts import interrupt_once
from search.metrics import METRIC_NAMES
from search.objective import Objective
from search.optimize import pruner_for, run_trials, sampler_for
from search.storage import is_storage_failure, open_storage
from search.summary import trial_line

STOP_GRACE_S = 60  # how long a stopped worker may take to mark its trial FAIL before it is killed


def workers_arg(text: str) -> int | str:
    """``--workers``: auto, or a number of worker processes."""
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


def worker_entry(arg_dict: dict, storage_url: str, device_name: str, threads: int, index: int) -> None:
    """One worker process (spawned): exit 0 when the budget is reached, 130 interrupted, 3 storage failure."""
    signal.signal(signal.SIGINT, interrupt_once)
    signal.signal(signal.SIGTERM, interrupt_once)
    args = argparse.Namespace(**arg_dict)
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines replace Optuna's warnings
    prefix = f"[worker {index}]"
    try:
        device = resolve_device(device_name)
        apply_compile_flag(args.compile, device)
        data = load_splits(data_options(args), log=lambda msg: None).to(device)
        storage = open_storage(storage_url, heartbeat_interval=args.heartbeat_interval)
        n_before = len(storage.get_all_trials(storage.get_study_id_from_name(args.study_name), deepcopy=False))
        # Each worker its own sampler seed, so workers do not propose the same random start-up points.
        study = optuna.load_study(study_name=args.study_name, storage=storage,
                                  sampler=sampler_for(args, offset_seed(args.seed, n_before + 7919 * (index + 1))),
                                  pruner=pruner_for(args))
        metric_name = METRIC_NAMES[args.metric]
        log = (lambda line: print(f"{prefix} {line}", flush=True)) if args.verbose else None
        objective = Objective.from_args(args, data, device, log=log)
        run_trials(study, objective, budget=args.n_trials, timeout=args.timeout,
                   on_trial=lambda s, t: print(f"{prefix} {trial_line(t, metric_name)}", flush=True),
                   log=lambda line: print(f"{prefix} {line}", flush=True))
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if is_storage_failure(exc):
            print(f"{prefix} error: storage failed: {one_line(root_cause(exc))}", file=sys.stderr, flush=True)
            sys.exit(EXIT_STORAGE)
        print(f"{prefix} error: {one_line(exc)}", file=sys.stderr, flush=True)
        sys.exit(getattr(exc, "exit_code", 1))


def run_worker_processes(args: argparse.Namespace, storage_url: str, devices: list, study: optuna.Study) -> int:
    from search.recovery import reap_dead_trials

    ctx = multiprocessing.get_context("spawn")  # no forked CUDA state, no inherited locks
    threads = max(1, (os.cpu_count() or 1) // args.workers)  # share the cores, do not oversubscribe
    procs = [ctx.Process(target=worker_entry, name=f"worker-{i}",
                         args=(vars(args), storage_url, str(devices[i % len(devices)]), threads, i))
             for i in range(args.workers)]
    stopping = []

    def stop(signum, frame):
        if not stopping:
            stopping.append(signum)
            for p in procs:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in procs:
            p.start()
        for p in procs:
            while p.is_alive():
                p.join(timeout=0.5)
                if stopping and p.is_alive():
                    p.join(timeout=STOP_GRACE_S)
                    if p.is_alive():
                        p.kill()  # hung: its trial is failed below
                        p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    reap_dead_trials(study, pids={p.pid for p in procs})
    codes = [p.exitcode for p in procs]
    if stopping or EXIT_INTERRUPTED in codes:
        return EXIT_INTERRUPTED
    failed = [c for c in codes if c not in (0, None)]
    if failed:
        code = EXIT_STORAGE if EXIT_STORAGE in failed else (failed[0] if failed[0] > 0 else EXIT_FAILED)
        print(f"error: {len(failed)} of {len(procs)} workers failed (exit codes {sorted(set(failed))}); "
              "completed trials are kept; run the same command to resume", file=sys.stderr)
        return code
    return EXIT_OK
