"""Declarations of torch's own SGD and AdamW, as trials train them."""

from __future__ import annotations

from typing import Any

import torch

from . import _keys
from ._spec import OptimizerSpec, register_optimizer

__all__: list[str] = []


def sgd(params: Any, lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 5e-4, **options: Any):
    """``torch.optim.SGD`` with momentum 0.9 and weight decay 5e-4 unless given."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **options)


def adamw(params: Any, lr: float = 1e-3, weight_decay: float = 0.05, **options: Any):
    """``torch.optim.AdamW`` with weight decay 0.05 unless given."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **options)


register_optimizer(
    "sgd",
    OptimizerSpec(
        sgd,
        (_keys.LR, _keys.WEIGHT_DECAY, _keys.MOMENTUM, _keys.FUSED),
        "torch.optim.SGD with momentum",
        has_momentum=True,
    ),
)
register_optimizer(
    "adamw",
    OptimizerSpec(
        adamw,
        (_keys.LR, _keys.WEIGHT_DECAY, _keys.BETA1, _keys.BETA2, _keys.FUSED),
        "torch.optim.AdamW",
        has_betas=True,
    ),
)
