"""The fit diagnosis on constructed curves: one case per class, plus the boundaries."""

import math

import pytest

from search.diagnosis import (
    GOOD_FIT,
    NOT_CONVERGING,
    OSCILLATING,
    OVERFITTING,
    REMEDIES,
    UNDERFITTING,
    diagnose,
    diagnose_trial,
    fluctuation,
    note_markdown,
    unstable_end,
)


@pytest.mark.parametrize("train, held, expected", [
    ([0.5, 0.2, 0.1, 0.06, 0.04], [0.3, 0.15, 0.10, 0.09, 0.085], GOOD_FIT),
    ([0.4, 0.15, 0.08, 0.04, 0.02, 0.01], [0.2, 0.10, 0.08, 0.09, 0.11, 0.13], OVERFITTING),
    ([0.4, 0.2, 0.15, 0.12, 0.1, 0.09], [0.2, 0.12, 0.16, 0.11, 0.15, 0.10], OSCILLATING),
    ([1.0, 0.7, 0.6, 0.55], [0.9, 0.68, 0.6, 0.56], UNDERFITTING),
    ([2.30, 2.30, 2.29], [2.30, 2.31, 2.30], NOT_CONVERGING),
    ([0.5, float("nan")], [0.3, float("nan")], NOT_CONVERGING),
])
def test_each_class(train, held, expected):
    assert diagnose(train, held) == expected
    note = note_markdown(0, {"train_loss": train, "eval_loss": held, "eval_accuracy": [0.5] * len(held)}, expected)
    assert f"**Fit diagnosis: {expected}.** Remedies (seed, section 1.3): {REMEDIES[expected]}." in note


def test_overfitting_needs_a_real_rise_and_falling_train_loss():
    held = [0.2, 0.10, 0.105, 0.108]  # +8%: under the 10% threshold
    assert diagnose([0.4, 0.1, 0.05, 0.03], held) == GOOD_FIT
    assert diagnose([0.4, 0.1, 0.05, 0.03], [0.2, 0.10, 0.105, 0.111]) == OVERFITTING
    # held-out rises but training also got worse: not overfitting (that is instability)
    assert diagnose([0.4, 0.1, 0.12, 0.15], [0.2, 0.10, 0.12, 0.15]) != OVERFITTING


def test_underfitting_threshold_and_gap():
    assert diagnose([0.8, 0.3, 0.26], [0.7, 0.3, 0.27]) == UNDERFITTING
    assert diagnose([0.8, 0.3, 0.24], [0.7, 0.3, 0.25]) == GOOD_FIT  # train loss under 0.25
    assert diagnose([0.9, 0.5, 0.3], [0.9, 0.6, 0.45]) == GOOD_FIT  # a 50% gap: not the model's capacity


def test_not_converging_at_half_chance_level():
    half = 0.5 * math.log(10)
    assert diagnose([2.0, half + 0.01], [2.0, half + 0.005]) == NOT_CONVERGING
    assert diagnose([2.0, half - 0.01], [2.0, half - 0.02]) != NOT_CONVERGING
    assert diagnose([2.0, half + 0.01], [2.0, half - 0.005]) != NOT_CONVERGING  # the held-out loss is learning


def test_one_epoch_curves():
    # Pruned after one epoch at ~75% held-out accuracy: the epoch's mean train loss (1.6) still carries
    # the first steps at ln 10, the held-out loss (0.8) does not. Too short to diagnose, not "not converging".
    assert diagnose([1.6], [0.8]) != NOT_CONVERGING
    assert diagnose_trial({"train_loss": [1.6], "eval_loss": [0.8], "eval_accuracy": [0.75]}) is None
    # One epoch at chance level, or a non-finite one, is already a verdict.
    assert diagnose_trial({"train_loss": [2.3], "eval_loss": [2.29], "eval_accuracy": [0.11]}) == NOT_CONVERGING
    assert diagnose_trial({"train_loss": [float("inf")], "eval_loss": [0.5]}) == NOT_CONVERGING
    assert diagnose_trial({"train_loss": [0.9, 0.2], "eval_loss": [0.5, 0.15]}) == GOOD_FIT


def test_a_trial_with_no_epoch_on_record_gets_no_diagnosis():
    """Pruned a third into its first epoch, a trial has no per-epoch curve: nothing was measured at an epoch's
    end, so no verdict (least of all "not converging", with its remedy "check the data set")."""
    assert diagnose_trial({"train_loss": [], "eval_loss": []}) is None
    assert diagnose_trial({}) is None


def test_a_running_trials_note_carries_its_diagnosis_so_far(tmp_path, monkeypatch):
    """The note of a running trial is rewritten after every epoch with the diagnosis of its curves so far."""
    from search import objective
    from search.cli import run_main
    from search.commands import run

    notes = []
    real = objective.write_note
    monkeypatch.setattr(objective, "write_note",
                        lambda trial, attrs, diagnosis=None, *, status="": notes.append((status, diagnosis))
                        or real(trial, attrs, diagnosis, status=status))
    assert run_main(run.main, ["--study-name", "t", "--storage", f"sqlite:///{tmp_path / 't.db'}", "--dataset",
                               "synthetic", "--train-subset", "200", "--val-size", "200", "--workers", "1",
                               "--no-compile", "--pruner", "none", "--epochs-range", "3", "3", "--trials", "1"]) == 0
    running = [diagnosis for status, diagnosis in notes if status.startswith("running, epoch 2/")]
    assert running and running[0] in REMEDIES


def test_fluctuation_is_relative_and_uses_the_last_epochs():
    assert fluctuation([1.0, 1.0, 1.0]) == 0.0
    assert fluctuation([0.10, 0.12, 0.10, 0.12]) == pytest.approx(0.02 / 0.11)
    assert fluctuation([5.0, 0.10, 0.12, 0.10, 0.12, 0.10], window=5) == pytest.approx(0.02 / 0.108)


def test_note_lists_diagnosis_remedy_and_curves():
    note = note_markdown(3, {"train_loss": [0.5, 0.2], "eval_loss": [0.3, 0.25], "eval_accuracy": [0.9, 0.92]},
                         GOOD_FIT)
    assert "**Fit diagnosis: good fit.**" in note and "| 2 | 0.2000 | 0.2500 | 0.9200 |" in note


# Measured: one retrain seed of a 30-minute answer (Adam, constant lr 5.3e-3, 15 epochs) blew up in its last
# epoch (79% test accuracy); another spiked at epoch 8, recovered, and ended at 98.46%.
BLEW_UP = [0.3232, 0.2311, 0.1935, 0.1847, 0.1748, 0.1663, 0.1589, 0.1546, 0.1489, 0.1468, 0.1487, 0.1418, 0.1389,
           0.1376, 0.2872]
RECOVERED = [0.3382, 0.2183, 0.1978, 0.1812, 0.1673, 0.1614, 0.1553, 0.2599, 0.1646, 0.1506, 0.1459, 0.1445, 0.1432,
             0.1411, 0.1405]


def test_an_unstable_end_is_named_from_the_train_loss_alone():
    assert unstable_end(BLEW_UP) == ("the mean training loss rose from 0.1376 (epoch 14) to 0.2872 in the last "
                                     "epoch (15): the run went unstable")
    assert unstable_end(RECOVERED) is None  # a spike that recovered leaves good weights
    assert unstable_end([0.5, 0.2, 0.29]) is None and unstable_end([0.5, 0.2, 0.31]) is not None  # 50% above
    assert "to nan" in unstable_end([0.5, 0.2, math.nan])
    assert unstable_end([0.5]) is None and unstable_end([]) is None
