"""Ctrl-C and SIGTERM: one meaning everywhere (a KeyboardInterrupt, exit 130), and moments they must wait.

- ``sigterm_as_interrupt``: SIGTERM does what Ctrl-C does, so ``finally`` blocks and temp folders are
  cleaned up instead of the process dying with 143 (installed by ``search.cli.run_main``).
- ``interrupt_once``: inside the trial loop, one KeyboardInterrupt and then nothing, so a second Ctrl-C
  cannot cut short Optuna's marking of the interrupted trial as FAIL.
- ``deferred_signals``: a block that must finish whole (creating a study: its schema, attributes and
  seed trial); a signal during it is remembered and raised as KeyboardInterrupt right after.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
