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


def test_seed_configs_lie_inside_the_space():
    for name in space.SPACES:
        params = space.seed_params(name)
        net, train = space.suggest(FixedTrial(params), name)
        assert (net.hidden_size, train.lr, train.batch_size, train.epochs) == (128, 1e-3, 64, 10)
        for key, rng in space.ranges(name).items():
            if key in params:
                value = params[key]
                assert value in rng["choices"] if "choices" in rng else rng["low"] <= value <= rng["high"]
    r = space.ranges()
    assert r["hidden_size"]["low"] <= 256 <= r["hidden_size"]["high"] and r["lr"]["low"] <= 5e-4  # section 1.7


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
