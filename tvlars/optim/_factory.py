"""A small optimizer registry behind ``create_optimizer``, as timm's ``_optim_factory``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from ._param_groups import param_groups
from .lamb import LAMB
from .lars import LARS
from .tvlars import TVLARS

__all__ = [
    "RECIPES",
    "OptimizerInfo",
    "Recipe",
    "create_optimizer",
    "get_optimizer_info",
    "get_recipe",
    "list_optimizers",
    "trainable_optimizers",
]


@dataclass(frozen=True)
class OptimizerInfo:
    """What the registry knows of one optimizer."""

    name: str
    cls: type[torch.optim.Optimizer]
    description: str
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    has_momentum: bool = False
    has_betas: bool = False
    layerwise: bool = False  # takes exclude_1d and the `adapt` group option

    @functools.cached_property
    def hyperparameters(self) -> tuple[str, ...]:
        """The keyword arguments the constructor takes besides ``params`` (read once: a signature is slow)."""
        signature = inspect.signature(self.cls.__init__)
        return tuple(n for n in signature.parameters if n not in ("self", "params"))


_REGISTRY: dict[str, OptimizerInfo] = {
    info.name: info
    for info in (
        OptimizerInfo("tvlars", TVLARS, "Time-varying LARS (Do et al., 2024)", has_momentum=True, layerwise=True),
        OptimizerInfo("lars", LARS, "LARS, Barlow Twins form", has_momentum=True, layerwise=True),
        OptimizerInfo("lamb", LAMB, "LAMB (You et al., 2020)", has_betas=True, layerwise=True),
        OptimizerInfo(
            "sgd",
            torch.optim.SGD,
            "torch.optim.SGD with momentum",
            MappingProxyType({"momentum": 0.9, "weight_decay": 5e-4}),
            has_momentum=True,
        ),
        OptimizerInfo(
            "adamw", torch.optim.AdamW, "torch.optim.AdamW", MappingProxyType({"weight_decay": 0.05}), has_betas=True
        ),
    )
}


@dataclass(frozen=True)
class Recipe:
    """A trial's ``optimizer``: a registered optimizer plus what the trainer wraps around it by default.

    A plain optimizer is the recipe of itself (no LR scaling, no warm-up, constant LR); a named recipe sets the
    defaults that a trial's ``lr_scaling``, ``warmup_epochs`` and ``lr_schedule`` override.
    """

    name: str
    optimizer: str
    lr_scaling: str = "none"  # none | linear_256 (base LR = lr * batch_size / 256)
    warmup_fraction: float = 0.0  # warm-up epochs when a trial gives none: round(fraction * epochs)
    lr_schedule: str = "constant"  # constant | warmup_cosine
    description: str = ""


#: Named training recipes on a registered optimizer. ``lars_warmup`` is the paper's baseline: LARS at
#: ``lr * batch_size / 256``, linear warm-up for 20 % of the epochs (20 of its 100), then cosine to 0.001x.
RECIPES: Mapping[str, Recipe] = MappingProxyType(
    {
        "lars_warmup": Recipe(
            "lars_warmup",
            "lars",
            lr_scaling="linear_256",
            warmup_fraction=0.2,
            lr_schedule="warmup_cosine",
            description="LARS with the paper's recipe: lr x batch/256, 20 % linear warm-up, then cosine",
        )
    }
)


def get_recipe(name: str) -> Recipe:
    """The recipe a trial's ``optimizer`` names: a named one, or a registered optimizer on its own.

    >>> get_recipe("lars_warmup").optimizer, get_recipe("tvlars").lr_schedule
    ('lars', 'constant')
    """
    if name in RECIPES:
        return RECIPES[name]
    info = get_optimizer_info(name)
    return Recipe(info.name, info.name, description=info.description)


def trainable_optimizers() -> tuple[str, ...]:
    """Every name a trial's ``optimizer`` may take: the registry's, each recipe after the optimizer it builds on.

    >>> trainable_optimizers()
    ('tvlars', 'lars', 'lars_warmup', 'lamb', 'sgd', 'adamw')
    """
    out: list[str] = []
    for name in _REGISTRY:
        out.append(name)
        out.extend(recipe.name for recipe in RECIPES.values() if recipe.optimizer == name)
    return tuple(out)


def list_optimizers() -> list[str]:
    """Names ``create_optimizer`` accepts."""
    return sorted(_REGISTRY)


def get_optimizer_info(name: str) -> OptimizerInfo:
    """The registry entry for ``name``; ``ValueError`` naming the choices if there is none."""
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown optimizer: {name!r} (choose from {', '.join(list_optimizers())})") from None


def create_optimizer(
    name: str, params_or_model: nn.Module | Iterable[Any], **hyperparameters: Any
) -> torch.optim.Optimizer:
    """Build a registered optimizer.

    Given a model, 1-D parameters and biases go to a group without weight decay or trust ratio
    (:func:`~tvlars.optim.param_groups`); given parameters or groups, they are used as they are.

    >>> from torch import nn
    >>> opt = create_optimizer("tvlars", nn.Linear(4, 2), lr=2.0, lam=1e-4)
    >>> type(opt).__name__, opt.defaults["lam"]
    ('TVLARS', 0.0001)
    """
    info = get_optimizer_info(name)
    accepted = info.hyperparameters
    unknown = sorted(set(hyperparameters) - set(accepted))
    if unknown:
        raise ValueError(
            f"Invalid hyperparameter for {info.name}: {', '.join(unknown)} (accepts {', '.join(accepted)})"
        )
    kwargs = {**info.defaults, **hyperparameters}
    if isinstance(params_or_model, nn.Module):
        weight_decay = kwargs.get(
            "weight_decay", inspect.signature(info.cls.__init__).parameters["weight_decay"].default
        )
        groups = param_groups(params_or_model, weight_decay, exclude_1d=kwargs.get("exclude_1d", True))
        if not info.layerwise:
            groups = [{k: v for k, v in g.items() if k != "adapt"} for g in groups]
        params: Any = [g for g in groups if g["params"]]
    else:
        params = params_or_model
    return info.cls(params, **kwargs)
