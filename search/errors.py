"""The tool's exceptions and every exit code a command returns.

Each command's ``main`` runs inside ``search.cli.run_main``, the one boundary that turns a ``SearchError``
into one ``error: ...`` line and its exit code, and Ctrl-C or SIGTERM into ``EXIT_INTERRUPTED``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # what was asked did not hold (retrain --verify did not reproduce), or a worker died
EXIT_USAGE = 2  # bad input: flags, files, data
EXIT_STORAGE = 3  # the study storage cannot be opened or written (a full disk too)
EXIT_TRAINING = 4  # training failed outside a search (a diverged run of train or retrain)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM, as a shell reports SIGINT


class SearchError(Exception):
    """An error the user can act on; ``str(err)`` is the whole message."""

    exit_code = 1


class UsageError(SearchError):
    """A flag or input file is wrong."""

    exit_code = EXIT_USAGE


class DataError(SearchError):
    """The data set cannot be found, fetched or parsed."""

    exit_code = EXIT_USAGE


class StorageError(SearchError):
    """The study storage cannot be opened or written."""

    exit_code = EXIT_STORAGE


class TrainingError(SearchError):
    exit_code = EXIT_TRAINING


class DivergedError(TrainingError):
    """The loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        super().__init__(f"diverged at epoch {epoch}, step {step}: loss is {loss}")
        self.epoch, self.step, self.loss = epoch, step, loss


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of the ``__cause__`` / ``__context__`` chain (Optuna and urllib wrap the
    real reason, e.g. "database is locked" or "No space left on device", in generic messages)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    return exc


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
