"""The dashboard's live study figures and note (search.live), on real SQLite studies."""

import json
import time

import optuna
from optuna.trial import TrialState

from search.live import LiveDashboard, curve_trials
from search.trial_curves import store_curves


def figures(study: optuna.Study) -> dict:
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    attrs = study._storage.get_study_system_attrs(study._study_id)
    return {k: json.loads(v) for k, v in get_plotly_graph_objects(attrs).items()}


def trace_names(study: optuna.Study) -> set:
    return {t["name"] for t in figures(study).get("learning-curves", {}).get("data", [])}


def curves(n: int) -> dict:
    return {"train_loss": [1.0 / (e + 1) for e in range(n)], "eval_loss": [0.9 / (e + 1) for e in range(n)],
            "eval_accuracy": [0.5 + 0.04 * e for e in range(n)], "epoch_seconds": [1.5] * n}


def test_a_running_trial_appears_after_its_first_epoch(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    seen = {}

    def objective(trial):
        store_curves(trial, curves(1))  # what search.objective stores after epoch 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and f"trial {trial.number} (running)" not in trace_names(study):
            time.sleep(0.05)
        seen[trial.number] = time.monotonic() < deadline
        return 0.5 - trial.number * 0.1

    with LiveDashboard(study, url, "held-out loss", interval=0.05):
        study.optimize(objective, n_trials=2)
    assert seen == {0: True, 1: True}  # each trial saw its own curve while it was still running
    names = trace_names(study)  # the final state, written on the way out
    assert "trial 1 (best so far)" in names and "trial 0 (complete)" in names
    from optuna_dashboard import get_note

    assert "best: trial 1" in get_note(study)


def test_the_figure_shows_best_baseline_and_the_last_few():
    study = optuna.create_study()
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for i, value in enumerate([0.9, 0.2, 0.8, 0.7, 0.6, 0.5, 0.4]):
        study.add_trial(optuna.trial.create_trial(params={"x": i / 10}, distributions=dist, value=value,
                                                  system_attrs={"curves": curves(3)},
                                                  user_attrs={"baseline": True} if i == 0 else {}))
    study.add_trial(optuna.trial.create_trial(params={"x": 0.9}, distributions=dist, state=TrialState.PRUNED,
                                              system_attrs={"curves": curves(1)}, intermediate_values={1: 1.0}))
    study.add_trial(optuna.trial.create_trial(params={"x": 0.95}, distributions=dist, state=TrialState.FAIL))
    labels = list(curve_trials(study))
    assert labels == ["trial 1 (best so far)", "trial 0 (baseline config)", "trial 7 (pruned)", "trial 6 (complete)",
                      "trial 5 (complete)"]


def test_nothing_is_written_when_nothing_moved(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    study.add_trial(
        optuna.trial.create_trial(params={}, distributions={}, value=1.0, system_attrs={"curves": curves(2)})
    )
    live = LiveDashboard(study, url, "held-out loss")
    live.publish()
    first = study._storage.get_study_system_attrs(study._study_id)
    live.publish()
    assert study._storage.get_study_system_attrs(study._study_id) == first  # same figure, same timestamp


def test_a_figure_replaces_an_older_longer_one_whole(tmp_path):
    """A study written by optuna-dashboard's own chunked save (or a longer earlier figure) still reads back
    as the new figure alone."""
    import plotly.graph_objects as go
    from optuna_dashboard import save_plotly_graph_object

    from search.live import save_figure

    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    save_plotly_graph_object(study, go.Figure(go.Scatter(y=list(range(3000)), name="old")), graph_object_id="speed")
    save_figure(study, go.Figure(go.Scatter(y=[1, 2], name="new")), "speed")
    assert [t["name"] for t in figures(study)["speed"]["data"]] == ["new"]


def test_the_history_figure_keeps_pruned_values_apart_from_results():
    """optuna-dashboard's own history chart draws a pruned trial's last reported value like a result (below
    the best line). The study's "history" figure draws results and the best-so-far line from complete trials
    only, and pruned trials apart, hollow, each named with when it reported its value."""
    from search.live import history_figure

    study = optuna.create_study()
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trial(optuna.trial.create_trial(params={"x": 0.1}, distributions=dist, value=0.71))
    study.add_trial(optuna.trial.create_trial(params={"x": 0.2}, distributions=dist, state=TrialState.PRUNED,
                                              value=0.36, intermediate_values={3: 0.36}))
    study.add_trial(optuna.trial.create_trial(params={"x": 0.3}, distributions=dist, value=0.5))
    fig = history_figure(study, "held-out loss")
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["complete"].y) == [0.71, 0.5] and list(by_name["best so far"].y) == [0.71, 0.5]
    pruned = by_name["pruned (last reported value)"]
    assert list(pruned.x) == [1] and list(pruned.y) == [0.36] and "epoch 1" in pruned.text[0]
    assert pruned.marker.symbol == "circle-open"
