"""Benchmark the search itself: the whole user path, search -> export -> retrain -> test, per arm and seed.

    se-cca-search bench-search                              # quick: 30 trials on a 10k sample, seeds 0 1
    se-cca-search bench-search --trials 50 --train-subset 0 --seeds 0 1 2 3 4   # the default command
    se-cca-search bench-search --space extended --trials 60 --seeds 0 1
    se-cca-search bench-search --seeds 0 1 2 --retrain-seeds 10 11 12    # every answer retrained 3 times
    se-cca-search bench-search --arms tool ensemble                      # the tool's answer against its ensemble

For every seed, side by side in one run and with the project's own commands (as subprocesses, exactly
as a user types them):
  tool        ``search.run --trials N`` with the tool's defaults (workers, compiled kernels, pruner); its
              wall time W is the budget the other arms get
  tpe         plain Optuna defaults at the same wall-clock budget: TPE, no pruning, one process, eager
              kernels, no seed trial (``--timeout W``: a trial still running at W stops there)
  random      the same with random search
  baseline the seed's own configuration (the tool study's trial 0), retrained the same way
  tool-single with ``--repeats`` in --tool-flags: the tool study's best single run (Optuna's best trial),
              retrained the same way, beside the tool's pick by the mean of its runs; its search time
              leaves out the re-scoring
  ensemble    ``se-cca-search ensemble`` on the tool study: members retrained (once per retrain seed), and
              ``ensemble-search`` with --no-retrain (the trials' own weights); "retrain s" is the ensemble
              command's wall time, what the ensemble adds to the tool's search
Each arm's best is exported and retrained on the full training data (``search.retrain``); the test set
is read only there, after the search. The table gives search wall time, trials finished, and the
retrained test loss and accuracy; the last line is one JSON object with every figure.

One retrain's test accuracy moves by up to half a point with its seed alone (docs/benchmarks.md), so one
benchmark seed decides little. ``--retrain-seeds 10 11 12`` retrains every answer once per seed
(``retrain --seed S``): the table gives the mean and spread, and "beats the baseline config"
compares means; the summary adds in how many retrain pairs (answer seed x baseline seed) the answer beat.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from search import space as search_space
from search.cli import add_data_dir_arg, command, non_negative_int, positive_int, run_main, seed_int
from search.errors import EXIT_STORAGE, EXIT_USAGE, SearchError, StorageError, UsageError

ARMS = ("tool", "tpe", "random", "ensemble")
SEARCH_ARMS = ("tool", "tpe", "random")  # the arms that run a search of their own
PLAIN = {"tpe": ["--sampler", "tpe"], "random": ["--sampler", "random"]}
# Plain Optuna: no pruning, one process, the eager kernels, no enqueued seed trial, the plain held-out loss
# (whatever the tool's default metric); a trial count it never reaches, so the wall-clock budget stops it.
PLAIN_COMMON = ["--pruner", "none", "--workers", "1", "--no-compile", "--no-baseline-trial", "--metric", "loss",
                "--trials", "100000"]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command("bench-search"), description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=positive_int, default=30, help="the tool arm's --trials (default: 30)")
    parser.add_argument("--train-subset", type=non_negative_int, default=10000,
                        help="search on a seeded sample of N training images; 0: all (default: 10000)")
    parser.add_argument("--seeds", type=seed_int, nargs="+", default=[0, 1], help="seeds (default: 0 1)")
    parser.add_argument("--space", choices=search_space.SPACES, default="default",
                        help="search space of every arm (default: default)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="arms to run (default: all)")
    parser.add_argument("--dataset", choices=("mnist", "fashion-mnist", "synthetic"), default="mnist",
                        help="data set (default: mnist)")
    add_data_dir_arg(parser)
    parser.add_argument("--val-size", type=positive_int, default=None, help="held-out images (default: the tool's)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="folder for the studies, exported files and models (default: runs/bench-search-<time>)")
    parser.add_argument("--tool-flags", default="",
                        help="more flags for the tool arm only, e.g. '--rungs 3' (default: none)")
    parser.add_argument("--retrain-seeds", type=seed_int, nargs="+", default=None, metavar="S",
                        help="retrain every answer once per seed and compare means (default: one retrain with the "
                             "study's seed)")
    parser.add_argument("--extra", default="", help="more flags for every search.run, e.g. '--device cuda' "
                                                   "(default: none)")
    return parser


def run_command(name: str, *args: str, log: Path) -> tuple[float, str]:
    """Run the tool's command ``name`` with ``args`` in a process of its own (as a user would: its own
    imports, threads and memory); -> (wall seconds, stdout). Output goes to ``log`` as well."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "search", name, *args], capture_output=True, text=True)
    wall = time.perf_counter() - start
    with log.open("a") as fh:
        fh.write(f"$ {command(name)} {' '.join(args)}\n{proc.stdout}{proc.stderr}\n[exit {proc.returncode}, "
                 f"{wall:.1f} s]\n\n")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        error = {EXIT_USAGE: UsageError, EXIT_STORAGE: StorageError}.get(proc.returncode, SearchError)
        raise error(f"`{command(name)}` failed with exit {proc.returncode}: {last} (full log: {log})")
    return wall, proc.stdout


