"""Re-score the best few trials with more seeds before export (``search.run --repeats K``).

A trial's value is one training run: one initialisation, one batch order. Among the best few trials the
gaps are often smaller than the seed-to-seed spread, so the best single run is partly luck, and a fragile
configuration (a high learning rate that blows up one run in three) can look best once. With
``--repeats K`` search.run, once the trials are done, trains each of the TOP best complete trials K more
times with other seeds (same params, data, epochs and held-out split: only the initialisation and batch
order change) and stores every value in the study. Export, the summary, the report and the dashboard then
pick the best by the mean over its runs (search.answer), and the exported file records the runs, their mean
and spread.

Each repeat is stored as soon as it ends (study user attribute ``repeat:<trial>:<k>``), so an interrupted
re-scoring loses at most the run in progress, and the same command finishes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

TOP = 3  # how many of the best complete trials are re-scored
# Repeat k of trial n trains with seed (study seed + n + k * SEED_STRIDE): never the seed of another trial
# (trial numbers stay below the stride) nor of another repeat.
SEED_STRIDE = 1_000_003
KEY = "repeat:{number}:{k}"


def repeat_seed(study_seed: int, number: int, k: int) -> int:
    return (study_seed + number + k * SEED_STRIDE) % 2**32


def stored_repeats(study: optuna.Study) -> dict[int, list[dict]]:
    """{trial number: its repeats, in order of k}; each repeat is {"k", "seed", "value", "seconds"},
    value None where that run diverged."""
    out: dict[int, list[dict]] = {}
    for key, record in study.user_attrs.items():
        parts = key.split(":")
        if len(parts) == 3 and parts[0] == "repeat" and parts[1].isdigit() and isinstance(record, dict) and \
                isinstance(record.get("value"), (int, float, type(None))):  # anything else is not ours: skipped
            out.setdefault(int(parts[1]), []).append(record)
    return {n: sorted(runs, key=lambda r: r.get("k", 0)) for n, runs in out.items()}


def top_trials(study: optuna.Study, n: int = TOP) -> list[FrozenTrial]:
    """The ``n`` best complete trials by their own (single-run) value."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return sorted(complete, key=lambda t: t.value, reverse=study.direction == StudyDirection.MAXIMIZE)[:n]


def missing_repeats(study: optuna.Study, repeats: int, n: int = TOP) -> list[tuple[FrozenTrial, int]]:
    """(trial, k) pairs still to run so each of the ``n`` best trials has ``repeats`` repeats."""
    attrs = study.user_attrs
    return [(t, k) for t in top_trials(study, n) for k in range(1, repeats + 1)
            if KEY.format(number=t.number, k=k) not in attrs]


def rescore(study: optuna.Study, train_value: Callable[[dict, int], float | None], repeats: int, study_seed: int,
            log: Callable[[str], None] = print) -> int:
    """Run the missing repeats of the best trials; ``train_value(params, seed)`` trains one run and returns its
    held-out value (None if it diverged). Each is stored when it ends. -> how many ran."""
    todo = missing_repeats(study, repeats)
    if todo:
        log(f"re-scoring the {TOP} best trials with {repeats} more seed{'s' if repeats > 1 else ''} each "
            f"({len(todo)} runs; --repeats)")
    for i, (trial, k) in enumerate(todo, 1):
        seed = repeat_seed(study_seed, trial.number, k)
        start = time.perf_counter()
        value = train_value(dict(trial.params), seed)
        seconds = round(time.perf_counter() - start, 1)
        study.set_user_attr(KEY.format(number=trial.number, k=k),
                            {"k": k, "seed": seed, "value": None if value is None else round(value, 6),
                             "seconds": seconds})
        shown = "diverged" if value is None else f"{value:.4f}"
        log(f"  repeat {i}/{len(todo)}: trial {trial.number} with seed {seed}: {shown} (its own run: "
            f"{trial.value:.4f}; {seconds:.0f} s)")
    return len(todo)
