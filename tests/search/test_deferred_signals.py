"""Blocks that hold Ctrl-C until they finish (search.interrupts.deferred_signals), in-process."""

from __future__ import annotations

import os
import signal

import pytest

import model.closed_form
from search.devices import apply_compile_flag
from search.interrupts import deferred_signals


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
