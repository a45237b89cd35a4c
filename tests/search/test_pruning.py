"""search.pruning as pure functions: the clock, the rungs, never at the last epoch, the deadline."""

import optuna
import pytest
from optuna.trial import TrialState

from search import pruning


def test_the_clock_is_thirds_of_an_epoch_with_the_peek_at_step_1():
    assert pruning.STEPS_PER_EPOCH == 3 and pruning.PEEK_STEP == 1
    assert pruning.PEEK_AT == pytest.approx(1 / 3)
    assert [pruning.epoch_step(e) for e in (1, 2, 3, 9)] == [3, 6, 9, 27]
    # successive halving's rungs (1, 3, 9, 27) fall at a third of an epoch, then 1, 3 and 9 epochs
    assert [pruning.epoch_step(e) for e in (1, 3, 9)] == [3, 9, 27]


def test_trials_are_pruned_per_epoch_only_without_size_rungs():
    assert pruning.prunes_per_epoch(1) and not pruning.prunes_per_epoch(3)


@pytest.mark.parametrize("epoch, epochs, expected", [(1, 10, True), (9, 10, True), (10, 10, False), (1, 1, False)])
def test_never_pruned_after_its_last_epoch(epoch, epochs, expected):
    assert pruning.may_prune_after(epoch, epochs) is expected


@pytest.mark.parametrize("now, deadline, epoch, epochs, last_rung, expected", [
    (5.0, None, 1, 3, True, False),  # no --timeout
    (2.9, 3.0, 1, 3, True, False),  # before the deadline
    (3.0, 3.0, 1, 3, True, True),  # at or past it: stop after this epoch
    (9.0, 3.0, 3, 3, True, False),  # its very last epoch: paid for, kept
    (9.0, 3.0, 1, 1, False, True),  # the last epoch of a small rung: the next rung never starts
])
def test_the_deadline_stops_a_trial_after_any_epoch_but_its_very_last(now, deadline, epoch, epochs, last_rung,
                                                                      expected):
    assert pruning.stops_at_deadline(now, deadline, epoch, epochs, last_rung=last_rung) is expected


def test_size_rungs_are_nested_thirds_ending_at_every_image():
    assert pruning.rung_sizes(900, 3) == [100, 300, 900]
    assert pruning.rung_sizes(50_000, 3) == [5555, 16666, 50000]
    assert pruning.rung_sizes(900, 1) == [900]
    assert pruning.rung_sizes(200, 3) == [100, 100, 200]  # never below 10 images a class
    assert [pruning.rung_step(r) for r in range(3)] == [1, 3, 9]


@pytest.mark.parametrize("values, kept", [
    ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], [0.1]),  # each worse than all before: only the first
    ([0.5, 0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4], [0.5, 0.1]),
])
def test_the_default_pruner_lets_a_trial_go_on_only_in_the_best_third_at_the_peek(values, kept):
    """Each trial is compared, at the peek, with those that reached it before: it goes on when it is in
    their best third (with fewer than three there, only when it is the best)."""
    study = optuna.create_study(pruner=pruning.make_pruner("successive-halving"))
    went_on = []
    for value in values:
        trial = study.ask()
        trial.report(value, pruning.PEEK_STEP)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
        else:
            went_on.append(value)
            study.tell(trial, value)
    assert went_on == kept
