"""The training loop: device-resident batches, per-epoch held-out scoring, an ``on_epoch`` callback.

It knows nothing of Optuna: the objective passes ``on_epoch`` to report and prune. Batches are index
gathers from uint8 tensors already on the device, in a seeded permutation per epoch (shuffled, last
partial batch kept, as the seed's DataLoader).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from search.data import normalize
from search.devices import synchronize
from search.errors import DivergedError
from search.interrupts import raise_if_lost
from search.metrics import Scores, score

OPTIMIZERS = ("adam", "adamw", "sgd")
# Learning-rate schedules over all of a run's steps: the seed's constant rate, a cosine decay to 0 after
# a linear warm-up, or PyTorch's one-cycle (warm up to ``lr``, then anneal far below it).
SCHEDULES = ("constant", "cosine", "onecycle")


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-3
    batch_size: int = 64
    epochs: int = 10
    optimizer: str = "adam"  # the seed's Adam
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    schedule: str = "constant"  # the seed's constant learning rate
    warmup: float = 0.0  # fraction of all steps spent warming up (cosine, onecycle)
    label_smoothing: float = 0.0  # training loss only; held-out and test losses are plain cross-entropy

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not (self.lr > 0 and self.batch_size >= 1 and self.epochs >= 1 and self.weight_decay >= 0):
            raise ValueError("lr > 0, batch_size >= 1, epochs >= 1 and weight_decay >= 0 are required")
        if not (0.0 <= self.warmup < 1.0 and 0.0 <= self.label_smoothing < 1.0):
            raise ValueError("warmup and label_smoothing must be in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochResult:
    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's images
    eval_loss: float | None  # held-out; None on epochs that were not scored (``score_every_epoch=False``)
    eval_accuracy: float | None
    eval_calibrated_loss: float | None  # held-out loss at its best temperature (``calibrated_cross_entropy``)
    seconds: float  # training + evaluation
    train_images_per_second: float
    step_losses: list[float] = field(default_factory=list, repr=False)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    """A per-step scheduler for ``config.schedule`` over ``total_steps``, or None for a constant rate."""
    if config.schedule == "onecycle":
        if total_steps < 3:  # PyTorch's one-cycle divides by zero below 3 steps: too short to have a cycle
            return None
        # PyTorch's one-cycle; its warm-up phase needs at least two steps to be well defined.
        pct_start = min(max(config.warmup, 2.0 / total_steps), 0.5)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps,
                                                   pct_start=pct_start)
    warm = int(config.warmup * total_steps)
    if config.schedule == "cosine":
        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total_steps - warm)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return None


# Devices with PyTorch's fused optimizer kernels (one call updates every parameter).
FUSED_DEVICES = ("cpu", "cuda")


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    """The config's optimizer, fused where the device has the kernels. Why fused: on the CPU PyTorch's
    default updates one parameter at a time in Python, ~2.3 ms of a ~11 ms batch-32 step of this network;
    the fused kernel is one call (same update, rounded differently by ~1e-7; docs/benchmarks.md)."""
    params = list(params)
    fused = bool(params) and all(p.device.type in FUSED_DEVICES for p in params)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           fused=fused)


def fit(model: nn.Module, train_x: torch.Tensor, train_y: torch.Tensor, eval_x: torch.Tensor,
        eval_y: torch.Tensor, config: TrainConfig, *, seed: int = 0,
        on_epoch: Callable[[EpochResult], None] | None = None,
        log: Callable[[str], None] | None = None, log_every: int = 100,
        score_every_epoch: bool = True, peek_at: float = 1 / 3,
        on_peek: Callable[[Scores], None] | None = None) -> list[EpochResult]:
    """Train ``model`` in place; all tensors already on the model's device. Raises DivergedError.
    ``score_every_epoch=False`` scores the held-out images after the last epoch only (a successive-halving
    rung needs just its final score; scoring 10,000 images each epoch can cost half a small rung).
    ``on_peek``: also score them once, ``peek_at`` (a fraction) into the first epoch, and pass the Scores
    to it, so a pruner can stop a hopeless run before it pays for a whole epoch."""
    device = train_x.device
    optimizer = make_optimizer(model.parameters(), config)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    gen = torch.Generator().manual_seed(seed)  # batch order: CPU generator, same on every device
    n = len(train_y)
    steps = math.ceil(n / config.batch_size)
    scheduler = make_scheduler(optimizer, config, steps * config.epochs)
    # On accelerators, reading the loss every step would stall the queue; check every `check` steps.
    check = 1 if device.type == "cpu" else 50
    peek_step = max(1, int(steps * peek_at)) if on_peek is not None else 0
    history: list[EpochResult] = []
    model.train()
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(n, generator=gen).to(device)
        losses = torch.empty(steps, device=device)
        checked = 0
        peek_seconds = 0.0  # scoring inside the epoch: wall time, but not training throughput
        for step in range(steps):
            raise_if_lost()
            idx = order[step * config.batch_size:(step + 1) * config.batch_size]
            loss = criterion(model(normalize(train_x[idx])), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses[step] = loss.detach()
            if (step + 1) % check == 0 or step + 1 == steps:
                _check_finite(losses, checked, step + 1, epoch)
                checked = step + 1
            if log is not None and (step + 1) % log_every == 0:
                log(f"Epoch[{epoch}/{config.epochs}],Step[{step + 1}/{steps}],Train Loss:{losses[step].item():.4f}")
            if epoch == 1 and step + 1 == peek_step:
                synchronize(device)  # so the queued training steps are not counted as the peek's
                peek_start = time.perf_counter()
                _check_finite(losses, checked, step + 1, epoch)
                checked = step + 1
                peek = score(model, eval_x, eval_y)
                if not math.isfinite(peek.eval_loss):
                    raise DivergedError(epoch, step + 1, peek.eval_loss)
                on_peek(peek)
                peek_seconds = time.perf_counter() - peek_start
        synchronize(device)
        train_seconds = time.perf_counter() - start - peek_seconds
        sizes = torch.full((steps,), float(config.batch_size), device=device)
        sizes[-1] = n - (steps - 1) * config.batch_size
        train_loss = float((losses * sizes).sum() / n)
        scored = score_every_epoch or epoch == config.epochs
        scores = score(model, eval_x, eval_y) if scored else None
        eval_loss = scores.eval_loss if scores else None
        if log is not None and scored:
            log(f"Epoch[{epoch}/{config.epochs}],Test Loss:{eval_loss:.4f}")
        result = EpochResult(epoch, train_loss, eval_loss, scores and scores.eval_accuracy,
                             scores and scores.eval_calibrated_loss, time.perf_counter() - start,
                             n / train_seconds, losses.tolist())
        history.append(result)
        if scored and not math.isfinite(eval_loss):
            raise DivergedError(epoch, steps, eval_loss)
        if on_epoch is not None:
            on_epoch(result)
    return history


def _check_finite(losses: torch.Tensor, begin: int, end: int, epoch: int) -> None:
    bad = ~torch.isfinite(losses[begin:end])
    if bool(bad.any()):
        step = begin + int(bad.nonzero()[0, 0])
        raise DivergedError(epoch, step + 1, float(losses[step]))
