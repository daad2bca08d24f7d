"""LARS: layer-wise adaptive rate scaling (You et al., 2017), in the Barlow Twins form the paper compares with."""

from __future__ import annotations

from torch import Tensor

from . import _keys, _paper
from ._base import LayerwiseOptimizer, _with_shared_docs, check, check_common
from ._functional import lars_update
from ._spec import OptimizerSpec, register_optimizer

__all__ = ["LARS"]


def lars_defaults(
    lr: float,
    momentum: float,
    weight_decay: float,
    eta: float,
    norm_clip: float | None,
    exclude_1d: bool,
    foreach: bool | None,
    fused: bool | None,
) -> dict:
    """Check LARS's arguments and return its ``defaults`` dict (TVLARS adds φ's knobs to it)."""
    check_common(lr, weight_decay, norm_clip)
    check("momentum", momentum, isinstance(momentum, int | float) and 0.0 <= momentum < 1.0)
    check("eta", eta, isinstance(eta, int | float) and eta > 0.0)
    return dict(
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        eta=eta,
        norm_clip=norm_clip,
        exclude_1d=exclude_1d,
        foreach=foreach,
        fused=fused,
    )


@_with_shared_docs
class LARS(LayerwiseOptimizer):
    r"""Implements LARS with momentum, as in Barlow Twins and the TVLARS paper's baseline.

    .. math::
        \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \mu \text{ (momentum)}, \omega \text{ (weight decay)},
                \eta \text{ (trust coefficient)}, \theta_0 \text{ (params)}, b_0 = 0 \\
            &\textbf{for } t = 1, 2, \ldots \textbf{ do} \\
            &\quad d_t = g_t + \omega \theta_{t-1} \\
            &\quad q_t = \eta \, s_t \, \lVert\theta_{t-1}\rVert / \lVert d_t\rVert
                \quad (q_t = 1 \text{ if either norm is } 0) \\
            &\quad b_t = \mu b_{t-1} + q_t d_t \\
            &\quad \theta_t = \theta_{t-1} - \gamma b_t \\
            &\textbf{return } \theta_t
        \end{aligned}

    per tensor, with :math:`s_t = 1` (:class:`~tvlars.TVLARS` sets :math:`s_t = \phi(t)`). Tensors excluded from
    adaptation (1-D tensors when ``exclude_1d``, every tensor of a group with ``adapt=False``) take plain momentum
    SGD: :math:`d_t = g_t`, :math:`q_t = 1`.

    Args:
        params (iterable): parameters or dicts defining parameter groups
        lr (float): learning rate :math:`\gamma`
        momentum (float, optional): momentum factor :math:`\mu` (default: 0.9)
        weight_decay (float, optional): L2 penalty :math:`\omega`, added to the gradient (default: 5e-4)
        eta (float, optional): trust coefficient :math:`\eta` (default: 1e-3)
        norm_clip (float, optional): clamp both norms to at most this; the official TVLARS code uses 10
            (default: None)
        exclude_1d (bool, optional): 1-D tensors (biases, norm layers) get neither weight decay nor a trust
            ratio, as the official code's two filters (default: True)
        {_foreach_doc}
        {_fused_doc}

    After each step ``last_trust_ratio`` holds the mean applied :math:`q_t` over adapted tensors, as a 0-d tensor
    on the device (read it rarely: reading it syncs).

    Reference: Y. You, I. Gitman, B. Ginsburg, "Large Batch Training of Convolutional Networks", arXiv:1708.03888.

    >>> import torch
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = LARS(model.parameters(), lr=0.1)
    >>> model(torch.randn(8, 4)).sum().backward()
    >>> opt.step()
    """

    _STATE_KEYS = ("momentum_buffer",)

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        eta: float = 1e-3,
        norm_clip: float | None = None,
        exclude_1d: bool = True,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        super().__init__(params, lars_defaults(lr, momentum, weight_decay, eta, norm_clip, exclude_1d, foreach, fused))

    def _trust_scale(self, group: dict) -> float:
        """:math:`s_t`, the multiplier on the trust ratio at the group's current step (1 for LARS)."""
        return 1.0

    def step_readings(self) -> tuple[float | None, Tensor | None]:
        """φ at the latest step (1 for LARS; TVLARS: :meth:`~tvlars.TVLARS.current_phi`) and the mean trust ratio."""
        return 1.0, self.last_trust_ratio

    def _update(self, group, params, grads, adapt, states, *, foreach: bool, fused: bool) -> Tensor | None:
        (bufs,) = states
        return lars_update(
            params,
            grads,
            bufs,
            adapt,
            foreach=foreach,
            fused=fused,
            lr=group["lr"],
            momentum=group["momentum"],
            weight_decay=group["weight_decay"],
            eta=group["eta"],
            scale=self._trust_scale(group),
            norm_clip=group["norm_clip"],
        )


# -- declarations: plain LARS (the paper's 'non-warm' baseline) and LARS with the paper's warm-up recipe ------------

_LARS_KEYS = (_keys.LR, _keys.ETA, _keys.WEIGHT_DECAY, _keys.MOMENTUM, _keys.NORM_CLIP, _keys.EXCLUDE_1D, _keys.FUSED)
_LARS_OFFICIAL = {"weight_decay": 5e-4, "momentum": 0.9, "eta": 1e-3, "exclude_1d": True}

register_optimizer(
    "lars",
    OptimizerSpec(
        LARS,
        _LARS_KEYS,
        "LARS, Barlow Twins form",
        references={bs: {"lr": grid} for bs, grid in _paper.TVLARS_LR.items()},  # 'non-warm' sweeps TVLARS's grid
        official=_LARS_OFFICIAL,
        layerwise=True,
        has_momentum=True,
    ),
)
register_optimizer(
    "lars_warmup",
    OptimizerSpec(
        LARS,
        _LARS_KEYS,
        "LARS with the paper's recipe: lr x batch/256, 20 % linear warm-up, then cosine",
        lr_scaling="linear_256",
        warmup_fraction=0.2,  # the paper warms up for 20 of its 100 epochs
        lr_schedule="warmup_cosine",
        references={bs: {"lr": grid} for bs, grid in _paper.LARS_WARMUP_LR.items()},
        official=_LARS_OFFICIAL,
        layerwise=True,
        has_momentum=True,
    ),
)
