"""The search space: the only module that calls ``trial.suggest_*``.

``suggest(trial, space)`` returns the plain configs the model and the loop take. Two spaces:

default (the user's four knobs)
    hidden_size  int 32..512, log      contains the seed's 128 and section 1.7's 256; below 32 the head
                                       underfits MNIST, above 512 fc1 dominates the step time
    lr           float 1e-4..1e-2, log contains 1e-3 (seed) and 5e-4 (section 1.7); Adam is unstable
                                       above 1e-2 and too slow below 1e-4 at these epoch counts
    batch_size   32, 64, 128, 256      the seed's 64 and its neighbours in powers of two
    epochs       int 2..12             the seed's 10, and below it: a 784-128-10 MLP already has its
                                       lowest test loss at epoch 5 (shared/SEED_NOTES.md)

extended (adds the knobs of the seed's section 1.1, and the training recipe it lists as "decay schedule
and regularisation")
    hidden_size   int 32..1024, log    wider than default: with dropout and weight decay a wider head pays
    epochs        int 2..20            a decaying schedule keeps improving past the constant rate's ~5 epochs
    optimizer     adam, adamw, sgd     (seed: adam); AdamW is how Adam gets weight decay
    weight_decay  float 1e-6..1e-1, log    AdamW and SGD only; the seed's Adam runs without it
    momentum      float 0.5..0.99          SGD only
    schedule      constant, cosine, onecycle   (seed: constant) learning rate over all of the run's steps
    warmup        float 0.0..0.3       cosine and onecycle only: fraction of the steps spent warming up
    label_smoothing float 0.0..0.2     training loss only (the scores stay plain cross-entropy)
    cca_channels  16, 32, 64, 128      (seed: 64)
    activation    relu, gelu, tanh, leaky_relu   (seed: relu)
    init          default, kaiming     (seed: PyTorch's default)
    dropout       float 0.0..0.5       on the 784 features before the head (seed: 0)

SE reduction is not searched: with a one-channel image the SE width is max(1, 1 // r) = 1 for every
r, so the knob cannot change the network (it would only dilute the sampler).
"""

from __future__ import annotations

import os

from model import ACTIVATIONS, NetConfig
from search.training import OPTIMIZERS, SCHEDULES, TrainConfig

SPACES = ("default", "extended")

HIDDEN_SIZE = (32, 512)
HIDDEN_SIZE_EXTENDED = (32, 1024)
LR = (1e-4, 1e-2)
BATCH_SIZES = (32, 64, 128, 256)
EPOCHS = (2, 12)
EPOCHS_EXTENDED = (2, 20)
WEIGHT_DECAY = (1e-6, 1e-1)
MOMENTUM = (0.5, 0.99)
WARMUP = (0.0, 0.3)
LABEL_SMOOTHING = (0.0, 0.2)
CCA_CHANNELS = (16, 32, 64, 128)
INITS = ("default", "kaiming")
DROPOUT = (0.0, 0.5)

# The seed's own configuration, enqueued as every new study's first trial.
SEED_PARAMS = {"hidden_size": 128, "lr": 1e-3, "batch_size": 64, "epochs": 10}
# Test-only knob: "LOW,HIGH" shrinks the epochs range (and the seed trial's epochs) so that the
# subprocess tests of the fault suite run in seconds.
if os.environ.get("SE_CCA_TEST_EPOCHS"):
    EPOCHS = EPOCHS_EXTENDED = tuple(int(v) for v in os.environ["SE_CCA_TEST_EPOCHS"].split(","))
    SEED_PARAMS["epochs"] = EPOCHS[1]
SEED_PARAMS_EXTENDED = {**SEED_PARAMS, "optimizer": "adam", "schedule": "constant", "label_smoothing": 0.0,
                        "cca_channels": 64, "activation": "relu", "init": "default", "dropout": 0.0}


