"""search.pick: the answer is never less accurate on the held-out images than the seed's config."""

from __future__ import annotations

import json

import optuna
from optuna.trial import TrialState, create_trial

from search import export
from search import space as search_space
from search.cli import run_main
from search.pick import best_single_trial, eligible_trials
from search.rescore import top_trials
from search.summary import best_trial, summary


def trial(hidden: int, epochs: int, value: float, loss: float, accuracy: float, *, seed_config: bool = False,
          state: TrialState = TrialState.COMPLETE):
    params = {"hidden_size": hidden, "lr": 1e-3, "batch_size": 64, "epochs": epochs}
    curves = {"train_loss": [0.1] * epochs, "eval_loss": [loss] * epochs, "eval_accuracy": [accuracy] * epochs}
    return create_trial(params=params, distributions=search_space.distributions("default"), state=state,
                        value=value if state == TrialState.COMPLETE else None, system_attrs={"curves": curves},
                        user_attrs={"seed_config": True} if seed_config else {})


def study_of(trials, direction="minimize", storage=None) -> optuna.Study:
    study = optuna.create_study(study_name="p", storage=storage, direction=direction)
    study.set_user_attr("identity", {"space": "default", "metric": "loss" if direction == "minimize" else "accuracy",
                                     "dataset": "synthetic", "seed": 0})
    for t in trials:
        study.add_trial(t)
    return study


def test_a_lower_loss_that_is_less_accurate_than_the_seed_config_is_passed_over(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'p.db'}"
    study = study_of([trial(128, 10, 0.100, 0.100, 0.9700, seed_config=True),   # the seed's config
                      trial(300, 2, 0.080, 0.080, 0.9650),                      # lowest loss, less accurate
                      trial(400, 8, 0.090, 0.090, 0.9750),                      # lower loss, more accurate
                      trial(200, 6, 0.095, 0.095, 0.9700),                      # as accurate: it qualifies
                      trial(500, 9, 0.050, 0.050, 0.9900, state=TrialState.PRUNED)], storage=storage)
    assert study.best_trial.number == 1  # Optuna's own pick
    assert [t.number for t in eligible_trials(study)] == [0, 2, 3]
    assert best_single_trial(study).number == best_trial(study).number == 2
    assert [t.number for t in top_trials(study)] == [2, 3, 0]  # what --repeats re-scores
    text = summary(study, storage, "held-out loss")
    assert "best: trial 2, held-out loss 0.0900" in text
    assert ("(trial 1 scored 0.0800, better, but its held-out accuracy 0.9650 is worse than the seed config's "
            "0.9700: not an answer)") in text
    out = tmp_path / "best.json"
    assert run_main(export.main, ["--study-name", "p", "--storage", storage, "-o", str(out)]) == 0
    assert json.loads(out.read_text())["trial_number"] == 2
    # --trial still exports any trial, Optuna's best among them.
    assert run_main(export.main, ["--study-name", "p", "--storage", storage, "--trial", "1", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["trial_number"] == 1


def test_with_nothing_as_accurate_the_seed_config_is_the_answer():
    study = study_of([trial(128, 10, 0.100, 0.100, 0.9700, seed_config=True), trial(300, 2, 0.080, 0.080, 0.9600)])
    assert best_trial(study).number == 0
    assert "the seed config (trial 0) is still the best" in summary(study, "sqlite:///x.db", "held-out loss")


def test_without_a_finished_seed_config_trial_it_is_optunas_best():
    assert best_trial(study_of([trial(300, 2, 0.080, 0.080, 0.9600), trial(400, 8, 0.090, 0.090, 0.9750)])).number == 0
    running_seed = trial(128, 10, 0.1, 0.1, 0.97, seed_config=True, state=TrialState.PRUNED)
    assert best_trial(study_of([running_seed, trial(300, 2, 0.080, 0.080, 0.9600)])).number == 1
    assert best_trial(study_of([])) is None


def test_a_study_that_maximises_accuracy_guards_the_held_out_loss():
    study = study_of([trial(128, 10, 0.970, 0.100, 0.970, seed_config=True),
                      trial(300, 12, 0.980, 0.150, 0.980),   # more accurate, but a worse loss
                      trial(400, 8, 0.975, 0.090, 0.975)], direction="maximize")
    assert study.best_trial.number == 1
    assert best_trial(study).number == 2
    assert "its held-out loss 0.1500 is worse than the seed config's 0.1000" in summary(study, "sqlite:///x.db",
                                                                                        "held-out accuracy")
