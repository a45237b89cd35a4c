"""The space gives valid configs for every branch, and contains the seed's settings."""

import pytest
from optuna.trial import FixedTrial

from search import space


@pytest.mark.parametrize("extra", [
    {},
    {"optimizer": "adam", "schedule": "constant", "label_smoothing": 0.0, "cca_channels": 16, "activation": "gelu",
     "init": "kaiming", "dropout": 0.3},
    {"optimizer": "adamw", "weight_decay": 1e-3, "schedule": "onecycle", "warmup": 0.2, "label_smoothing": 0.1,
     "cca_channels": 128, "activation": "tanh", "init": "default", "dropout": 0.0},
    {"optimizer": "sgd", "weight_decay": 1e-5, "momentum": 0.9, "schedule": "cosine", "warmup": 0.05,
     "label_smoothing": 0.05, "cca_channels": 32, "activation": "leaky_relu", "init": "default", "dropout": 0.1},
])
def test_fixed_trials_give_valid_configs(extra):
    name = "extended" if extra else "default"
    params = {"hidden_size": 256, "lr": 5e-4, "batch_size": 128, "epochs": 3, **extra}
    net, train = space.suggest(FixedTrial(params), name)
    assert net.hidden_size == 256 and train.lr == 5e-4 and train.batch_size == 128 and train.epochs == 3
    if extra:
        assert train.optimizer == extra["optimizer"] and net.cca_channels == extra["cca_channels"]
        assert train.weight_decay == extra.get("weight_decay", 0.0)
        assert net.activation == extra["activation"] and net.dropout == extra["dropout"]
        assert train.schedule == extra["schedule"] and train.warmup == extra.get("warmup", 0.0)
        assert train.label_smoothing == extra["label_smoothing"]


def test_the_baseline_is_the_seeds_config_and_lies_inside_the_space():
    for name in space.SPACES:
        params = space.baseline_params(name)
        net, train = space.suggest(FixedTrial(params), name)
        assert (net.hidden_size, train.lr, train.batch_size, train.epochs) == (128, 1e-3, 64, 10)
        assert (net.cca_channels, net.activation, net.dropout, train.optimizer, train.schedule) == (
            64, "relu", 0.0, "adam", "constant")
        table = space.distributions(name)
        for key, value in params.items():
            assert table[key]._contains(table[key].to_internal_repr(value)), (name, key, value)
    table = space.distributions()
    assert table["hidden_size"]._contains(256) and table["lr"]._contains(5e-4)  # section 1.7's config


def test_a_trial_records_the_tables_distributions():
    # The report reads each trial's distributions back; they must be the table's, conditions applied.
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    space.suggest(trial, "extended", epochs=(1, 3))
    study.tell(trial, 0.0)
    frozen = study.trials[0]
    table = space.distributions("extended", epochs=(1, 3))
    assert frozen.distributions == {name: table[name] for name in frozen.params}
    assert frozen.distributions["epochs"] == optuna.distributions.IntDistribution(1, 3)


@pytest.mark.parametrize(("epochs", "baseline_epochs"), [((1, 2), 2), ((3, 3), 3), ((11, 12), 11), (None, 10)])
def test_an_epochs_range_narrows_the_space_and_clamps_the_baseline(epochs, baseline_epochs):
    assert space.baseline_params("default", epochs)["epochs"] == baseline_epochs
    if epochs:
        assert space.distributions("default", epochs)["epochs"].low == epochs[0]
        assert space.max_epochs("default", epochs) == epochs[1]


@pytest.mark.parametrize("epochs", [(0, 2), (3, 2), (1, 13)])
def test_an_epochs_range_outside_the_space_is_refused(epochs):
    from search.errors import UsageError

    with pytest.raises(UsageError, match="--epochs-range"):
        space.check_epochs_range(epochs, "default")
    assert space.check_epochs_range((1, 20), "extended") == (1, 20)


def test_conditional_params_only_where_they_apply():
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        space.suggest(trial, "extended")
        keys = set(trial.params)
        assert ("momentum" in keys) == (trial.params["optimizer"] == "sgd")
        assert ("weight_decay" in keys) == (trial.params["optimizer"] != "adam")
        assert ("warmup" in keys) == (trial.params["schedule"] != "constant")
        study.tell(trial, 0.0)
