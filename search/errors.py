"""The tool's exceptions. Each CLI catches ``SearchError`` once in ``main`` and prints one line.

Exit codes: 2 bad input (flags, files, data), 3 storage failure, 4 training failure, 130 interrupted.
"""

from __future__ import annotations


class SearchError(Exception):
    """An error the user can act on; ``str(err)`` is the whole message."""

    exit_code = 1


class UsageError(SearchError):
    """A flag or input file is wrong."""

    exit_code = 2


class DataError(SearchError):
    """The data set cannot be found, fetched or parsed."""

    exit_code = 2


EXIT_STORAGE = 3


class StorageError(SearchError):
    """The study storage cannot be opened or written."""

    exit_code = EXIT_STORAGE


class TrainingError(SearchError):
    exit_code = 4


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
