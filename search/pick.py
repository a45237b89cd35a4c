"""Which complete trials may be a study's answer: none that is worse than the seed's configuration on the held-out
figure the study does not optimise.

A study minimises the held-out loss (or its calibrated form), and the lowest loss on this network often belongs to a
run of 2-3 epochs at a high learning rate: lower loss than the seed's 10 epochs, but less accurate, because longer
runs keep gaining accuracy while growing over-confident. Such an answer is no improvement on the seed's config to a
user, who reads both figures. So the answer is the best value among the complete trials whose held-out accuracy is at
least the seed-config trial's (held-out loss at most its, for a study that maximises accuracy); the seed-config trial
itself always qualifies, so with nothing better it is the answer. Without a finished seed-config trial (--no-seed-trial)
every complete trial qualifies, as in Optuna's own ``study.best_trial``. Only held-out figures are read: never the
test set.

    from search.pick import eligible_trials, best_single_trial
"""

from __future__ import annotations

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from search.trial_curves import curves_of


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    """The baseline: the trial of the seed's own configuration (user attribute ``seed_config``), its first
    run, or the retry that finished when that run was interrupted or its worker died."""
    runs = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("seed_config")]
    finished = [t for t in runs if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    return (finished or runs or [None])[0]


def guard_figure(study: optuna.Study) -> str:
    """The curve the answer may not be worse on than the seed's config: the one the study does not optimise."""
    return "eval_loss" if study.direction == StudyDirection.MAXIMIZE else "eval_accuracy"


def final_figure(trial: FrozenTrial, key: str) -> float | None:
    values = curves_of(trial)[key]
    return values[-1] if values else None


def eligible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The complete trials that may be the answer (see the module's docstring), in trial order."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    baseline = baseline_trial(study)
    key = guard_figure(study)
    reference = final_figure(baseline, key) if baseline is not None and baseline.state == TrialState.COMPLETE \
        else None
    if reference is None:
        return complete
    maximize = study.direction == StudyDirection.MAXIMIZE

    def no_worse(trial: FrozenTrial) -> bool:
        figure = final_figure(trial, key)
        if figure is None:  # no curves on record (a trial added by hand): nothing says it is worse
            return True
        return figure <= reference if maximize else figure >= reference

    return [t for t in complete if t.number == baseline.number or no_worse(t)]


def best_single_trial(study: optuna.Study) -> FrozenTrial | None:
    """The answer by single runs: the best value among the eligible trials; None before any trial completes."""
    trials = eligible_trials(study)
    if not trials:
        return None
    pick = max if study.direction == StudyDirection.MAXIMIZE else min
    return pick(trials, key=lambda t: t.value)
