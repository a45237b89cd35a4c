"""Load a saved model or ensemble folder (safetensors and JSON; nothing unpickled) and score it.

    se-cca-search evaluate runs/best
    se-cca-search evaluate runs/ensemble            # written by se-cca-search ensemble
    se-cca-search evaluate runs/best --eval-on val --data-dir /data
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from safetensors import SafetensorError

from model import load_model
from model.ensemble import is_ensemble_folder, read_ensemble
from model.io import CONFIG, WEIGHTS
from search.cli import add_data_dir_arg, add_device_arg, command, run_main
from search.data import EVAL_ON, DataOptions, load_splits, trained_on_val
from search.devices import resolve_device
from search.errors import UsageError
from search.idx import IMAGE_SIZE, NUM_CLASSES


def open_model(folder: Path, device):
    """load_model with one-line errors for anything that is not a saved model or ensemble folder. -> (model,
    config), where an ensemble's config is its ensemble.json with ``data`` as a model's config.json has it."""
    folder = Path(folder)
    if is_ensemble_folder(folder):
        return open_ensemble(folder, device)
    if not folder.is_dir() or not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise UsageError(f"{folder} is not a saved model folder (it needs {CONFIG} and {WEIGHTS}, as written by "
                         "retrain or train -o); .pt/.pth pickles are never loaded")
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        check_fits_data(folder, config.get("model") if isinstance(config, dict) else None)
        return load_model(folder, device=device), config
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as exc:
        raise UsageError(f"{folder}: cannot load the model ({str(exc).splitlines()[0]})") from None


def open_ensemble(folder: Path, device):
    try:
        record = read_ensemble(folder)
        for member in record["members"]:
            sub = folder / member["folder"]
            if not sub.is_dir():
                raise ValueError(f"member folder {member['folder']} is missing")
            check_fits_data(sub, json.loads((sub / CONFIG).read_text(encoding="utf-8")).get("model"))
        model = load_model(folder, device=device)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, RuntimeError,
            SafetensorError) as exc:
        raise UsageError(f"{folder}: cannot load the ensemble ({str(exc).splitlines()[0]})") from None
    data = record.get("data")
    return model, {"data": {**data, "trained_on_val": bool(record.get("trained_on_val"))}
                   if isinstance(data, dict) else None}


# What every data set here gives a network: one-channel 28x28 images of 10 classes (search.idx).
DATA_SHAPE = {"in_channels": 1, "image_size": IMAGE_SIZE, "num_classes": NUM_CLASSES}


def check_fits_data(folder: Path, model_config) -> None:
    """A model built for other images or classes (a consistent but foreign config.json) is refused by name
    before any tensor meets it."""
    if not isinstance(model_config, dict):
        return  # load_model says what is wrong with it
    for key, fits in DATA_SHAPE.items():
        value = model_config.get(key, fits)
        if value != fits:
            raise UsageError(f"{folder}/{CONFIG}: model.{key} {value!r} does not fit the data sets here "
                             f"(1-channel {IMAGE_SIZE}x{IMAGE_SIZE} images of {NUM_CLASSES} classes need {fits})")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command("evaluate"), description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="a folder with config.json and model.safetensors")
    # The one split flag of every command (search.run and search.train score each epoch on it too);
    parser.add_argument("--eval-on", dest="eval_on", choices=EVAL_ON, default="test",
                        help="what to score: the test set or the held-out split the model's training left out "
                             "(default: test)")
    add_device_arg(parser)
    add_data_dir_arg(parser)
    return parser


def main(argv=None) -> int:
    from search.metrics import evaluate

    args = get_args_parser().parse_args(argv)
    device = resolve_device(args.device)
    model, config = open_model(args.model_dir, device)
    data_cfg = config.get("data") or {"dataset": "mnist"}
    trained = DataOptions.from_identity(data_cfg, args.data_dir, where=f"{args.model_dir}/config.json: data")
    if args.eval_on == "val" and trained_on_val(data_cfg):
        raise UsageError(f"{args.model_dir} was trained on the validation images too (search.retrain without "
                         "--keep-val, or --eval-on test): its val score would be a training score; use --eval-on test")
    # The validation split is the one its training held out: same data set, size and seed (and the model
    # never saw it, checked above); the training-set subset does not matter for it.
    options = replace(trained, eval_on="val", train_subset=None)
    data = load_splits(options).to(device)
    x, y = (data.test_x, data.test_y) if args.eval_on == "test" else (data.held_out_x, data.held_out_y)
    loss, acc = evaluate(model, x, y)
    print(f"{args.model_dir}: {args.eval_on} loss {loss:.4f}, accuracy {acc:.4f} on {len(y)} {options.dataset} images")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
