"""Ctrl-C that a library would lose: blocks that hold it until they finish (search.interrupts.deferred_signals),
and the training step that raises one a finalizer dropped (raise_if_lost); in-process."""

from __future__ import annotations

import os
import signal

import pytest
import torch

import model.closed_form
from search import interrupts
from search.devices import apply_compile_flag
from search.interrupts import deferred_signals, interrupt_once
from search.training import TrainConfig, fit


def ctrl_c_swallowed_by_a_library():
    """What an import that catches everything does to a KeyboardInterrupt raised inside it."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10_000):
            pass
    except BaseException:
        pass


def test_a_signal_inside_the_block_waits_for_its_end_and_then_interrupts():
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            ctrl_c_swallowed_by_a_library()
            finished.append(True)
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_interrupt_wins_over_an_error_the_block_raised_after_it():
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            ctrl_c_swallowed_by_a_library()
            raise ValueError("inductor failed")


def test_ctrl_c_while_the_compiled_kernels_are_set_up_is_not_lost(monkeypatch):
    """torch's first compile imports dynamo and inductor; a Ctrl-C that such an import swallows still stops
    the command once the kernels are set up."""
    def use_compiled_kernels(enabled=True):
        ctrl_c_swallowed_by_a_library()

    monkeypatch.setattr(model.closed_form, "use_compiled_kernels", use_compiled_kernels)
    with pytest.raises(KeyboardInterrupt):
        apply_compile_flag(None, "cpu")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_that_a_finalizer_dropped_stops_the_next_training_step():
    """Seen in CI: SIGTERM during the first trial raised inside SQLAlchemy's weakref callback, Python printed
    "Exception ignored ... KeyboardInterrupt", and the search ran to the end with exit 0."""
    class Finalized:
        def __del__(self):  # what a garbage collector's callback is: its exceptions are printed, not raised
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):
                pass

    previous = {sig: signal.signal(sig, interrupt_once) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        Finalized()  # no exception here: the handler's KeyboardInterrupt was dropped
        assert signal.getsignal(signal.SIGTERM) is interrupts.ignore  # the handler did run
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        x, y = torch.zeros(8, 28, 28, dtype=torch.uint8), torch.zeros(8, dtype=torch.long)
        with pytest.raises(KeyboardInterrupt):
            fit(model, x, y, x, y, TrainConfig(epochs=1, batch_size=4))
        fit(model, x, y, x, y, TrainConfig(epochs=1, batch_size=4))  # raised once, then training goes on
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