def load(storage: str, study_name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=study_name, storage=storage)


def finished_trials(storage: str, study_name: str) -> dict:
    study = load(storage, study_name)
    counts = {"complete": 0, "pruned": 0, "fail": 0}
    for t in study.get_trials(deepcopy=False):
        name = t.state.name.lower()
        if name in counts:
            counts[name] += 1
    return counts


def export_and_retrain(storage: str, study_name: str, folder: Path, tag: str, data_dir: str, log: Path,
                       trial: int | None = None, seeds: list[int] | None = None) -> dict:
    """Export the study's best (or ``trial``) and retrain it: once with the study's seed, or once per seed of
    ``seeds``, when the row's test figures are the means and ``retrains`` holds every run."""
    exported = folder / f"{tag}.json"
    pick = [] if trial is None else ["--trial", str(trial)]
    run_command("export", "--study-name", study_name, "--storage", storage, *pick, "-o", str(exported), log=log)
    record = json.loads(exported.read_text())
    runs, total = [], 0.0
    for seed in seeds or [None]:
        out = folder / (tag if seed is None else f"{tag}-r{seed}")
        extra = [] if seed is None else ["--seed", str(seed)]
        wall, _ = run_command("retrain", str(exported), "-o", str(out), "--data-dir", data_dir, *extra,
                              log=log)
        metrics = json.loads((out / "metrics.json").read_text())
        total += wall
        runs.append({"seed": metrics["seed"], "test_loss": metrics["test_loss"],
                     "test_accuracy": metrics["test_accuracy"], "unstable": metrics.get("unstable")})
    row = {"trial_number": record.get("trial_number"), "params": record["params"], "search_value": record["value"],
           "repeats": record.get("repeats"), "retrain_s": round(total, 1),
           "test_loss": statistics.fmean(r["test_loss"] for r in runs),
           "test_accuracy": statistics.fmean(r["test_accuracy"] for r in runs),
           "unstable": next((r["unstable"] for r in runs if r["unstable"]), None)}
    if seeds:
        row["retrains"] = runs
    return row


def best_single_run(storage: str, study_name: str) -> tuple[int, float] | None:
    """For a study re-scored with --repeats: (Optuna's best trial, the seconds the re-scoring took); else None."""
    from search.rescore import stored_repeats

    study = load(storage, study_name)
    repeats = stored_repeats(study)
    if not repeats:
        return None
    return study.best_trial.number, round(sum(r.get("seconds", 0.0) for runs in repeats.values() for r in runs), 1)


def common_flags(args, seed: int) -> list[str]:
    """The flags every arm's search.run gets."""
    return ["--seed", str(seed), "--space", args.space, "--dataset", args.dataset, "--data-dir", args.data_dir,
            *(["--train-subset", str(args.train_subset)] if args.train_subset else []),
            *(["--val-size", str(args.val_size)] if args.val_size else []), *args.extra.split()]


