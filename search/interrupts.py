"""Ctrl-C and SIGTERM: one meaning everywhere (a KeyboardInterrupt, exit 130), and moments they must wait.

- ``raise_interrupt``: SIGTERM does what Ctrl-C does, so ``finally`` blocks and temp folders are
  cleaned up instead of the process dying with 143 (installed by ``search.cli.run_main``); and each
  signal is remembered, so ``raise_if_lost`` (each training step) raises one that a library dropped.
- ``interrupt_once``: inside the trial loop, one KeyboardInterrupt and then nothing, so a second Ctrl-C
  cannot cut short Optuna's marking of the interrupted trial as FAIL.
- ``deferred_signals``: a block that must finish whole (creating a study: its schema, attributes and
  seed trial), or one whose libraries may lose a KeyboardInterrupt raised inside them (the first
  torch.compile); a signal during it is remembered and raised as KeyboardInterrupt right after.
- ``process``: a command's whole process, from its first import to the interpreter's exit (the entry
  points ``python -m search.run``, ``python -m search.ensemble``, ``python -m search`` and ``se-cca-search``
  run through it).

This module imports nothing but the standard library and search.errors: ``process`` must be in place
before torch's imports, which take the first 1-4 s of every command.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager

from search.errors import EXIT_FAILED, EXIT_INTERRUPTED

SIGNALS = (signal.SIGINT, signal.SIGTERM)
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM); run the same command again to resume"


_raised: list[int] = []  # the signals these handlers turned into a KeyboardInterrupt (raise_if_lost)


def raise_interrupt(signum, frame):
    _raised.append(signum)
    raise KeyboardInterrupt


def raise_if_lost() -> None:
    """A checkpoint in long work (each training step): raise the KeyboardInterrupt a handler here raised if it
    never reached the command. Raised inside a garbage collector's callback (SQLAlchemy's weakref callbacks)
    it is printed as "Exception ignored" and dropped, and the search would run on to exit 0."""
    if _raised:
        _raised.clear()
        raise KeyboardInterrupt


def forget_raised() -> None:
    """The interrupt has reached the command (an in-process caller may run another)."""
    _raised.clear()


def ignore(signum, frame):
    """A Python-level no-op. Not SIG_IGN: a second signal already caught by the C handler when the first
    one's handler switches to SIG_IGN makes CPython print "OSError: Signal 15 ignored due to race
    condition" with a traceback (seen with Ctrl-C reaching worker processes beside the parent's SIGTERM)."""


def interrupt_once(signum, frame):
    for sig in SIGNALS:
        signal.signal(sig, ignore)
    raise_interrupt(signum, frame)


@contextmanager
def deferred_signals():
    """Hold SIGINT/SIGTERM until the block has finished, then raise KeyboardInterrupt if one came.
    (Python-level: blocking the signal in the main thread alone would let another thread take it.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:  # the interrupt wins over an error the block raised meanwhile
            raise KeyboardInterrupt


def process(load: Callable[[], Callable[[], int]]) -> None:
    """Run a command as the whole process and exit with its code. ``load`` imports what the command needs
    and returns it; the command runs and returns an exit code.

    Ctrl-C or SIGTERM during ``load`` is remembered and acted on once the imports are done: an exception
    raised inside an import can be lost (an import that catches it and goes on, so the command runs to the
    end) or fatal (a C++ module's init aborts on it with SIGABRT). From then on SIGTERM means Ctrl-C, so a
    signal is the one ``interrupted`` line and exit 130, not a traceback or a death by signal (143).
    Once the command has its code its work is done: a signal while the interpreter shuts down (joining
    threads, exit hooks) ends the process at once with that code, and so does the last exit hook
    (``_exit_with_the_commands_code``)."""
    received = []
    for sig in SIGNALS:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    code = EXIT_FAILED  # an unexpected exception: Python prints it and exits 1
    try:
        try:
            command = load()
        finally:  # the handlers first, then the check: a signal between the two still interrupts
            for sig in SIGNALS:
                signal.signal(sig, raise_interrupt)
        if received:
            raise KeyboardInterrupt
        code = command()
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        code = EXIT_INTERRUPTED
    except SystemExit as exc:  # argparse's usage error: Python exits with the code it carries
        code = exc.code if isinstance(exc.code, int) else EXIT_FAILED if exc.code else 0
        raise
    finally:
        for sig in SIGNALS:
            signal.signal(sig, exit_now(code))
        _exit_code[:] = [code]
    sys.exit(code)


_exit_code: list[int] = []


@atexit.register  # at import, before the command's imports register theirs, so it runs after all of them
def _exit_with_the_commands_code() -> None:
    """End the process with the command's own code once every other exit hook has run. Python 3.11 exits
    by SIGINT (-2, not 130) whenever a KeyboardInterrupt once passed through code run by ``exec`` (SQLAlchemy,
    dataclasses and namedtuple build their methods that way), even though the command caught it."""
    if _exit_code:
        exit_now(_exit_code[0])(None, None)


def exit_now(code: int):
    def handler(signum, frame):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, RuntimeError, ValueError):  # a closed pipe, or a write this signal cut into
                pass
        os._exit(code)

    return handler
