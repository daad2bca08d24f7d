"""LAMB: layer-wise adaptive moments (You et al., 2020), the TVLARS paper's second baseline."""

from __future__ import annotations

from torch import Tensor

from . import _keys, _paper
from ._base import LayerwiseOptimizer, _with_shared_docs, check, check_common
from ._functional import lamb_update
from ._spec import Hyperparameter, OptimizerSpec, register_optimizer

__all__ = ["LAMB"]


@_with_shared_docs
class LAMB(LayerwiseOptimizer):
    r"""Implements LAMB.

    .. math::
        \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \beta_1, \beta_2, \epsilon, \omega \text{ (weight decay)},
                \theta_0, m_0 = 0, v_0 = 0 \\
            &\textbf{for } t = 1, 2, \ldots \textbf{ do} \\
            &\quad m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
            &\quad v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
            &\quad \hat m_t = m_t / (1 - \beta_1^t), \ \hat v_t = v_t / (1 - \beta_2^t)
                \quad \text{(only with bias\_correction)} \\
            &\quad u_t = \hat m_t / (\sqrt{\hat v_t} + \epsilon) + \omega \theta_{t-1} \\
            &\quad r_t = \lVert\theta_{t-1}\rVert / \lVert u_t\rVert
                \quad (r_t = 1 \text{ if either norm is } 0) \\
            &\quad \theta_t = \theta_{t-1} - \gamma r_t u_t \\
            &\textbf{return } \theta_t
        \end{aligned}

    per tensor. Tensors excluded from adaptation (1-D tensors when ``exclude_1d``, a group with ``adapt=False``)
    take the Adam step :math:`u_t` without weight decay and with :math:`r_t = 1`.

    Args:
        params (iterable): parameters or dicts defining parameter groups
        lr (float): learning rate :math:`\gamma`
        betas (Tuple[float, float], optional): :math:`(\beta_1, \beta_2)` (default: (0.9, 0.999))
        eps (float, optional): :math:`\epsilon` (default: 1e-6)
        weight_decay (float, optional): decoupled weight decay :math:`\omega`, added to the Adam step (default: 0)
        bias_correction (bool, optional): debias the moments; the paper v3 and the official code do not
            (default: True)
        norm_clip (float, optional): clamp :math:`\lVert\theta\rVert` to at most this; the official code uses 10
            (default: None)
        exclude_1d (bool, optional): 1-D tensors get neither weight decay nor a trust ratio (default: True)
        adam (bool, optional): the "adam" mode of cybertronai/pytorch-lamb, which the official Barlow Twins runs
            use: :math:`r_t = 1` for every tensor, weight decay kept (default: False)
        {_foreach_doc}
        {_fused_doc}

    .. note::
        ``LAMB(params, lr, bias_correction=False, norm_clip=10, exclude_1d=False)`` reproduces the official
        TVLARS repository's LAMB (from cybertronai/pytorch-lamb).

    Reference: Y. You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes", ICLR 2020.

    >>> import torch
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = LAMB(model.parameters(), lr=1e-2, weight_decay=0.01)
    >>> model(torch.randn(8, 4)).sum().backward()
    >>> opt.step()
    """

    _LATER_DEFAULTS = {**LayerwiseOptimizer._LATER_DEFAULTS, "bias_correction": True, "adam": False}
    _STATE_KEYS = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        bias_correction: bool = True,
        norm_clip: float | None = None,
        exclude_1d: bool = True,
        adam: bool = False,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check_common(lr, weight_decay, norm_clip)
        check("betas", betas, isinstance(betas, tuple | list) and len(betas) == 2)
        check("beta parameter at index 0", betas[0], 0.0 <= betas[0] < 1.0)
        check("beta parameter at index 1", betas[1], 0.0 <= betas[1] < 1.0)
        check("epsilon value", eps, isinstance(eps, int | float) and eps >= 0.0)
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            bias_correction=bias_correction,
            norm_clip=norm_clip,
            exclude_1d=exclude_1d,
            adam=bool(adam),
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _update(self, group, params, grads, adapt, states, *, foreach: bool, fused: bool) -> Tensor | None:
        exp_avgs, exp_avg_sqs = states
        beta1, beta2 = group["betas"]
        t = group["step"]
        return lamb_update(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            adapt,
            foreach=foreach,
            fused=fused,
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            bias_correction1=1.0 - beta1**t if group["bias_correction"] else 1.0,
            bias_correction2=1.0 - beta2**t if group["bias_correction"] else 1.0,
            norm_clip=group["norm_clip"],
            trust_ratio=not group["adam"],
        )


# -- declaration ------------------------------------------------------------------------------------------------------

register_optimizer(
    "lamb",
    OptimizerSpec(
        LAMB,
        (
            _keys.LR,
            _keys.WEIGHT_DECAY,
            _keys.BETA1,
            _keys.BETA2,
            _keys.NORM_CLIP,
            _keys.EXCLUDE_1D,
            Hyperparameter("bias_correction", bool, True, help="Adam's bias correction (the official LAMB has none)"),
            Hyperparameter(
                "trust_ratio",
                bool,
                True,
                argument="adam",
                convert=lambda v, *_: not v,
                help="false: Adam mode, no trust ratio (pytorch-lamb's adam, official Barlow Twins)",
            ),
            _keys.FUSED,
        ),
        "LAMB (You et al., 2020)",
        references={bs: {"lr": grid} for bs, grid in _paper.LAMB_LR.items()},
        official={"weight_decay": 5e-4, "bias_correction": False, "norm_clip": 10.0, "exclude_1d": False},
        layerwise=True,
        has_betas=True,
    ),
)