# The flags of search.run that the benchmark sets for every arm: passed again in --tool-flags or --extra
# they would move a study out of its folder, rename it, or stop the arm before it searches.
SET_HERE = ("study_name", "storage", "create_only", "seed", "space", "dataset", "data_dir", "train_subset",
            "val_size")


def check_run_flags(args) -> None:
    """What this benchmark passes to search.run (--tool-flags, --extra, the data flags), checked by run's own
    parser, flag checks and data split before any folder, study or process is made."""
    from search.cli import data_options, parse_or_usage_error
    from search.commands import run
    from search.data import load_splits

    what = f"--tool-flags {args.tool_flags!r} / --extra {args.extra!r}"
    passed = [*args.tool_flags.split(), *args.extra.split()]
    # Read as search.run reads them (abbreviations included): which of the benchmark's own settings they touch.
    given = parse_or_usage_error(run.get_args_parser(), passed, what)
    defaults = run.get_args_parser().parse_args([])
    for dest in SET_HERE:
        if getattr(given, dest) != getattr(defaults, dest):
            flag = "--" + dest.replace("_", "-")
            raise UsageError(f"{what}: {flag} is set by the benchmark itself (each arm's study, seed and data); use "
                             "this command's own flags")
    argv = [*common_flags(args, args.seeds[0]), "--trials", str(args.trials), *args.tool_flags.split()]
    parsed = parse_or_usage_error(run.get_args_parser(), argv, what)
    parsed.storage = None  # a study in the benchmark's own folder, made later
    run.check_args(parsed)
    load_splits(data_options(parsed))


def run_seed(args, seed: int, folder: Path, log: Path) -> dict:
    common = common_flags(args, seed)
    results, budget = {}, None
    for arm in SEARCH_ARMS:
        if arm not in args.arms and not (arm == "tool" and budget is None):
            continue
        name, storage = f"{arm}-s{seed}", f"sqlite:///{folder / f'{arm}-s{seed}.db'}"
        if arm == "tool":
            flags = ["--trials", str(args.trials), *args.tool_flags.split()]
        else:
            flags = [*PLAIN[arm], *PLAIN_COMMON, "--timeout", f"{budget:.1f}"]
        print(f"seed {seed}: {arm} searching ...", file=sys.stderr, flush=True)
        wall, _ = run_command("run", "--study-name", name, "--storage", storage, *common, *flags, log=log)
        if arm == "tool":
            budget = wall
        row = {"arm": arm, "seed": seed, "search_s": round(wall, 1), "trials": finished_trials(storage, name)}
        print(f"seed {seed}: {arm} retraining its best ...", file=sys.stderr, flush=True)
        row.update(export_and_retrain(storage, name, folder, name, args.data_dir, log, seeds=args.retrain_seeds))
        if arm in args.arms:
            results[arm] = row
        if arm == "tool" and (single := best_single_run(storage, name)):
            number, rescore_s = single
            print(f"seed {seed}: retraining the best single run (trial {number}) ...", file=sys.stderr, flush=True)
            other = {**row, "arm": "tool-single", "search_s": round(wall - rescore_s, 1), "rescore_s": rescore_s}
            row["rescore_s"] = rescore_s
            if number != row["trial_number"]:
                other.update(export_and_retrain(storage, name, folder, f"tool-single-s{seed}", args.data_dir, log,
                                                trial=number, seeds=args.retrain_seeds))
            results["tool-single"] = other
        if arm == "tool":  # the baseline configuration is the tool study's trial 0
            print(f"seed {seed}: retraining the baseline configuration ...", file=sys.stderr, flush=True)
            base = {"arm": "baseline", "seed": seed, "search_s": 0.0, "trials": {}}
            base.update(export_and_retrain(storage, name, folder, f"baseline-s{seed}", args.data_dir, log, trial=0,
                                           seeds=args.retrain_seeds))
            results["baseline"] = base
            if "ensemble" in args.arms:
                results.update(ensemble_rows(args, seed, storage, name, folder, log, row, base))
    return results


