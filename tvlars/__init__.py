"""tvlars: TVLARS, its baselines, and the workloads of the TVLARS paper. Needs only torch and numpy.

Workloads are registries: ``register_dataset(name, load)``, ``register_model(name, build)`` (and
``tvlars.train.register_task``) in code, or the entry-point groups ``tvlars.datasets``, ``tvlars.models`` and
``tvlars.tasks`` of an installed distribution (``docs/workloads.md``); so are optimizers
(``register_optimizer(name, spec)``, group ``tvlars.optimizers``: ``docs/optimizers.md``).
"""

from .data import register_dataset
from .models import register_model
from .optim import LAMB, LARS, TVLARS, create_optimizer, param_groups, phi, register_optimizer

__all__ = [
    "LAMB",
    "LARS",
    "TVLARS",
    "create_optimizer",
    "param_groups",
    "phi",
    "register_dataset",
    "register_model",
    "register_optimizer",
]
__version__ = "0.1.0"
