"""Retrain an exported trial on the full training data and save a model you can load anywhere.

    se-cca-search retrain best.json -o runs/best
    se-cca-search retrain best.json --epochs 5 --keep-val --verify
    se-cca-search retrain best.json --epochs-rule best-epoch -o runs/best-epoch

Writes, atomically, into the -o folder: model.safetensors, config.json, metrics.json and curves.html (the
seed's train/test loss plot). By default it trains on train + validation images (all 60k for MNIST)
and scores the test set after each epoch, as the seed does; --keep-val trains on the training split
only and scores the held-out split each epoch (the test set once at the end). How many epochs: the
file's ``retrain_rule`` (export writes same-epochs, the trial's own), --epochs-rule to choose another,
--epochs N to set them.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from model import IMPLS, SECCANet, count_parameters, save_model
from search.cli import (
    add_compile_arg,
    add_data_dir_arg,
    add_device_arg,
    command,
    int_between,
    positive_float,
    run_main,
    seed_int,
)
from search.data import load_splits
from search.devices import apply_compile_flag, resolve_device
from search.diagnosis import unstable_end
from search.errors import EXIT_FAILED
from search.metrics import METRIC_FIELDS, evaluate, metric_value
from search.outputs import AtomicFolder, check_output_folder, write_text_atomic
from search.plots import retrain_curves, write_html
from search.retrain_epochs import EPOCH_RULES, RETRAIN_RULE, best_epoch, retrain_epochs
from search.storage import STUDY_NAME
from search.training import fit
from search.trial_file import load_trial_file


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command("retrain"), description=__doc__.splitlines()[0])
    parser.add_argument("trial_file", type=Path, help="a file written by `se-cca-search export`")
    parser.add_argument("--epochs", type=int_between(1, 1000, "epochs from 1 to 1000"), default=None,
                        help="epochs (default: what --epochs-rule gives)")
    parser.add_argument("--epochs-rule", choices=EPOCH_RULES, default=None,
                        help="same-epochs: the trial's; best-epoch: the epoch of its best held-out score "
                             f"(default: the file's retrain_rule, else {RETRAIN_RULE})")
    add_device_arg(parser)
    parser.add_argument("-o", "--output", dest="out", type=Path, default=None,
                        help="output folder (default: runs/<study>-trial<N>)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing -o folder")
    parser.add_argument("--keep-val", action="store_true",
                        help="train on the training split only and monitor the held-out split (default: off)")
    parser.add_argument("--verify", action="store_true",
                        help="first re-run the trial at search fidelity and check its value is reproduced")
    parser.add_argument("--tolerance", type=positive_float, default=0.02,
                        help="relative tolerance for --verify (default: 0.02)")
    parser.add_argument("--seed", type=seed_int, default=None,
                        help="seed of the initialisation and batch order (the held-out split stays the trial's); "
                             "retraining with a few seeds shows how much of a test score is luck (default: the "
                             "study's seed)")
    add_data_dir_arg(parser)
    parser.add_argument("--impl", choices=IMPLS, default="auto", help="attention implementation (default: auto)")
    add_compile_arg(parser)
    return parser


def verify(record: dict, net_config, train_config, options, device, tolerance: float) -> bool:
    """Re-run the trial exactly as the objective did (same split, subset, seeds, epochs)."""
    number = record.get("trial_number", 0)
    data = load_splits(options).to(device)
    torch.manual_seed(options.seed + number)
    model = SECCANet(net_config).to(device)
    history = fit(model, data.train_x, data.train_y, data.held_out_x, data.held_out_y, train_config,
                  seed=options.seed + number)
    metric = record.get("metric", "loss")
    value = metric_value(history[-1], metric if metric in METRIC_FIELDS else "loss")
    expected = record.get("value")
    if expected is None:
        print(f"verify: re-run gives {value:.4f}; the trial stored no value to compare with")
        return True
    diff = abs(value - expected) / max(abs(expected), 1e-12)
    ok = diff <= tolerance
    print(f"verify: trial {number} re-run gives {record.get('metric_name', metric)} {value:.4f}, stored "
          f"{expected:.4f} (relative difference {diff:.2%}, tolerance {tolerance:.0%}): "
          f"{'reproduced' if ok else 'NOT reproduced'}")
    return ok


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def default_output(record: dict) -> Path:
    """runs/<study>-trial<N>, where the study name comes from the file: only a name that passes the
    study-name check (no '/', no '..') is used, so a crafted file cannot write outside runs/."""
    name = record.get("study_name", "trial")
    if not STUDY_NAME.fullmatch(str(name)) or ".." in str(name):
        name = "trial"
    return Path("runs") / f"{name}-trial{record.get('trial_number', 0)}"


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    record, net_config, train_config, options = load_trial_file(args.trial_file)  # validate before anything
    rule = args.epochs_rule or record.get("retrain_rule", RETRAIN_RULE)
    if args.epochs is None and rule == "best-epoch":
        best_epoch(record, where=str(args.trial_file))  # a file without curves fails here, before any work
    out = args.out or default_output(record)
    check_output_folder(out, overwrite=args.overwrite)
    device = resolve_device(args.device)
    apply_compile_flag(args.compile, device)
    options = replace(options, data_dir=args.data_dir)
    if args.verify:
        search_config = load_trial_file(args.trial_file)[2]
        if not verify(record, net_config, search_config, options, device, args.tolerance):
            print("verify failed: the trial did not reproduce; not retraining (raise --tolerance to go on)",
                  file=sys.stderr)
            return EXIT_FAILED
    # Full fidelity: the whole training split (no subset); held-out images too unless --keep-val.
    full = replace(options, train_subset=None)
    data = load_splits(full)
    if args.keep_val or full.eval_on == "test":
        train_x, train_y = data.train_x, data.train_y
        monitor_x, monitor_y, monitor = data.held_out_x, data.held_out_y, "held-out"
    else:
        train_x, train_y = torch.cat([data.train_x, data.held_out_x]), torch.cat([data.train_y, data.held_out_y])
        monitor_x, monitor_y, monitor = data.test_x, data.test_y, "test"
    train_x, train_y, monitor_x, monitor_y = (t.to(device) for t in (train_x, train_y, monitor_x, monitor_y))
    test_x, test_y = data.test_x.to(device), data.test_y.to(device)
    trial_images = min(options.train_subset or len(data.train_y), len(data.train_y))
    if args.epochs is not None:
        rule, epochs = "--epochs", args.epochs
    else:
        epochs = retrain_epochs(rule, record, train_config.epochs, where=str(args.trial_file))
    print(f"epochs: {epochs} ({rule}; the trial trained {train_config.epochs} epochs of {trial_images} images)")
    train_config = replace(train_config, epochs=epochs)
    seed = options.seed if args.seed is None else args.seed
    torch.manual_seed(seed)
    model = SECCANet(net_config, impl=args.impl).to(device)
    print(f"retraining trial {record.get('trial_number')} on {device}: {len(train_y)} images, {train_config.epochs} "
          f"epochs, {count_parameters(model)} parameters; monitoring the {monitor} set", flush=True)
    start = time.perf_counter()
    history = fit(model, train_x, train_y, monitor_x, monitor_y, train_config, seed=seed,
                  log=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - start
    unstable = unstable_end([h.train_loss for h in history])
    test_loss, test_acc = evaluate(model, test_x, test_y)
    steps_per_epoch = len(history[0].step_losses)
    metrics = {
        "trial_number": record.get("trial_number"), "study_name": record.get("study_name"),
        "train_images": len(train_y), "monitor": monitor, "seed": seed, "seconds": seconds, "epochs_rule": rule,
        "epochs": [{"epoch": h.epoch, "train_loss": h.train_loss, f"{monitor}_loss": h.eval_loss,
                    f"{monitor}_accuracy": h.eval_accuracy, "seconds": h.seconds} for h in history],
        "step_train_loss": [v for h in history for v in h.step_losses],
        "test_loss": test_loss, "test_accuracy": test_acc,
        "search_value": record.get("value"), "search_metric": record.get("metric_name"),
        "unstable": unstable,
    }
    with AtomicFolder(out) as tmp:
        data_record = {**full.identity(), "trained_on_val": not (args.keep_val and full.eval_on == "val")}
        save_model(model, tmp, extra={"train": train_config.to_dict(), "data": data_record,
                                      "source": {k: record.get(k) for k in ("study_name", "trial_number", "value",
                                                                            "metric_name", "params")}})
        write_text_atomic(tmp / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        fig = retrain_curves(metrics["step_train_loss"], steps_per_epoch, [h.eval_loss for h in history],
                             [h.eval_accuracy for h in history], eval_label=monitor)
        line = (
            f"{len(train_y)} images, {len(history)} epoch{'s' if len(history) > 1 else ''}, {seconds:.1f} s: "
            f"test loss {test_loss:.4f}, test accuracy {test_acc:.2%}"
            + (
                f" (the trial's {record.get('metric_name', 'value')} in the search: {record['value']:.4f})"
                if finite(record.get("value"))
                else ""
            )
        )
        write_html(tmp / "curves.html", f"retrained trial {record.get('trial_number')}",
                   [("summary", f"<p>{html.escape(line)}</p>"
                     + (f"<p><b>warning: {html.escape(unstable)}</b></p>" if unstable else "")), ("curves", fig)])
    beside = f"  (the trial's {record.get('metric_name', 'value')} in the search: {record['value']:.4f})" \
        if finite(record.get("value")) else ""
    print(f"test loss {test_loss:.4f}, test accuracy {test_acc:.4f}{beside}")
    if unstable:
        # The model is saved all the same (nothing is lost); the user decides, knowing the scores are luck.
        print(f"warning: {unstable}; these scores are not typical of the configuration: retrain with another "
              "--seed, or export a trial with a lower learning rate", file=sys.stderr)
    print(f"saved {out}/: model.safetensors, config.json, metrics.json, curves.html ({seconds:.1f} s)")
    print(f"load it with: {command('evaluate')} {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