def ensemble_rows(args, seed: int, storage: str, study_name: str, folder: Path, log: Path, tool: dict,
                  base: dict) -> dict:
    """The ensemble arm on the tool study: ``ensemble`` (members retrained, once per retrain seed) and
    ``ensemble-search`` (--no-retrain: the trials' own weights). A member that is the tool's answer or the
    baseline config is not retrained again: its retrain of the same seed is handed to the command's resume
    folder. Its search time is the tool's; its retrain time is the ensemble command's wall time."""
    rows = {}
    for retrain in (True, False):
        arm = "ensemble" if retrain else "ensemble-search"
        runs, total, record = [], 0.0, {}
        for rseed in (args.retrain_seeds or [None]) if retrain else [None]:
            out = folder / (f"{arm}-s{seed}" if rseed is None else f"{arm}-s{seed}-r{rseed}")
            if retrain:
                for tag, row in ((study_name, tool), (f"baseline-s{seed}", base)):
                    done = folder / (tag if rseed is None else f"{tag}-r{rseed}")
                    cached = folder / f"{out.name}.retrained" / f"trial-{row['trial_number']}"
                    if done.is_dir() and not cached.exists():
                        shutil.copytree(done, cached)
            flags = ["--study-name", study_name, "--storage", storage, "-o", str(out), "--data-dir", args.data_dir,
                     *(["--seed", str(rseed)] if rseed is not None else []), *([] if retrain else ["--no-retrain"])]
            print(f"seed {seed}: {arm} building ...", file=sys.stderr, flush=True)
            try:
                wall, _ = run_command("ensemble", *flags, log=log)
            except UsageError as exc:  # too few kept models: the other arms' figures still count
                print(f"seed {seed}: no {arm} row: {exc}", file=sys.stderr, flush=True)
                break
            record = json.loads((out / "ensemble.json").read_text())
            total += wall
            runs.append({"seed": record["seed"], "test_loss": record["test_loss"],
                         "test_accuracy": record["test_accuracy"], "unstable": None})
        if not runs:
            continue
        row = {"arm": arm, "seed": seed, "search_s": tool["search_s"], "trials": tool["trials"],
               "retrain_s": round(total, 1),
               "members": [[m["trial"], round(m["weight"], 3)] for m in record["members"]],
               "held_out_loss": record["held_out"]["loss"], "trial_number": None, "unstable": None,
               "test_loss": statistics.fmean(r["test_loss"] for r in runs),
               "test_accuracy": statistics.fmean(r["test_accuracy"] for r in runs)}
        if retrain and args.retrain_seeds:
            row["retrains"] = runs
        rows[arm] = row
    return rows


def spread(row: dict, key: str) -> float | None:
    """The standard deviation of ``key`` over the row's retrains (None with fewer than two)."""
    runs = row.get("retrains") or []
    return statistics.stdev(r[key] for r in runs) if len(runs) > 1 else None


