"""The exported-trial JSON file: what ``search.export`` writes (``trial_record``) and ``search.retrain``
validates (``load_trial_file``).

Validation happens before any training and names the first problem in one line: JSON syntax (with
line and column), unknown or missing keys, wrong types, and values outside the study's search space
(with the allowed range or choices).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import FixedTrial

from model import NetConfig
from search import space as search_space
from search.answer import ranked, repeats_record
from search.cli import SEED_MAX, command
from search.data import DATASETS, EVAL_ON, IDENTITY_TYPES, DataOptions
from search.errors import UsageError
from search.metrics import METRIC_NAMES
from search.retrain_epochs import EPOCH_RULES, RETRAIN_RULE
from search.training import TrainConfig
from search.trial_curves import curves_of

FORMAT = "se-cca-search/trial@1"
REQUIRED = {"format": str, "space": str, "params": dict, "data": dict}
OPTIONAL = {"study_name": str, "storage": str, "trial_number": int, "state": str, "metric": str,
            "metric_name": str, "direction": str, "value": (float, int, type(None)), "model": dict, "train": dict,
            "seed": int, "curves": dict, "test_loss": (float, int), "test_accuracy": (float, int),
            "versions": dict, "reason": str, "diagnosis": str, "retrain_rule": str, "repeats": dict}
# The data identity (search.data), except that a file states the held-out size it was scored on.
DATA_KEYS = {**IDENTITY_TYPES, "val_size": int}
TYPE_NAMES = {str: "a string", dict: "an object", int: "an integer", float: "a number", bool: "true/false"}


def _type_name(expected) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join("null" if t is type(None) else TYPE_NAMES.get(t, t.__name__) for t in types)


def _check_type(where: str, value, expected) -> None:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in types:  # JSON true is not an integer here
        raise UsageError(f"{where} must be {_type_name(expected)}, got {json.dumps(value)}")
    if not isinstance(value, types):
        raise UsageError(f"{where} must be {_type_name(expected)}, got {json.dumps(value)}")


def trial_record(study, trial) -> dict:
    """Everything needed to retrain, verify or compare one trial, as plain JSON."""
    identity = study.user_attrs.get("identity", {})
    space = identity.get("space", "default")
    net, train = search_space.configs(trial.params)
    metric = identity.get("metric", "loss")
    record = {
        "format": FORMAT,
        "study_name": study.study_name,
        "trial_number": trial.number,
        "state": trial.state.name,
        "metric": metric,
        "metric_name": METRIC_NAMES.get(metric, metric),
        "direction": study.direction.name.lower(),
        "value": trial.value,
        "space": space,
        "params": dict(trial.params),
        "model": net.to_dict(),
        "train": train.to_dict(),
        "data": {k: identity.get(k) for k in DATA_KEYS},
        "seed": identity.get("seed", 0),
        "curves": {k: v for k, v in curves_of(trial).items() if k != "epoch_seconds"},
        "versions": study.user_attrs.get("versions", {}),
        "retrain_rule": RETRAIN_RULE,
    }
    for key in ("test_loss", "test_accuracy", "reason", "diagnosis"):
        if key in trial.user_attrs:
            record[key] = trial.user_attrs[key]
    rescored = [r for r in ranked(study) if r["trial"].number == trial.number]
    if rescored:  # search.run --repeats: every held-out value of its runs, their mean and spread
        record["repeats"] = repeats_record(rescored[0])
    return record


MAX_TRIAL_NUMBER = 10**9  # far beyond any study; it names the default model folder and seeds --verify
MAX_FILE_BYTES = 16 << 20  # an exported trial is a few KB; a file far larger is not one


def read_json(path: Path) -> dict:
    """The JSON object in ``path``, a regular file of at most MAX_FILE_BYTES (checked before reading)."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise UsageError(f"{path}: not a regular file (a folder, FIFO or device); give an exported trial's JSON file")
    if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
        raise UsageError(f"{path}: {path.stat().st_size:,} bytes is not an exported trial (a few KB); give the file "
                         f"`{command('export')}` wrote")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file; write one with `{command('export')} -o {path}`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, 200,000 nested brackets
        raise UsageError(f"{path}: not a usable JSON file ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object at the top level")
    return data


