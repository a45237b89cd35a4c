"""One helper that turns ``--device auto|cpu|cuda[:N]|mps`` into a torch.device (auto: cuda, mps, cpu)."""

from __future__ import annotations

import torch

from search.errors import UsageError

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
