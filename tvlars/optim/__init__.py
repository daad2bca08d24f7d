"""Layer-wise optimizers for large-batch training: TVLARS and the paper's baselines LARS and LAMB."""

from ._factory import (
    RECIPES,
    OptimizerInfo,
    Recipe,
    create_optimizer,
    get_optimizer_info,
    get_recipe,
    list_optimizers,
    trainable_optimizers,
)
from ._param_groups import param_groups
from ._phi import phi
from .lamb import LAMB
from .lars import LARS
from .tvlars import TVLARS

__all__ = [
    "LAMB",
    "RECIPES",
    "LARS",
    "TVLARS",
    "OptimizerInfo",
    "Recipe",
    "create_optimizer",
    "get_optimizer_info",
    "get_recipe",
    "list_optimizers",
    "param_groups",
    "phi",
    "trainable_optimizers",
]
