"""The device a command trains on: ``--device auto|cpu|cuda[:N]|mps`` as a torch.device (auto: cuda, mps,
cpu), and the ``--compile`` kernels switched on where they pay."""

from __future__ import annotations

import logging
import sys

import torch

from search.errors import UsageError, one_line
from search.interrupts import deferred_signals

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError("--device mps: MPS is not available on this machine; use --device auto or cpu")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise UsageError(f"--device {name}: expected cuda or cuda:N; choose from {DEVICE_CHOICES}")
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine; use --device auto or cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device(name)
    raise UsageError(f"--device {name!r} is not a device; choose from {DEVICE_CHOICES}")


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock timings measure the work, not the queueing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def apply_compile_flag(enabled: bool | None, device) -> bool:
    """Switch the compiled kernels on and compile them now, so a missing compiler shows at once.

    ``None`` (the default) tries and falls back to the eager kernels with one line on stderr;
    ``True`` makes a failure one clear error. Returns whether the compiled kernels are on."""
    from model.closed_form import COMPILED_CHUNK, cross_softmax_mean, use_compiled_kernels

    # Unset means "where it pays": on the CPU. On an H200 the compiled kernels trained no faster (9,076 vs
    # 9,159 images/s) and evaluated 4.7x slower (91k vs 429k images/s; `.ci/gpu-check`, search.bench).
    if enabled is False or (enabled is None and torch.device(device).type != "cpu"):
        use_compiled_kernels(False)
        return False
    # torch's C++ toolchain probe logs a CUDA_HOME warning on CPU-only machines: noise, not news.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        # Ctrl-C waits for the warm-up: it imports torch's dynamo and inductor, and an exception raised inside
        # an import can be lost or fatal (search.interrupts.process).
        with deferred_signals():
            use_compiled_kernels(True)
            # The warm-up compiles both kernels at their one static shape (chunks of the 28x28 logits).
            t = torch.zeros(COMPILED_CHUNK, 28, 28, device=device, requires_grad=True)
            cross_softmax_mean(t, t.detach()).sum().backward()
    except Exception as exc:  # inductor raises many types; any of them means "cannot compile here"
        use_compiled_kernels(False)
        if enabled:
            raise UsageError(f"--compile: torch.compile failed here ({one_line(exc)}); run without --compile") from None
        print(f"compiled kernels unavailable ({one_line(exc)[:160]}); using the eager closed form "
              "(--no-compile silences this)", file=sys.stderr, flush=True)
        return False
    return True
