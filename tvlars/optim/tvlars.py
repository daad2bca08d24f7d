"""TVLARS: LARS with a time-varying multiplier on the trust ratio in place of warm-up (Do et al., IEEE TAI 2024)."""

from __future__ import annotations

from typing import Annotated

from torch import Tensor

from ..registry import Bounds
from . import _keys, _paper
from ._base import LayerwiseOptimizer, _with_shared_docs, check
from ._phi import phi
from ._spec import (
    LOW,
    Hyperparameter,
    OptimizerSpec,
    SearchRange,
    geometric_mean,
    interpolate,
    register_optimizer,
    round_sig,
)
from .lars import LARS, lars_defaults

__all__ = ["TVLARS"]


@_with_shared_docs
class TVLARS(LARS):
    r"""Implements Time-Varying LARS.

    .. math::
        \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \mu \text{ (momentum)}, \omega \text{ (weight decay)},
                \eta \text{ (trust coefficient)}, \lambda, d_e, \alpha, \gamma_{min}, \theta_0, b_0 = 0 \\
            &\textbf{for } t = 1, 2, \ldots \textbf{ do} \\
            &\quad \phi(t) = 1 / (\alpha + \exp(\lambda (t - d_e))) + \gamma_{min} \\
            &\quad d_t = g_t + \omega \theta_{t-1} \\
            &\quad q_t = \eta \, \phi(t) \, \lVert\theta_{t-1}\rVert / \lVert d_t\rVert
                \quad (q_t = 1 \text{ if either norm is } 0) \\
            &\quad b_t = \mu b_{t-1} + q_t d_t \\
            &\quad \theta_t = \theta_{t-1} - \gamma b_t \\
            &\textbf{return } \theta_t
        \end{aligned}

    per tensor. :math:`\phi` starts near :math:`1/\alpha + \gamma_{min}`, holds for about :math:`d_e` steps, then
    decays at rate :math:`\lambda` to :math:`\gamma_{min}`: a large trust ratio early explores sharp regions, as
    warm-up does not. ``t`` is the 1-based count of steps the group has taken; it is kept in the group (``step``)
    and saved by :meth:`state_dict`. Tensors excluded from adaptation take plain momentum SGD, as in
    :class:`~tvlars.LARS`.

    Args:
        params (iterable): parameters or dicts defining parameter groups
        lr (float, optional): learning rate :math:`\gamma` (default: 1.0)
        momentum (float, optional): momentum factor :math:`\mu` (default: 0.9)
        weight_decay (float, optional): L2 penalty :math:`\omega`, added to the gradient (default: 5e-4)
        eta (float, optional): trust coefficient :math:`\eta` (default: 1e-3)
        lam (float, optional): decay rate :math:`\lambda` of :math:`\phi` (default: 1e-3)
        delay (float, optional): delay :math:`d_e` of :math:`\phi`, in steps (default: 0)
        alpha (float, optional): :math:`\alpha` of :math:`\phi` (default: 1.0)
        gamma_min (float, optional): floor :math:`\gamma_{min}` of :math:`\phi` (default: 0.0)
        norm_clip (float, optional): clamp both norms to at most this (default: None)
        exclude_1d (bool, optional): 1-D tensors get neither weight decay nor a trust ratio (default: True)
        {_foreach_doc}
        {_fused_doc}

    .. note::
        ``TVLARS(params, lr, alpha=0.1, delay=0, gamma_min=0, norm_clip=10)`` reproduces the official code
        (KhoiDOO/tvlars, ``opt/tvlars.py``): there ``t`` starts at 1, both norms are clamped to [0, 10] and 1-D
        tensors skip weight decay and adaptation (``exclude_1d=True``). With ``lam=0, alpha=0, gamma_min=0``,
        :math:`\phi \equiv 1` and TVLARS is :class:`~tvlars.LARS`.

    Reference: K.-D. Do et al., "Revisiting LARS for Large Batch Training Generalization of Neural Networks",
    IEEE Transactions on Artificial Intelligence, 2024 (arXiv:2309.14053).

    >>> import torch
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = TVLARS(model.parameters(), lr=2.0, lam=1e-3, delay=100)
    >>> model(torch.randn(8, 4)).sum().backward()
    >>> opt.step()
    """

    _LATER_DEFAULTS = {**LARS._LATER_DEFAULTS, "gamma_min": 0.0}

    def __init__(
        self,
        params,
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        eta: float = 1e-3,
        lam: float = 1e-3,
        delay: float = 0,
        alpha: float = 1.0,
        gamma_min: float = 0.0,
        norm_clip: float | None = None,
        exclude_1d: bool = True,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        check("lam", lam, isinstance(lam, int | float) and lam >= 0.0)
        check("delay", delay, isinstance(delay, int | float) and delay >= 0)
        check("alpha", alpha, isinstance(alpha, int | float) and alpha >= 0.0)
        check("gamma_min", gamma_min, isinstance(gamma_min, int | float) and gamma_min >= 0.0)
        defaults = lars_defaults(lr, momentum, weight_decay, eta, norm_clip, exclude_1d, foreach, fused)
        defaults.update(lam=lam, delay=delay, alpha=alpha, gamma_min=gamma_min)
        LayerwiseOptimizer.__init__(self, params, defaults)

    def _trust_scale(self, group: dict) -> float:
        return phi(group["step"], group["lam"], group["delay"], group["alpha"], group["gamma_min"])

    def current_phi(self, group_index: int = 0) -> float:
        """φ at the last step taken by a group (at t = 1 before any step): a Python float, no sync."""
        group = self.param_groups[group_index]
        return phi(max(group["step"], 1), group["lam"], group["delay"], group["alpha"], group["gamma_min"])

    def step_readings(self) -> tuple[float | None, Tensor | None]:
        return self.current_phi(-1), self.last_trust_ratio


# -- declaration ------------------------------------------------------------------------------------------------------


def _official_schedule(batch_size: int) -> dict[str, float]:
    """The paper's λ in units of training (λ × its total steps at that batch size), and no delay (the official code)."""
    lam_steps = {bs: round_sig(geometric_mean(lams) * _paper.paper_steps(bs)) for bs, lams in _paper.TVLARS_LAM.items()}
    return {"lam_steps": interpolate(lam_steps, batch_size), "delay_fraction": 0.0, "delay_epochs": 0}


register_optimizer(
    "tvlars",
    OptimizerSpec(
        TVLARS,
        (
            _keys.LR,
            Hyperparameter("lam", Annotated[float, Bounds(ge=0)], 1e-3, help="decay rate λ of φ"),
            # φ in units of training: one range is one family of φ curves over training at every batch size
            Hyperparameter(
                "lam_steps",
                Annotated[float | None, Bounds(ge=0)],
                None,
                argument="lam",
                convert=lambda v, _, training: v / training.total_steps,
                instead_of="lam",
                search=SearchRange(0.05, 50.0, log=True),  # 0.05: φ falls 4 % over training; 50: at its floor by 10 %
                help="λ × the trial's total optimizer steps",
            ),
            Hyperparameter(
                "delay_epochs",
                Annotated[float, Bounds(ge=0)],
                0.0,
                argument="delay",
                convert=lambda v, _, training: v * training.steps_per_epoch,
                help="delay d_e of φ, in epochs",
            ),
            Hyperparameter(
                "delay_fraction",
                Annotated[float | None, Bounds(ge=0, le=1)],
                None,
                argument="delay",
                convert=lambda v, _, training: v * training.total_steps,
                instead_of="delay_epochs",
                search=SearchRange(0.0, 0.5),
                help="d_e as a fraction of the trial's total optimizer steps",
            ),
            Hyperparameter("alpha", Annotated[float, Bounds(ge=0)], 1.0, help="α of φ (φ starts near 1/α)"),
            Hyperparameter("gamma_min", Annotated[float, Bounds(ge=0)], 0.0, help="floor γ_min of φ"),
            _keys.ETA,
            _keys.WEIGHT_DECAY,
            _keys.MOMENTUM,
            _keys.NORM_CLIP,
            _keys.EXCLUDE_1D,
            _keys.FUSED,
        ),
        "Time-varying LARS (Do et al., 2024)",
        references={bs: {"lr": _paper.TVLARS_LR[bs], "lam": _paper.TVLARS_LAM[bs]} for bs in _paper.BATCH_SIZES},
        official={
            "weight_decay": 5e-4,
            "momentum": 0.9,
            "eta": 1e-3,
            "alpha": 0.1,
            "gamma_min": 0.0,
            "norm_clip": 10.0,
            "exclude_1d": True,
        },
        derived_references=_official_schedule,
        # λ → 0: φ stays at 1/(α + 1), so TVLARS trains as LARS at lr/(α + 1): its space contains LARS's
        contains={"lars": {"lam_steps": LOW, "lam": LOW}},
        step_factor=lambda steps, a: phi(
            steps, lam=a["lam"], delay=a["delay"], alpha=a["alpha"], gamma_min=a["gamma_min"]
        ),
        layerwise=True,
        has_momentum=True,
    ),
)
