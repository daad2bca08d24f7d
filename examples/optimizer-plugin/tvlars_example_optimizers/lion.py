"""Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023) and its tvlars declaration."""

from __future__ import annotations

from typing import Annotated

import torch

from tvlars.optim import Hyperparameter, OptimizerSpec
from tvlars.registry import Bounds

__all__ = ["SPEC", "Lion"]


class Lion(torch.optim.Optimizer):
    """The sign of an interpolated momentum, with decoupled weight decay:
    ``c = β1·m + (1−β1)·g;  p −= lr·(sign(c) + wd·p);  m = β2·m + (1−β2)·g``."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Invalid betas: {betas}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p, memory_format=torch.preserve_format))
                update = (beta1 * m + (1 - beta1) * p.grad).sign_()
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(update, alpha=-group["lr"])
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss


#: Lion, declared once: its trial keys, their types, bounds and defaults, and where a comparison starts it.
SPEC = OptimizerSpec(
    Lion,
    (
        Hyperparameter("lr", Annotated[float, Bounds(ge=0)], 1e-4, help="learning rate (3-10x below AdamW's)"),
        Hyperparameter("weight_decay", Annotated[float, Bounds(ge=0)], 0.0, help="decoupled weight decay"),
        Hyperparameter(
            "beta1",
            Annotated[float, Bounds(ge=0, lt=1)],
            0.9,
            argument="betas",
            convert=lambda v, a, _: (v, a["beta2"]),
        ),
        Hyperparameter(
            "beta2",
            Annotated[float, Bounds(ge=0, lt=1)],
            0.99,
            argument="betas",
            convert=lambda v, a, _: (a["beta1"], v),
        ),
    ),
    "Lion: sign of interpolated momentum (Chen et al., 2023)",
    # No published large-batch sweep: a grid around the paper's advice (3-10x below AdamW's 1e-3), ours, not theirs.
    references={256: {"lr": (1e-4, 3e-4, 1e-3)}},
    official={"weight_decay": 0.0, "beta1": 0.9, "beta2": 0.99},
)
