"""The TVLARS time-varying multiplier φ(t)."""

from __future__ import annotations

import math
from typing import overload

import numpy as np
import torch
from torch import Tensor

__all__ = ["phi"]

# exp(x) overflows a float64 past ~709.78; beyond this the first term of φ is 0 to double precision.
_MAX_EXPONENT = 700.0


@overload
def phi(t: float, lam: float, delay: float = ..., alpha: float = ..., gamma_min: float = ...) -> float: ...
@overload
def phi(t: Tensor, lam: float, delay: float = ..., alpha: float = ..., gamma_min: float = ...) -> Tensor: ...
@overload
def phi(t: np.ndarray, lam: float, delay: float = ..., alpha: float = ..., gamma_min: float = ...) -> np.ndarray: ...


def phi(t, lam, delay=0.0, alpha=1.0, gamma_min=0.0):
    r"""TVLARS's multiplier on the trust ratio (Do et al., IEEE TAI 2024, eq. for :math:`\phi`).

    .. math::
        \phi(t) = \frac{1}{\alpha + \exp(\lambda (t - d_e))} + \gamma_{min}

    It starts near :math:`1/\alpha + \gamma_{min}` (for :math:`\lambda d_e \gg 1`), holds for about
    :math:`d_e` steps, then decays at rate :math:`\lambda` towards the floor :math:`\gamma_{min}`.

    Args:
        t (float, Tensor or ndarray): the 1-based step count.
        lam (float): decay rate :math:`\lambda`.
        delay (float, optional): delay :math:`d_e` in steps (default: 0)
        alpha (float, optional): :math:`\alpha`; the official code uses 0.1 (default: 1.0)
        gamma_min (float, optional): the floor :math:`\gamma_{min}` (default: 0.0)

    Returns the same kind as ``t``: a float for a number, a tensor for a tensor, an array for an array.

    >>> round(phi(1, lam=1e-3, alpha=0.1), 4)  # the official code's first step
    0.9083
    """
    if isinstance(t, Tensor):
        return 1.0 / (alpha + torch.exp(lam * (t - delay))) + gamma_min
    if isinstance(t, np.ndarray | list | tuple):
        x = np.minimum(lam * (np.asarray(t, dtype=np.float64) - delay), _MAX_EXPONENT)
        return 1.0 / (alpha + np.exp(x)) + gamma_min
    x = lam * (t - delay)
    if x > _MAX_EXPONENT:
        return float(gamma_min)
    return 1.0 / (alpha + math.exp(x)) + gamma_min
