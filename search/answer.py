"""The study's answer: which trial a search hands back, and which is its baseline.

- The baseline is the trial of the baseline config (user attribute ``baseline``): its first run, or the
  retry that finished when that run was interrupted or its worker died.
- The answer is Optuna's best trial, unless the best trials were re-scored with more seeds (``--repeats``,
  search.rescore): then it is the re-scored trial with the best mean over its runs, and a configuration
  that diverged in any run is never picked.

The summary, the report, the dashboard's note and ``export`` all ask here.
"""

from __future__ import annotations

import statistics

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from search.rescore import stored_repeats


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The baseline: the trial of the seed's own configuration (user attribute ``baseline``), its first
    run, or the retry that finished when that run was interrupted or its worker died."""
    runs = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline")]
    finished = [t for t in runs if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    return (finished or runs or [None])[0]


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's answer: the best by the mean of its runs where trials were re-scored (--repeats), else
    Optuna's best trial."""
    row = best_by_mean(study)
    if row is not None:
        return row["trial"]
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None


def best_first(study: optuna.Study) -> list[FrozenTrial]:
    """The complete trials, best value first (ties in trial order)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(complete, key=lambda t: t.value, reverse=study.direction == StudyDirection.MAXIMIZE)


def runs_of(trial: FrozenTrial, repeats: list[dict]) -> list[float | None]:
    """The trial's own value, then its repeats' values (None: that run diverged)."""
    return [trial.value, *[r.get("value") for r in repeats]]


def mean_and_spread(values: list[float | None], maximize: bool) -> tuple[float, float]:
    """Mean and standard deviation of a trial's runs; a diverged run makes the mean the worst possible, so a
    configuration that blows up once is never picked by its mean."""
    if any(v is None for v in values):
        return (float("-inf") if maximize else float("inf")), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def ranked(study: optuna.Study) -> list[dict]:
    """The re-scored trials, best mean first: {"trial", "values", "seeds", "mean", "std"}. Empty when the
    study has no repeats (then its best is Optuna's best_trial)."""
    repeats = stored_repeats(study)
    if not repeats:
        return []
    maximize = study.direction == StudyDirection.MAXIMIZE
    trials = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    seed = study.user_attrs.get("identity", {}).get("seed", 0)  # search.run's --seed: a trial's own is seed + number
    rows = []
    for number, runs in repeats.items():
        if number not in trials:
            continue
        values = runs_of(trials[number], runs)
        mean, std = mean_and_spread(values, maximize)
        own_seed = trials[number].user_attrs.get("train_seed", seed + number) % 2**32  # the trial's own run
        rows.append({"trial": trials[number], "values": values, "mean": mean, "std": std,
                     "seeds": [own_seed, *[r.get("seed") for r in runs]]})
    return sorted(rows, key=lambda r: r["mean"], reverse=maximize)


def best_by_mean(study: optuna.Study) -> dict | None:
    """The re-scored trial with the best mean, or None: no re-scoring, or trials finished after it and the best
    single run is one of them (then it is the answer until a run with --repeats re-scores it)."""
    rows = ranked(study)
    if not rows or study.best_trial.number not in {r["trial"].number for r in rows}:
        return None
    return rows[0]


def repeats_record(row: dict) -> dict:
    """What an exported file records of a re-scored trial (JSON: a diverged run is null, an infinite mean too)."""
    finite = all(v is not None for v in row["values"])
    return {"values": row["values"], "seeds": row["seeds"], "mean": row["mean"] if finite else None,
            "std": row["std"] if finite else None}