def table(rows: list[dict]) -> str:
    lines = ["| seed | arm | search s | trials (complete/pruned/fail) | retrain s | test loss | test accuracy |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["trials"]
        trials = f"{t['complete']}/{t['pruned']}/{t['fail']}" if t else "-"
        loss, acc = f"{r['test_loss']:.4f}", f"{r['test_accuracy']:.2%}"
        if (loss_sd := spread(r, "test_loss")) is not None:  # the mean over retrain seeds, +- their spread
            loss += f" ±{loss_sd:.4f}"
            acc += f" ±{spread(r, 'test_accuracy'):.2%}"
        # search.retrain's warning: the figures of such a run are luck
        runs = r.get("retrains") or []
        unstable = sum(bool(x["unstable"]) for x in runs) if runs else int(bool(r.get("unstable")))
        if unstable:
            acc += " (unstable end)" if len(runs) <= 1 else f" (unstable end in {unstable} of {len(runs)})"
        lines.append(f"| {r['seed']} | {r['arm']} | {r['search_s']:.0f} | {trials} | {r['retrain_s']:.0f} | "
                     f"{loss} | {acc} |")
    return "\n".join(lines)


def beats(row: dict, base: dict) -> bool:
    """Lower test loss and higher test accuracy than ``base`` (means where retrained with several seeds)."""
    return row["test_loss"] < base["test_loss"] and row["test_accuracy"] > base["test_accuracy"]


def summarize(per_seed: dict) -> dict:
    """Per arm: medians over seeds, and in how many seeds it beat the baseline config on both test figures; with
    several retrain seeds also in how many (answer retrain, baseline retrain) pairs of the same seed."""
    out = {}
    arms = sorted({arm for results in per_seed.values() for arm in results})
    for arm in arms:
        rows = [results[arm] for results in per_seed.values() if arm in results]
        bases = [per_seed[r["seed"]]["baseline"] for r in rows]
        wins = sum(beats(r, base) for r, base in zip(rows, bases))
        out[arm] = {"median_test_loss": statistics.median(r["test_loss"] for r in rows),
                    "median_test_accuracy": statistics.median(r["test_accuracy"] for r in rows),
                    "median_search_s": statistics.median(r["search_s"] for r in rows),
                    "beats_baseline": f"{wins}/{len(rows)}"}
        if arm != "baseline" and all("retrains" in r for r in rows):
            pairs = [(a, b) for r, base in zip(rows, bases) for a in r["retrains"] for b in base["retrains"]]
            out[arm]["beats_baseline_pairs"] = f"{sum(beats(a, b) for a, b in pairs)}/{len(pairs)}"
    return out


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.dataset != "synthetic" and not Path(args.data_dir).exists():
        print(f"note: {args.data_dir}/ does not exist yet; the first search fetches the data", file=sys.stderr)
    if args.retrain_seeds and len(set(args.retrain_seeds)) != len(args.retrain_seeds):
        raise UsageError(f"--retrain-seeds {' '.join(map(str, args.retrain_seeds))}: give each seed once")
    if len(set(args.seeds)) != len(args.seeds):
        raise UsageError(f"--seeds {' '.join(map(str, args.seeds))}: give each seed once")
    folder = args.out_dir or Path("runs") / f"bench-search-{time.strftime('%Y%m%d-%H%M%S')}"
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out-dir {folder} is a file, not a folder; choose a new folder")
    if folder.exists() and any(folder.iterdir()):
        raise UsageError(f"{folder}/ already holds files; choose another --out-dir")
    args.data_dir = str(Path(args.data_dir).resolve())
    check_run_flags(args)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out-dir {folder}: cannot create it ({exc.strerror}); choose another folder") from None
    log = folder / "commands.log"
    print(f"search benchmark: space {args.space}, tool arm --trials {args.trials} {args.tool_flags}, train subset "
          f"{args.train_subset or 'all'}, seeds {' '.join(map(str, args.seeds))}"
          + (f", retrain seeds {' '.join(map(str, args.retrain_seeds))}" if args.retrain_seeds else "")
          + f"; log in {log}", flush=True)
    start = time.perf_counter()
    per_seed = {seed: run_seed(args, seed, folder, log) for seed in args.seeds}
    rows = [row for results in per_seed.values() for row in results.values()]
    print(table(rows))
    summary = summarize(per_seed)
    print("\n| arm | median search s | median test loss | median test accuracy | beats the baseline config | "
          "retrain pairs it beats |")
    print("|---|---|---|---|---|---|")
    for arm, s in summary.items():
        print(f"| {arm} | {s['median_search_s']:.0f} | {s['median_test_loss']:.4f} | {s['median_test_accuracy']:.2%} "
              f"| {s['beats_baseline']} | {s.get('beats_baseline_pairs', '-')} |")
    print(f"total wall time {time.perf_counter() - start:.0f} s")
    print(json.dumps({"space": args.space, "trials": args.trials, "tool_flags": args.tool_flags,
                      "train_subset": args.train_subset, "retrain_seeds": args.retrain_seeds,
                      "dataset": args.dataset, "seeds": args.seeds, "rows": rows, "summary": summary}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
