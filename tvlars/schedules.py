"""Learning-rate schedules of the TVLARS paper's baselines."""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["WarmupCosine", "paper_lr", "warmup_cosine_factor"]


def paper_lr(lr: float, batch_size: int) -> float:
    """The paper's base LR for LARS with warm-up: ``lr · batch_size / 256`` (linear scaling rule)."""
    return lr * batch_size / 256


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, final_ratio: float = 1e-3) -> float:
    """The multiplier on the base LR at a 0-based ``step``, as the official ``adjust_learning_rate``.

    Linear from 0 to 1 over ``warmup_steps``, then a half cosine from 1 to ``final_ratio`` at ``total_steps``.

    >>> warmup_cosine_factor(0, 10, 100), warmup_cosine_factor(10, 10, 100), warmup_cosine_factor(100, 10, 100)
    (0.0, 1.0, 0.001)
    """
    if step < warmup_steps:
        return step / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    q = 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, decay_steps) / decay_steps))
    return q + final_ratio * (1.0 - q)


class _WarmupCosineLambda:
    # A class, not a closure, so LambdaLR.state_dict() can save it.
    def __init__(self, warmup_steps: int, total_steps: int, final_ratio: float) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.final_ratio = final_ratio

    def __call__(self, step: int) -> float:
        return warmup_cosine_factor(step, self.warmup_steps, self.total_steps, self.final_ratio)


class WarmupCosine(LambdaLR):
    """The paper's LARS schedule: linear warm-up, then cosine to ``final_ratio`` × the base LR; step it per batch.

    Set the group's ``lr`` to the base LR first (the paper uses :func:`paper_lr`, ``lr · batch_size / 256``).

    Args:
        optimizer (Optimizer): wrapped optimizer
        warmup_steps (int): steps of linear warm-up (the paper: 20 epochs' worth)
        total_steps (int): steps in the whole run
        final_ratio (float, optional): the LR at the end over the base LR (default: 1e-3)
        last_epoch (int, optional): the index of the last step, to resume (default: -1)

    >>> import torch
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=paper_lr(0.1, 4096))
    >>> sched = WarmupCosine(opt, warmup_steps=20, total_steps=100)
    >>> opt.param_groups[0]["lr"]
    0.0
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        total_steps: int,
        final_ratio: float = 1e-3,
        last_epoch: int = -1,
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"Invalid warmup_steps: {warmup_steps}")
        if total_steps < max(warmup_steps, 1):
            raise ValueError(f"Invalid total_steps: {total_steps} (must be >= warmup_steps and >= 1)")
        if not 0.0 <= final_ratio <= 1.0:
            raise ValueError(f"Invalid final_ratio: {final_ratio}")
        super().__init__(optimizer, _WarmupCosineLambda(warmup_steps, total_steps, final_ratio), last_epoch)

    def restore(self, state_dict: dict[str, Any]) -> None:
        """Continue at a saved position (``state_dict()``'s) with this optimizer's own base LRs.

        The step count comes from ``state_dict``; the base LRs are the groups' ``initial_lr`` now (a
        population-based-training member that cloned another's state keeps its own LR), and each group's ``lr`` is
        set to what the schedule gives at that step.
        """
        self.load_state_dict(state_dict)
        self.base_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]
        lrs = [base * self.lr_lambdas[i](self.last_epoch) for i, base in enumerate(self.base_lrs)]
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = lrs  # what get_last_lr() answers: set here as LRScheduler.step() sets it
