"""Split a model's parameters into a decayed/adapted group and a plain group, as timm's param_groups_weight_decay."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

__all__ = ["param_groups"]


def param_groups(
    model: nn.Module,
    weight_decay: float = 5e-4,
    exclude_1d: bool = True,
    no_weight_decay: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Parameter groups for a layer-wise optimizer.

    Under ``exclude_1d``, parameters that are 1-D (biases, norm layers) or whose name ends in ``.bias`` go to a
    group with ``weight_decay=0`` and ``adapt=False`` (no trust ratio), as timm does; so do parameters named in
    ``no_weight_decay`` or in the model's own ``no_weight_decay()``, always. With ``exclude_1d=False`` every other
    tensor is decayed and adapted (the official LAMB). Frozen parameters are left out.

    >>> from torch import nn
    >>> groups = param_groups(nn.Linear(4, 2), weight_decay=1e-4)
    >>> [len(g["params"]) for g in groups], groups[1]["weight_decay"]
    ([1, 1], 0.0001)
    """
    skip = set(no_weight_decay)
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay())
    decay, plain = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if (exclude_1d and (p.ndim <= 1 or name.endswith(".bias"))) or name in skip:
            plain.append(p)
        else:
            decay.append(p)
    return [
        {"params": plain, "weight_decay": 0.0, "adapt": False},
        {"params": decay, "weight_decay": weight_decay},
    ]
