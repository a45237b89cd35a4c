"""The search space: one table of Optuna distributions per space, and the only ``trial.suggest_*`` calls.

The table drives everything that needs the space: ``suggest`` (the objective), ``check_params`` in
search.trial_file (validating an exported file), the report's edge warnings (which read the same
distributions back from each trial, ``FrozenTrial.distributions``), and ``baseline_params``, the seed's
own configuration, which is the dataclass defaults of ``NetConfig`` and ``TrainConfig`` (no copy here).

default: the four knobs of the seed's card (hidden size, learning rate, batch size, epochs).
extended: adds the knobs of the seed's section 1.1 and the training recipe it lists as "decay schedule
and regularisation". Parameters in ``APPLIES`` exist only where their condition holds (weight decay
not for Adam, momentum only for SGD, warm-up only with a schedule), so samplers never see dead knobs.

SE reduction is not searched: with a one-channel image the SE width is max(1, 1 // r) = 1 for every
r, so the knob cannot change the network (it would only dilute the sampler).
"""

from __future__ import annotations

import dataclasses

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from model import ACTIVATIONS, INITS, NetConfig
from search.errors import UsageError
from search.training import OPTIMIZERS, SCHEDULES, TrainConfig

SPACES = ("default", "extended")

DEFAULT = {
    # Contains the seed's 128 and section 1.7's 256; below 32 the head underfits MNIST, above 512 fc1
    # dominates the step time.
    "hidden_size": IntDistribution(32, 512, log=True),
    # Contains 1e-3 (seed) and 5e-4 (section 1.7); Adam is unstable above 1e-2, too slow below 1e-4.
    "lr": FloatDistribution(1e-4, 1e-2, log=True),
    "batch_size": CategoricalDistribution((32, 64, 128, 256)),  # the seed's 64 and its powers-of-two neighbours
    # The seed's 10 and below it: a 784-128-10 MLP already has its lowest test loss at epoch 5
    # (shared/SEED_NOTES.md).
    "epochs": IntDistribution(2, 12),
}
EXTENDED = {
    **DEFAULT,
    "hidden_size": IntDistribution(32, 1024, log=True),  # with dropout and weight decay a wider head pays
    "epochs": IntDistribution(2, 20),  # a decaying schedule keeps improving past the constant rate's ~5 epochs
    "optimizer": CategoricalDistribution(OPTIMIZERS),  # AdamW is how Adam gets weight decay
    "weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
    "momentum": FloatDistribution(0.5, 0.99),
    "schedule": CategoricalDistribution(SCHEDULES),  # the learning rate over all of the run's steps
    "warmup": FloatDistribution(0.0, 0.3),  # fraction of the steps spent warming up
    "label_smoothing": FloatDistribution(0.0, 0.2),  # training loss only; the scores stay plain cross-entropy
    "cca_channels": CategoricalDistribution((16, 32, 64, 128)),
    "activation": CategoricalDistribution(ACTIVATIONS),
    "init": CategoricalDistribution(INITS),
    "dropout": FloatDistribution(0.0, 0.5),  # on the 784 features before the head
}
TABLES = {"default": DEFAULT, "extended": EXTENDED}
# Conditional parameters: asked for (and allowed in a file) only where the condition holds.
APPLIES = {
    "weight_decay": lambda params: params["optimizer"] != "adam",  # the seed's Adam runs without it
    "momentum": lambda params: params["optimizer"] == "sgd",
    "warmup": lambda params: params["schedule"] != "constant",
}
NET_FIELDS = {f.name for f in dataclasses.fields(NetConfig)}
TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def fixed_params(space: str, metric: str | None) -> dict:
    """Params that a study scored by ``metric`` leaves out of its space, with the seed's value they keep.
    The calibrated loss fits a temperature on the held-out set, which removes the plain loss's penalty on
    label smoothing: it picked smoothed runs whose plain test loss was above the baseline config's
    (docs/experiments.md). A temperature does after training what smoothing does during it. Left out, not
    held at 0 in the space: a constant param would still get an importance (PED-ANOVA gives it one)."""
    if metric == "calibrated-loss" and "label_smoothing" in TABLES.get(space, {}):
        return {"label_smoothing": 0.0}
    return {}


def distributions(space: str = "default", epochs: tuple[int, int] | None = None,
                  metric: str | None = None) -> dict[str, BaseDistribution]:
    """The space's table; ``epochs`` (``--epochs-range``) narrows the epochs range; ``metric`` drops the
    params a study scored by it does not search (``fixed_params``)."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    fixed = fixed_params(space, metric)
    table = {name: dist for name, dist in TABLES[space].items() if name not in fixed}
    if epochs is not None:
        table["epochs"] = IntDistribution(*epochs)
    return table


def check_epochs_range(epochs: tuple[int, int] | None, space: str) -> tuple[int, int] | None:
    """``--epochs-range LOW HIGH``: from 1 up to the space's own maximum (files exported from such a study
    must still validate against the space)."""
    if epochs is None:
        return None
    low, high = epochs
    top = TABLES[space]["epochs"].high
    if not 1 <= low <= high <= top:
        raise UsageError(f"--epochs-range {low} {high}: need 1 <= LOW <= HIGH <= {top} (the {space} space's "
                         "maximum)")
    return low, high


def applies(name: str, params: dict) -> bool:
    return name not in APPLIES or APPLIES[name](params)


def suggest(trial, space: str = "default", epochs: tuple[int, int] | None = None,
            metric: str | None = None) -> tuple[NetConfig, TrainConfig]:
    """Ask ``trial`` for every parameter of ``space`` that applies (and that ``metric`` searches); returns
    (model config, training config)."""
    params = {}
    for name, dist in distributions(space, epochs, metric).items():
        if not applies(name, params):
            continue
        if isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
        else:
            params[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return configs(params)


def configs(params: dict) -> tuple[NetConfig, TrainConfig]:
    """A trial's params as the configs the model and the loop take; absent knobs keep the seed's values."""
    return (NetConfig(**{k: v for k, v in params.items() if k in NET_FIELDS}),
            TrainConfig(**{k: v for k, v in params.items() if k in TRAIN_FIELDS}))


def baseline_params(space: str = "default", epochs: tuple[int, int] | None = None,
                    metric: str | None = None) -> dict:
    """The seed's own configuration as params of ``space`` (every new study's first trial): the dataclass
    defaults, with its 10 epochs clamped into the epochs range."""
    defaults = {**NetConfig().to_dict(), **TrainConfig().to_dict()}
    table = distributions(space, epochs, metric)
    params = {}
    for name in table:
        if applies(name, params):
            params[name] = defaults[name]
    params["epochs"] = min(max(params["epochs"], table["epochs"].low), table["epochs"].high)
    return params


def max_epochs(space: str = "default", epochs: tuple[int, int] | None = None) -> int:
    return distributions(space, epochs)["epochs"].high
