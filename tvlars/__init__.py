"""tvlars: TVLARS, its baselines, and the workloads of the TVLARS paper. Needs only torch and numpy."""

from .optim import LAMB, LARS, TVLARS, create_optimizer, param_groups, phi

__all__ = ["LAMB", "LARS", "TVLARS", "create_optimizer", "param_groups", "phi"]
__version__ = "0.1.0"
