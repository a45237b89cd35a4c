"""Pieces every command shares: argparse types, the data flags, and the one error boundary."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from search.data import DATASETS, EVAL_ON, DataOptions
from search.errors import SearchError, one_line

EXIT_INTERRUPTED = 130


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "an integer >= 0")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_data_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", choices=DATASETS, default="mnist", help="data set (default: mnist)")
    group.add_argument("--data-dir", default="data", help="where IDX files live or are saved (default: data)")
    group.add_argument("--val-size", type=positive_int, default=None,
                       help="held-out images carved from the training set (default: 10000; 2000 for synthetic)")
    group.add_argument("--train-subset", type=positive_int, default=None,
                       help="train on a seeded, class-balanced subset of N images (default: all)")
    group.add_argument("--eval-on", choices=EVAL_ON, default="val",
                       help="score on the held-out split, or on the test set as the seed does (default: val)")


def data_options(args: argparse.Namespace) -> DataOptions:
    return DataOptions(dataset=args.dataset, data_dir=args.data_dir, val_size=args.val_size,
                       train_subset=args.train_subset, eval_on=args.eval_on, seed=args.seed)


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Call ``main``; turn a SearchError into one ``error: ...`` line and its exit code."""
    try:
        return main(argv)
    except SearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def add_compile_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the closed-form attention kernels: ~2x faster training on the CPU, "
                             "needs a C++ compiler, rounds differently at the 1e-6 level (default: off)")


def apply_compile_flag(enabled: bool, device) -> None:
    """Switch the compiled kernels on and compile them now, so a missing compiler is one clear error."""
    import torch

    from model.closed_form import cross_softmax_mean, use_compiled_kernels
    from search.errors import UsageError

    use_compiled_kernels(enabled)
    if not enabled:
        return
    try:
        from model.closed_form import COMPILED_CHUNK

        t = torch.zeros(COMPILED_CHUNK, 28, 28, device=device, requires_grad=True)
        cross_softmax_mean(t, t.detach()).sum().backward()
    except Exception as exc:  # inductor raises many types; any of them means "cannot compile here"
        use_compiled_kernels(False)
        raise UsageError(f"--compile: torch.compile failed here ({one_line(exc)}); run without --compile") from None
