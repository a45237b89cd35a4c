"""Human-readable lines about a study: one line per finished trial, and the end-of-run summary."""

from __future__ import annotations

import shlex
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.answer import baseline_trial, best_by_mean, best_trial, ranked
from search.artifacts import find_dir, is_bucket, stored_trials
from search.cli import command
from search.storage import default_storage, journal_path, redact


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_params(params: dict) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in params.items())


def trial_line(trial: FrozenTrial, metric_name: str) -> str:
    state = trial.state.name
    value = f"{metric_name} {trial.value:.4f}" if trial.value is not None else ""
    if trial.state == TrialState.PRUNED:
        value = trial.user_attrs.get("reason", "").removeprefix("pruned ")  # where, and the value there
    seconds = trial.user_attrs.get("seconds")
    if seconds is None and trial.datetime_complete and trial.datetime_start:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    parts = [f"trial {trial.number:>3} {state:<8}", value, format_params(trial.params)]
    if seconds is not None:
        parts.append(f"{seconds:.1f} s")
    if trial.state == TrialState.FAIL and trial.user_attrs.get("reason"):
        parts.append(f"({trial.user_attrs['reason']})")
    if trial.user_attrs.get("diagnosis"):
        parts.append(f"[{trial.user_attrs['diagnosis']}]")
    return "  ".join(p for p in parts if p)


def format_runs(row: dict) -> str:
    """A re-scored trial's runs: 'mean 0.0512 +- 0.0011 over 3 runs (0.0500, 0.0520, 0.0516)'."""
    runs = ", ".join("diverged" if v is None else f"{v:.4f}" for v in row["values"])
    if any(v is None for v in row["values"]):
        return f"a run diverged ({runs})"
    return f"mean {row['mean']:.4f} +- {row['std']:.4f} over {len(row['values'])} runs ({runs})"


def settings_rows(study: optuna.Study) -> list[tuple[str, str]]:
    """What made the study's trials: data, split, space, metric, sampler, pruner, versions (name, value)."""
    identity = study.user_attrs.get("identity", {})
    sizes = study.user_attrs.get("split_sizes", {})
    run = study.user_attrs.get("run_settings", {})
    rows = [("data set", identity.get("dataset")),
            ("training images", sizes.get("train")),
            ("scored on", f"{sizes['held_out']} {identity.get('eval_on')} images" if "held_out" in sizes else None),
            ("space", identity.get("space")),
            ("epochs range", "{} to {}".format(*identity["epochs_range"]) if "epochs_range" in identity else None),
            ("metric", identity.get("metric")),
            ("rungs", identity.get("rungs", 1) if identity else None), ("split seed", identity.get("seed")),
            ("sampler (last run)", sampler_text(run)), ("pruner (last run)", pruner_text(run)),
            ("workers (last run)", run.get("workers")), ("device (last run)", run.get("device")),
            ("versions", ", ".join(f"{k} {v}" for k, v in study.user_attrs.get("versions", {}).items()))]
    return [(k, str(v)) for k, v in rows if v not in (None, "")]


def pruner_text(run: dict) -> str | None:
    """The pruner of the study's last run, with --min-complete where it applies (successive halving)."""
    pruner, k = run.get("pruner"), run.get("min_complete")
    return f"{pruner}, min-complete {k}" if k is not None and pruner == "successive-halving" else pruner


def sampler_text(run: dict) -> str | None:
    """The sampler of the study's last run, with its random start-up trials where --startup-trials set them."""
    if run.get("startup_trials") is None:
        return run.get("sampler")
    return f"{run['sampler']} ({run['startup_trials']} random start-up trials)"


def storage_args(study_name: str, storage: str) -> str:
    """The flags that name the study in a printed hint; a password shows as *** (type your own)."""
    args = f"--study-name {shlex.quote(study_name)}"
    if storage != default_storage(study_name):
        args += f" --storage {shlex.quote(redact(storage))}"
    return args


def summary(study: optuna.Study, storage: str, metric_name: str) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    lines = [
        f"study {study.study_name} ({redact(storage)}): {len(trials)} trials: "
        + ", ".join(
            f"{counts[s]} {s.name.lower()}"
            for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)
            if counts[s] or s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        )
    ]
    best = best_trial(study)
    if best is None:
        lines.append("no completed trial yet")
    else:
        row = best_by_mean(study)
        if row is not None:
            lines.append(f"best: trial {best.number}, {metric_name} {format_runs(row)}")
        else:
            lines.append(f"best: trial {best.number}, {metric_name} {best.value:.4f}")
        width = max((len(k) for k in best.params), default=0)
        lines += [f"  {k:<{width}}  {format_value(v)}" for k, v in best.params.items()]
        for key in ("test_loss", "test_accuracy"):
            if key in best.user_attrs:
                lines.append(f"  ({key.replace('_', ' ')} {best.user_attrs[key]:.4f}, not used for tuning)")
        baseline = baseline_trial(study)
        if baseline is not None and baseline.value is not None and baseline.number != best.number:
            change = (best.value - baseline.value) / abs(baseline.value) * 100 if baseline.value else 0.0
            lines.append(f"baseline config (trial {baseline.number}): {metric_name} {baseline.value:.4f}; "
                         f"best is {change:+.1f}%")
        elif baseline is not None and baseline.number == best.number:
            lines.append(f"the baseline config (trial {baseline.number}) is still the best")
        elif baseline is not None:
            lines.append(f"baseline config (trial {baseline.number}): {baseline.state.name.lower()}")
    if rows := ranked(study):
        lines.append("re-scored with more seeds (--repeats), by the mean of their runs:")
        lines += [f"  trial {r['trial'].number}: {format_runs(r)}" for r in rows]
        if best is not None and best_by_mean(study) is None:
            lines.append(f"  trial {best.number}, the best single run, finished after the re-scoring: run "
                         "search.run with --repeats again to re-score it")
    folder = find_dir(study, storage)
    kept = stored_trials(study) if folder is not None else []
    if kept and is_bucket(folder):
        lines.append(f"models kept: {len(kept)} of the complete trials, in {folder}/")
    elif kept:
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        shown = folder.relative_to(Path.cwd()) if folder.is_relative_to(Path.cwd()) else folder
        lines.append(f"models kept: {len(kept)} of the complete trials, in {shown}/ ({size / 1e6:.1f} MB)")
    journal = journal_path(storage)
    dashboard_arg = str(journal) if journal is not None else redact(storage)  # it opens a journal file directly
    lines += ["next:",
              f"  optuna-dashboard {shlex.quote(dashboard_arg)}",
              f"  {command('report')} {storage_args(study.study_name, storage)} -o report.html",
              f"  {command('export')} {storage_args(study.study_name, storage)} -o best.json",
              f"  {command('retrain')} best.json -o runs/{study.study_name}"]
    if len(kept) >= 2:
        lines.append(f"  {command('ensemble')} {storage_args(study.study_name, storage)} "
                     f"-o runs/{study.study_name}-ensemble")
    return "\n".join(lines)
