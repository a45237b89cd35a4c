"""Pieces every command shares: argparse types, the data flags, and the one error boundary."""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from search.data import DATASETS, EVAL_ON, SEED_MAX, DataOptions
from search.errors import EXIT_INTERRUPTED, EXIT_STORAGE, SearchError, UsageError
from search.interrupts import INTERRUPTED, forget_raised, raise_interrupt
from search.storage import redact

DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def command(name: str) -> str:
    """How a user runs the command ``name``: every hint and usage line says it this way. The search is
    ``python -m search.run``, the command users are given first; the others are the console script's."""
    return "python -m search.run" if name == "run" else f"se-cca-search {name}"


def int_between(minimum: int, maximum: int | None, what: str):
    """An argparse type: an integer in [minimum, maximum]; huge or negative values are one error line
    here, not a traceback (or gigabytes allocated) later."""
    def parse(text: str) -> int:
        try:
            value = int(text) if len(text) <= 30 else None
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text[:40]!r}")
        return value

    return parse


positive_int = int_between(1, None, "a positive integer")
non_negative_int = int_between(0, None, "an integer >= 0")
seed_int = int_between(0, SEED_MAX, f"an integer from 0 to {SEED_MAX}")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_device_arg(parser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")


def add_data_dir_arg(parser) -> None:
    parser.add_argument("--data-dir", default="data", help="where the IDX files live or are saved (default: data)")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", choices=DATASETS, default="mnist", help="data set (default: mnist)")
    add_data_dir_arg(group)
    group.add_argument("--val-size", type=positive_int, default=None,
                       help="held-out images carved from the training set (default: 10000; 2000 for synthetic)")
    group.add_argument("--train-subset", type=positive_int, default=None,
                       help="train on a seeded, class-balanced subset of N images (default: all)")
    group.add_argument("--eval-on", choices=EVAL_ON, default="val",
                       help="score on the held-out split, or on the test set as the seed does (default: val)")


def data_options(args: argparse.Namespace) -> DataOptions:
    return DataOptions(dataset=args.dataset, data_dir=args.data_dir, val_size=args.val_size,
                       train_subset=args.train_subset, eval_on=args.eval_on, seed=args.seed)


def parse_or_usage_error(parser: argparse.ArgumentParser, argv: Sequence[str], what: str) -> argparse.Namespace:
    """Parse flags that another command passes on (bench-search's --tool-flags): argparse's complaint, which
    would print a usage block and exit, becomes one UsageError naming ``what``."""
    def error(message: str):
        raise UsageError(f"{what}: {message}")

    def no_help(*args, **kwargs):  # -h or an abbreviation of --help: a help page instead of the work
        error(f"-h/--help prints {parser.prog}'s help instead of running it; leave it out")

    parser.error, parser.print_help = error, no_help
    return parser.parse_args(argv)


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Call ``main``; turn a SearchError into one ``error: ...`` line and its exit code, and Ctrl-C or
    SIGTERM anywhere (data loading, study creation, the summary) into exit 130."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        return main(argv)
    except SearchError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)  # a driver's message may quote the URL
        return exc.exit_code
    except KeyboardInterrupt:
        forget_raised()
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        # Writes go through temp names and renames: a full disk leaves the old file (or none), never half.
        print(f"error: {exc.strerror} while writing {exc.filename or 'an output file'}; nothing half-written was "
              "kept: free some space and run the same command again", file=sys.stderr)
        return EXIT_STORAGE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def add_compile_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the closed-form attention kernels (1.6x training on one CPU thread; "
                             "needs a C++ compiler; compiled once, then cached on disk across processes). "
                             "Unset: on for the CPU where it works, else one line and the eager kernels (off on GPUs, "
                             "where it does not pay); --compile: fail "
                             "if it does not work; --no-compile: off (default: unset)")
