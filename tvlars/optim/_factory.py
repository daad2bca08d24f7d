"""``create_optimizer``: a registered optimizer by name, on a model or parameters, as timm's ``create_optimizer_v2``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ._param_groups import param_groups
from ._spec import OPTIMIZERS, OptimizerSpec, get_optimizer

__all__ = ["create_optimizer", "get_optimizer_info", "list_optimizers"]


def list_optimizers() -> list[str]:
    """Names ``create_optimizer`` accepts: every registered optimizer, built-in or plugin."""
    return OPTIMIZERS.names()


def get_optimizer_info(name: str) -> OptimizerSpec:
    """The declaration of ``name`` (case-insensitive); ``ValueError`` naming the choices if there is none."""
    return get_optimizer(name.lower())


@functools.cache
def _arguments(factory: Any) -> tuple[tuple[str, ...], dict[str, Any], bool]:
    """The factory's keyword arguments besides ``params``, their defaults, and whether it takes ``**options``."""
    parameters = list(inspect.signature(factory).parameters.values())[1:]
    names = tuple(p.name for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD)
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return names, defaults, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def create_optimizer(
    name: str, params_or_model: nn.Module | Iterable[Any], **hyperparameters: Any
) -> torch.optim.Optimizer:
    """Build a registered optimizer from its constructor arguments.

    Given a model, 1-D parameters and biases go to a group without weight decay or trust ratio
    (:func:`~tvlars.optim.param_groups`); given parameters or groups, they are used as they are.

    >>> from torch import nn
    >>> opt = create_optimizer("tvlars", nn.Linear(4, 2), lr=2.0, lam=1e-4)
    >>> type(opt).__name__, opt.defaults["lam"]
    ('TVLARS', 0.0001)
    """
    spec = get_optimizer_info(name)
    accepted, defaults, open_ended = _arguments(spec.factory)
    unknown = sorted(set(hyperparameters) - set(accepted))
    if unknown and not open_ended:
        raise ValueError(
            f"Invalid hyperparameter for {name.lower()}: {', '.join(unknown)} (accepts {', '.join(accepted)})"
        )
    if isinstance(params_or_model, nn.Module):
        weight_decay = hyperparameters.get("weight_decay", defaults.get("weight_decay", 0.0))
        groups = param_groups(params_or_model, weight_decay, exclude_1d=hyperparameters.get("exclude_1d", True))
        if not spec.layerwise:
            groups = [{k: v for k, v in g.items() if k != "adapt"} for g in groups]
        params: Any = [g for g in groups if g["params"]]
    else:
        params = params_or_model
    return spec.factory(params, **hyperparameters)
