"""Ctrl-C and SIGTERM: one meaning everywhere (a KeyboardInterrupt, exit 130), and moments they must wait.

- ``sigterm_as_interrupt``: SIGTERM does what Ctrl-C does, so ``finally`` blocks and temp folders are
  cleaned up instead of the process dying with 143 (installed by ``search.cli.run_main``).
- ``interrupt_once``: inside the trial loop, one KeyboardInterrupt and then nothing, so a second Ctrl-C
  cannot cut short Optuna's marking of the interrupted trial as FAIL.
- ``deferred_signals``: a block that must finish whole (creating a study: its schema, attributes and
  seed trial); a signal during it is remembered and raised as KeyboardInterrupt right after.
- ``process``: a command's whole process, from its first import to the interpreter's exit (the entry
  points ``python -m search.run``, ``python -m search`` and ``se-cca-search`` run through it).

This module imports nothing but the standard library and search.errors: ``process`` must be in place
before torch's imports, which take the first 1-4 s of every command.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager

from search.errors import EXIT_FAILED, EXIT_INTERRUPTED

SIGNALS = (signal.SIGINT, signal.SIGTERM)
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM); run the same command again to resume"


def sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def ignore(signum, frame):
    """A Python-level no-op. Not SIG_IGN: a second signal already caught by the C handler when the first
    one's handler switches to SIG_IGN makes CPython print "OSError: Signal 15 ignored due to race
    condition" with a traceback (seen with Ctrl-C reaching worker processes beside the parent's SIGTERM)."""


def interrupt_once(signum, frame):
    for sig in SIGNALS:
        signal.signal(sig, ignore)
    raise KeyboardInterrupt


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
    if received:
        raise KeyboardInterrupt


def process(command: Callable[[], int]) -> None:
    """Run ``command`` (it imports what it needs, runs, and returns an exit code) as the whole process, and
    exit with its code. SIGTERM means Ctrl-C from the first moment, so a signal during the imports is the
    one ``interrupted`` line and exit 130, not a traceback or a death by signal (143). Once the command
    has its code its work is done: a signal while the interpreter shuts down (joining threads, exit hooks)
    ends the process at once with that code."""
    signal.signal(signal.SIGTERM, sigterm_as_interrupt)
    code = EXIT_FAILED  # an unexpected exception: Python prints it and exits 1
    try:
        code = command()
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        code = EXIT_INTERRUPTED
    finally:
        for sig in SIGNALS:
            signal.signal(sig, exit_now(code))
    sys.exit(code)


def exit_now(code: int):
    def handler(signum, frame):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, RuntimeError, ValueError):  # a closed pipe, or a write this signal cut into
                pass
        os._exit(code)

    return handler
