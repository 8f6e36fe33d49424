"""The optimizer and the per-step learning-rate schedule (linear warm-up, then cosine)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["build_optimizer", "warmup_cosine"]

_OPTIMIZERS = ("adam", "adamw", "sgd")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, cosine: bool = True) -> float:
    """Learning-rate factor at ``step``: linear from ``1/warmup_steps`` to 1, then a cosine
    decay to 0 at ``total_steps`` (or constant 1 with ``cosine=False``)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float,
    warmup_epochs: int,
    cosine: bool,
    total_steps: int | float,
    max_epochs: int | None,
) -> Any:
    """What ``configure_optimizers`` returns: the optimizer and, when a warm-up or cosine
    decay is asked for, a per-step ``LambdaLR`` scheduler."""
    if name not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {name!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if name == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif name == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    finite = math.isfinite(total_steps) and max_epochs not in (None, -1)
    if not finite or (warmup_epochs == 0 and not cosine):
        return opt
    total = int(total_steps)
    warmup_steps = int(round(warmup_epochs * total / max_epochs))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, warmup_steps, total, cosine)
    )
    return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
