"""Trial keys several optimizers share, each declared once (an optimizer's declaration lists the ones it takes)."""

from __future__ import annotations

from typing import Annotated

from ..registry import Bounds
from ._spec import Hyperparameter

__all__ = ["BETA1", "BETA2", "ETA", "EXCLUDE_1D", "FUSED", "LR", "MOMENTUM", "NORM_CLIP", "WEIGHT_DECAY"]

#: The trial's LR; the declaration's LR scaling rule applies to it (``Training.lr``).
LR = Hyperparameter(
    "lr", Annotated[float, Bounds(ge=0)], 1.0, help="learning rate (a base LR per 256 under linear_256)"
)
MOMENTUM = Hyperparameter("momentum", Annotated[float, Bounds(ge=0)], 0.9, help="momentum factor")
WEIGHT_DECAY = Hyperparameter("weight_decay", Annotated[float, Bounds(ge=0)], 5e-4, help="weight decay")
ETA = Hyperparameter("eta", Annotated[float, Bounds(ge=0)], 1e-3, help="trust coefficient η")
NORM_CLIP = Hyperparameter(
    "norm_clip", Annotated[float | None, Bounds(gt=0)], None, help="clamp both norms to at most this"
)
EXCLUDE_1D = Hyperparameter("exclude_1d", bool, True, help="1-D tensors get no weight decay or trust ratio")
BETA1 = Hyperparameter(
    "beta1",
    Annotated[float, Bounds(ge=0, lt=1)],
    0.9,
    argument="betas",
    convert=lambda v, values, _: (v, values["beta2"]),
    help="first moment decay (betas[0])",
)
BETA2 = Hyperparameter(
    "beta2",
    Annotated[float, Bounds(ge=0, lt=1)],
    0.999,
    argument="betas",
    convert=lambda v, values, _: (values["beta1"], v),
    help="second moment decay (betas[1])",
)
#: ``fused_optimizer: true``: the step as one compiled kernel (the constructor's ``fused``; False passes None).
FUSED = Hyperparameter(
    "fused_optimizer", bool, False, argument="fused", convert=lambda v, *_: v or None, help="compile the step"
)
