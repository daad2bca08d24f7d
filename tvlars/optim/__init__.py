"""Layer-wise optimizers for large-batch training: TVLARS and the paper's baselines LARS and LAMB.

Every optimizer a trial may name is one :class:`OptimizerSpec` in :data:`OPTIMIZERS`: the built-ins below register
themselves with :func:`register_optimizer`, an installed distribution through the entry-point group
``tvlars.optimizers`` (``docs/optimizers.md``).
"""

from . import _torch  # noqa: E402,F401,I001  (registers sgd and adamw)
from ._factory import create_optimizer, get_optimizer_info, list_optimizers
from ._param_groups import param_groups
from ._phi import phi
from ._spec import (
    LOW,
    LR_SCALINGS,
    LR_SCHEDULES,
    OPTIMIZERS,
    Hyperparameter,
    OptimizerSpec,
    SearchRange,
    Training,
    get_optimizer,
    interpolate,
    register_optimizer,
    round_sig,
)
from .lamb import LAMB
from .lars import LARS
from .tvlars import TVLARS

__all__ = [
    "LAMB",
    "LARS",
    "LOW",
    "LR_SCALINGS",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "TVLARS",
    "Hyperparameter",
    "OptimizerSpec",
    "SearchRange",
    "Training",
    "create_optimizer",
    "get_optimizer",
    "get_optimizer_info",
    "interpolate",
    "list_optimizers",
    "param_groups",
    "phi",
    "register_optimizer",
    "round_sig",
]
