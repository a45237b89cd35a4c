"""Train one configuration of the SE + CCA network and print the seed-style log.

    se-cca-search train --hidden-size 128 --lr 1e-3 --batch-size 64 --epochs 1
    se-cca-search train --dataset synthetic --epochs 2 -o runs/try1

Scores on the held-out split after every epoch, then on the test set once at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from model import ACTIVATIONS, IMPLS, INITS, NetConfig, SECCANet, count_parameters, save_model
from search.cli import (
    add_compile_arg,
    add_data_args,
    add_device_arg,
    command,
    data_options,
    int_between,
    positive_float,
    run_main,
    seed_int,
)
from search.data import load_splits
from search.devices import apply_compile_flag, resolve_device
from search.errors import UsageError
from search.metrics import evaluate
from search.outputs import AtomicFolder, check_output_folder
from search.training import OPTIMIZERS, SCHEDULES, TrainConfig, fit


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=command("train"), description=__doc__.splitlines()[0])
    # Defaults: the baseline configuration, i.e. the dataclasses' own defaults.
    net, train = NetConfig(), TrainConfig()
    parser.add_argument("--hidden-size", type=int_between(1, 16384, "a width from 1 to 16384"),
                        default=net.hidden_size, help=f"fc1 width (default: {net.hidden_size})")
    parser.add_argument("--lr", type=positive_float, default=train.lr, help=f"learning rate (default: {train.lr:g})")
    parser.add_argument("--batch-size", type=int_between(1, 65536, "a batch size from 1 to 65536"),
                        default=train.batch_size, help=f"batch size (default: {train.batch_size})")
    parser.add_argument("--epochs", type=int_between(1, 1000, "epochs from 1 to 1000"), default=train.epochs,
                        help=f"epochs (default: {train.epochs})")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=train.optimizer,
                        help=f"optimiser (default: {train.optimizer})")
    # The extended space's knobs, so any exported trial can be trained by hand too.
    recipe = parser.add_argument_group("training recipe and network (the extended space's knobs)")
    recipe.add_argument("--weight-decay", type=float, default=train.weight_decay,
                        help=f"weight decay, AdamW and SGD (default: {train.weight_decay:g})")
    recipe.add_argument("--momentum", type=float, default=train.momentum,
                        help=f"SGD only (default: {train.momentum:g})")
    recipe.add_argument("--schedule", choices=SCHEDULES, default=train.schedule,
                        help=f"learning rate over all steps (default: {train.schedule})")
    recipe.add_argument("--warmup", type=float, default=train.warmup,
                        help=f"fraction of the steps spent warming up, cosine and onecycle (default: {train.warmup:g})")
    recipe.add_argument("--label-smoothing", type=float, default=train.label_smoothing,
                        help=f"training loss only (default: {train.label_smoothing:g})")
    recipe.add_argument("--cca-channels", type=int_between(8, 1024, "channels from 8 to 1024"),
                        default=net.cca_channels,
                        help=f"channels between conv1 and conv2 (default: {net.cca_channels})")
    recipe.add_argument("--activation", choices=ACTIVATIONS, default=net.activation,
                        help=f"head activation (default: {net.activation})")
    recipe.add_argument("--init", choices=INITS, default=net.init, help=f"weight init (default: {net.init})")
    recipe.add_argument("--dropout", type=float, default=net.dropout,
                        help=f"dropout on the 784 features before the head (default: {net.dropout:g})")
    add_device_arg(parser)
    parser.add_argument("--impl", choices=IMPLS, default="auto",
                        help="attention implementation; same function either way (default: auto)")
    add_compile_arg(parser)
    parser.add_argument(
        "--seed", type=seed_int, default=0, help="seeds the split, the init and the batch order (default: 0)"
    )
    parser.add_argument("-o", "--output", dest="out", type=Path, default=None,
                        help="save model.safetensors + config.json in this folder (default: none)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing -o folder (default: off)")
    add_data_args(parser)
    return parser


def configs_of(args: argparse.Namespace) -> tuple[NetConfig, TrainConfig]:
    """The network and training configs the flags describe; an impossible value is a one-line error."""
    if not 0.0 <= args.momentum < 1.0:
        raise UsageError(f"--momentum {args.momentum}: expected a number in [0, 1)")
    try:
        net = NetConfig(hidden_size=args.hidden_size, cca_channels=args.cca_channels, activation=args.activation,
                        init=args.init, dropout=args.dropout)
        train = TrainConfig(lr=args.lr, batch_size=args.batch_size, epochs=args.epochs, optimizer=args.optimizer,
                            weight_decay=args.weight_decay, momentum=args.momentum, schedule=args.schedule,
                            warmup=args.warmup, label_smoothing=args.label_smoothing)
    except ValueError as exc:
        raise UsageError(f"{exc}; see --help") from None
    return net, train


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    net_config, config = configs_of(args)  # bad values are one line, before any data is read
    if args.out is not None:  # checked before training, as retrain does: never a model beside another's files
        check_output_folder(args.out, overwrite=args.overwrite)
    device = resolve_device(args.device)
    apply_compile_flag(args.compile, device)
    data = load_splits(data_options(args)).to(device)
    torch.manual_seed(args.seed)
    model = SECCANet(net_config, impl=args.impl).to(device)
    print(f"training on {device} ({torch.get_num_threads()} threads), {count_parameters(model)} parameters, "
          f"{len(data.train_y)} training images, held-out = {args.eval_on} ({len(data.held_out_y)})", flush=True)
    start = time.perf_counter()
    history = fit(model, data.train_x, data.train_y, data.held_out_x, data.held_out_y, config, seed=args.seed,
                  log=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - start
    test_loss, test_acc = evaluate(model, data.test_x, data.test_y)
    last = history[-1]
    per_epoch = sum(h.seconds for h in history) / len(history)
    print(f"done in {seconds:.1f} s ({per_epoch:.1f} s/epoch, {last.train_images_per_second:.0f} train images/s)")
    print(f"held-out loss {last.eval_loss:.4f}, accuracy {last.eval_accuracy:.4f}")
    print(f"test loss {test_loss:.4f}, accuracy {test_acc:.4f}")
    if args.out is not None:
        with AtomicFolder(args.out) as tmp:  # weights and config appear together, replacing the folder whole
            options = data_options(args)
            # With --eval-on test the training set is every training image, the validation split included.
            data_record = {**options.identity(), "trained_on_val": options.eval_on == "test"}
            save_model(model, tmp, extra={"train": config.to_dict(), "data": data_record})
        print(f"saved {args.out}/model.safetensors and config.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