def check_params(params: dict, space: str, where: str = "params", metric: str | None = None
                 ) -> tuple[NetConfig, TrainConfig]:
    """Every param known, typed and inside the space; conditional params only where they apply. The params a
    study scored by ``metric`` does not search may be absent (they keep the seed's value)."""
    # Epochs from 1: a study may have narrowed them (--epochs-range) anywhere up to the space's maximum.
    table = search_space.distributions(space, epochs=(1, search_space.max_epochs(space)))
    for name, value in params.items():
        if name not in table:
            raise UsageError(f"{where}.{name} is not a parameter of the {space!r} space "
                             f"(parameters: {', '.join(table)})")
        dist = table[name]
        if isinstance(dist, CategoricalDistribution):
            # Same type too: 64.0 == 64, but a float batch size fails later, inside training.
            if not any(value == c and type(value) is type(c) for c in dist.choices):
                raise UsageError(f"{where}.{name} = {json.dumps(value)} is not allowed; choose from "
                                 f"{', '.join(json.dumps(c) for c in dist.choices)}")
            continue
        is_int = isinstance(dist, IntDistribution)
        numeric = (int,) if is_int else (int, float)
        if isinstance(value, bool) or not isinstance(value, numeric) or not math.isfinite(value):
            raise UsageError(f"{where}.{name} must be {'an integer' if is_int else 'a number'}, "
                             f"got {json.dumps(value)}")
        if not dist.low <= value <= dist.high:
            raise UsageError(f"{where}.{name} = {value} is outside the search space [{dist.low}, {dist.high}]")
    trial = FixedTrial({**search_space.fixed_params(space, metric), **params})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net, train = search_space.suggest(trial, space)
    except ValueError as exc:  # FixedTrial: "The value of the parameter 'x' is not found."
        missing = str(exc).split("'")[1] if "'" in str(exc) else str(exc)
        raise UsageError(f"{where} is missing {missing!r}, which the {space!r} space needs here") from None
    unused = sorted(set(params) - set(trial.params))
    if unused:
        raise UsageError(f"{where}.{unused[0]} does not apply with these params (e.g. momentum is for "
                         "optimizer sgd, weight_decay for adamw and sgd); remove it")
    return net, train


def validate(data: dict, path: Path) -> tuple[NetConfig, TrainConfig, DataOptions]:
    for key in data:
        if key not in REQUIRED and key not in OPTIONAL:
            raise UsageError(f"{path}: unknown key {key!r} (allowed: {', '.join([*REQUIRED, *OPTIONAL])})")
    for key, expected in REQUIRED.items():
        if key not in data:
            raise UsageError(f"{path}: missing key {key!r}; export the file with `se-cca-search export`")
        _check_type(f"{path}: {key}", data[key], expected)
    for key, expected in OPTIONAL.items():
        if key in data:
            _check_type(f"{path}: {key}", data[key], expected)
    if data["format"] != FORMAT:
        raise UsageError(f"{path}: format {data['format']!r} is not {FORMAT!r}")
    if data.get("retrain_rule", RETRAIN_RULE) not in EPOCH_RULES:
        raise UsageError(f"{path}: retrain_rule {data['retrain_rule']!r} is unknown; choose from "
                         f"{', '.join(EPOCH_RULES)}")
    if data["space"] not in search_space.SPACES:
        raise UsageError(f"{path}: space {data['space']!r} is unknown; choose from {', '.join(search_space.SPACES)}")
    for key in data["data"]:
        if key not in DATA_KEYS:
            raise UsageError(f"{path}: unknown key data.{key} (allowed: {', '.join(DATA_KEYS)})")
    for key, expected in DATA_KEYS.items():
        if key not in data["data"]:
            raise UsageError(f"{path}: missing key data.{key}")
        _check_type(f"{path}: data.{key}", data["data"][key], expected)
    d = data["data"]
    if not 0 <= data.get("trial_number", 0) <= MAX_TRIAL_NUMBER:
        raise UsageError(f"{path}: trial_number must be from 0 to {MAX_TRIAL_NUMBER:,}")
    if not 0 <= d["seed"] <= SEED_MAX or ("seed" in data and not 0 <= data["seed"] <= SEED_MAX):
        raise UsageError(f"{path}: data.seed and seed must be from 0 to {SEED_MAX}")
    for key in ("val_size", "train_subset"):
        if d[key] is not None and not 0 <= d[key] <= 10_000_000:
            raise UsageError(f"{path}: data.{key} = {d[key]} is out of range (0 to 10,000,000)")
    if d["dataset"] not in DATASETS:
        raise UsageError(f"{path}: data.dataset {d['dataset']!r} is unknown; choose from {', '.join(DATASETS)}")
    if d["eval_on"] not in EVAL_ON:
        raise UsageError(f"{path}: data.eval_on {d['eval_on']!r} is unknown; choose from {', '.join(EVAL_ON)}")
    if data.get("metric", "loss") not in METRIC_NAMES:
        raise UsageError(f"{path}: metric {data.get('metric')!r} is unknown; choose from {', '.join(METRIC_NAMES)}")
    net, train = check_params(data["params"], data["space"], where=f"{path}: params", metric=data.get("metric"))
    for key, resolved in (("model", net.to_dict()), ("train", train.to_dict())):
        # model and train are optional and may be partial (a file written by hand): the keys it holds must agree.
        for name, value in data.get(key, {}).items():
            if name not in resolved:
                raise UsageError(f"{path}: unknown key {key}.{name} (allowed: {', '.join(resolved)})")
            if value != resolved[name]:
                raise UsageError(f"{path}: {key}.{name} = {json.dumps(value)} disagrees with the params "
                                 f"({json.dumps(resolved[name])}); edit params, not {key}")
    options = DataOptions.from_identity(d, where=f"{path}: data")
    return net, train, options


def load_trial_file(path: Path) -> tuple[dict, NetConfig, TrainConfig, DataOptions]:
    data = read_json(path)
    net, train, options = validate(data, Path(path))
    return data, net, train, options