def seed_params(space: str) -> dict:
    params = dict(SEED_PARAMS_EXTENDED if space == "extended" else SEED_PARAMS)
    params["epochs"] = min(params["epochs"], epochs_range(space)[1])
    return params


def hidden_range(space: str) -> tuple[int, int]:
    return HIDDEN_SIZE_EXTENDED if space == "extended" else HIDDEN_SIZE


def epochs_range(space: str) -> tuple[int, int]:
    return EPOCHS_EXTENDED if space == "extended" else EPOCHS


def max_epochs(space: str = "default") -> int:
    return epochs_range(space)[1]


def suggest(trial, space: str = "default") -> tuple[NetConfig, TrainConfig]:
    """Ask ``trial`` for every parameter of ``space``; returns (model config, training config)."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    hidden = trial.suggest_int("hidden_size", *hidden_range(space), log=True)
    lr = trial.suggest_float("lr", *LR, log=True)
    batch = trial.suggest_categorical("batch_size", BATCH_SIZES)
    epochs = trial.suggest_int("epochs", *epochs_range(space))
    if space == "default":
        return NetConfig(hidden_size=hidden), TrainConfig(lr=lr, batch_size=batch, epochs=epochs)
    optimizer = trial.suggest_categorical("optimizer", OPTIMIZERS)
    weight_decay = trial.suggest_float("weight_decay", *WEIGHT_DECAY, log=True) if optimizer != "adam" else 0.0
    momentum = trial.suggest_float("momentum", *MOMENTUM) if optimizer == "sgd" else 0.9
    schedule = trial.suggest_categorical("schedule", SCHEDULES)
    warmup = trial.suggest_float("warmup", *WARMUP) if schedule != "constant" else 0.0
    label_smoothing = trial.suggest_float("label_smoothing", *LABEL_SMOOTHING)
    net = NetConfig(
        hidden_size=hidden,
        cca_channels=trial.suggest_categorical("cca_channels", CCA_CHANNELS),
        activation=trial.suggest_categorical("activation", ACTIVATIONS),
        init=trial.suggest_categorical("init", INITS),
        dropout=trial.suggest_float("dropout", *DROPOUT),
    )
    train = TrainConfig(lr=lr, batch_size=batch, epochs=epochs, optimizer=optimizer, weight_decay=weight_decay,
                        momentum=momentum, schedule=schedule, warmup=warmup, label_smoothing=label_smoothing)
    return net, train


def ranges(space: str = "default") -> dict:
    """Each parameter's allowed range {"low", "high", "log"} or choices {"choices"}: for validation and reports."""
    hidden, epochs = hidden_range(space), epochs_range(space)
    out = {
        "hidden_size": {"low": hidden[0], "high": hidden[1], "log": True, "type": "int"},
        "lr": {"low": LR[0], "high": LR[1], "log": True, "type": "float"},
        "batch_size": {"choices": list(BATCH_SIZES)},
        "epochs": {"low": epochs[0], "high": epochs[1], "log": False, "type": "int"},
    }
    if space == "extended":
        out.update({
            "optimizer": {"choices": list(OPTIMIZERS)},
            "weight_decay": {"low": WEIGHT_DECAY[0], "high": WEIGHT_DECAY[1], "log": True, "type": "float"},
            "momentum": {"low": MOMENTUM[0], "high": MOMENTUM[1], "log": False, "type": "float"},
            "schedule": {"choices": list(SCHEDULES)},
            "warmup": {"low": WARMUP[0], "high": WARMUP[1], "log": False, "type": "float"},
            "label_smoothing": {"low": LABEL_SMOOTHING[0], "high": LABEL_SMOOTHING[1], "log": False,
                                "type": "float"},
            "cca_channels": {"choices": list(CCA_CHANNELS)},
            "activation": {"choices": list(ACTIVATIONS)},
            "init": {"choices": list(INITS)},
            "dropout": {"low": DROPOUT[0], "high": DROPOUT[1], "log": False, "type": "float"},
        })
    return out
