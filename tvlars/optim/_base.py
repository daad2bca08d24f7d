"""Pieces shared by the layer-wise optimizers: argument checks, group collection, the step counter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__: list[str] = []


def check(name: str, value: Any, ok: bool) -> None:
    """Raise ``ValueError("Invalid {name}: {value}")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"Invalid {name}: {value}")


def check_common(lr: float, weight_decay: float, norm_clip: float | None) -> None:
    check("learning rate", lr, _is_number(lr) and lr >= 0.0)
    check("weight_decay", weight_decay, _is_number(weight_decay) and weight_decay >= 0.0)
    check("norm_clip", norm_clip, norm_clip is None or (_is_number(norm_clip) and norm_clip > 0.0))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # NaN != NaN


#: Docstring fragments shared by the optimizers' ``Args:`` (as torch.optim's ``_foreach_doc`` / ``_fused_doc``).
_foreach_doc = r"""foreach (bool, optional): use the multi-tensor ``torch._foreach_*`` path; the default uses it when
            every tensor is on CUDA, as torch.optim does (default: None)"""
_fused_doc = r"""fused (bool, optional): run the step as one ``torch.compile``-d kernel per device and dtype; the first
            step compiles (seconds to tens of seconds, cached on disk), later steps are several times faster than
            the foreach path (default: None)"""


def _with_shared_docs(cls: type) -> type:
    """Fill ``{_foreach_doc}`` and ``{_fused_doc}`` in a class docstring (no ``str.format``: docstrings hold braces)."""
    cls.__doc__ = (cls.__doc__ or "").replace("{_foreach_doc}", _foreach_doc).replace("{_fused_doc}", _fused_doc)
    return cls


class LayerwiseOptimizer(Optimizer):
    """Base for optimizers that adapt each tensor's step by a trust ratio.

    Subclasses name their per-tensor state in ``_STATE_KEYS`` and define ``_update(group, params, grads, adapt,
    states, *, foreach, fused)``, which applies one step to a group's tensors and returns the mean trust ratio over
    the adapted ones (or None); ``step()`` here does the rest.

    Holds what LARS, TVLARS and LAMB share: the group options ``exclude_1d`` and ``adapt`` (which tensors get
    weight decay and a trust ratio), the group's step count ``step`` (a Python int, so reading it never syncs),
    implementation switches, and :attr:`last_trust_ratio`.
    """

    #: Group key holding ``(mean trust ratio, number of adapted tensors)`` of the group's latest step. It lives in
    #: the group, not on the optimizer, because ``torch.compile(opt.step)`` drops attribute writes on optimizers;
    #: ``state_dict()`` leaves it out.
    _TRUST_RATIO_KEY = "trust_ratio"

    #: Group options added after the first release, with the value an older checkpoint implies.
    _LATER_DEFAULTS: dict[str, Any] = {"exclude_1d": True, "adapt": True, "step": 0, "foreach": None, "fused": None}

    def __init__(self, params, defaults: dict[str, Any]) -> None:
        defaults = {"adapt": True, "step": 0, **defaults}
        super().__init__(params, defaults)
        self.register_state_dict_post_hook(_drop_trust_ratio)
        for group in self.param_groups:
            if group["fused"] and group["foreach"]:
                raise ValueError("Invalid foreach: True (foreach and fused cannot both be True)")

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self._LATER_DEFAULTS.items():
                group.setdefault(key, value)

    @staticmethod
    def _adapted(group: dict[str, Any], p: Tensor) -> bool:
        """Whether ``p`` gets weight decay and a trust ratio (the official code's two 1-D filters, together)."""
        return bool(group["adapt"]) and not (group["exclude_1d"] and p.ndim <= 1)

    @staticmethod
    def _implementation(group: dict[str, Any], params: list[Tensor]) -> tuple[bool, bool]:
        """``(foreach, fused)`` for this group.

        Fused only on request (its first step compiles). Otherwise, as torch.optim decides: the multi-tensor path
        when every tensor is on CUDA (fewer kernel launches), else the per-tensor loop, which on CPU keeps each
        layer in cache between its ops and measures faster than the foreach path.
        """
        fused = bool(group["fused"])
        foreach = group["foreach"]
        if foreach is None:
            foreach = not fused and bool(params) and all(p.is_cuda for p in params)
        return bool(foreach), fused

    #: The per-tensor state buffers, in the order ``_init_group`` fills its ``state_lists``.
    _STATE_KEYS: tuple[str, ...] = ()

    def _init_group(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], adapt: list[bool], *state_lists
    ) -> bool:
        """Collect the group's tensors that have grads into the given lists; create their state lazily.

        Fills the lists in place and returns a constant, as torch's optimizers do: ``torch.compile`` runs this
        method eagerly rather than tracing it, which it only allows for that shape.
        """
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            params.append(p)
            grads.append(p.grad)
            adapt.append(self._adapted(group, p))
            state = self.state[p]
            for key, out in zip(self._STATE_KEYS, state_lists, strict=True):
                if key not in state:
                    state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                out.append(state[key])
        return False

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): a closure that reevaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            adapt: list[bool] = []
            states: tuple[list[Tensor], ...] = tuple([] for _ in self._STATE_KEYS)
            self._init_group(group, params, grads, adapt, *states)
            group["step"] += 1
            foreach, fused = self._implementation(group, params)
            mean = self._update(group, params, grads, adapt, states, foreach=foreach, fused=fused)
            group[self._TRUST_RATIO_KEY] = None if mean is None else (mean, sum(adapt))
        return loss

    @property
    def last_trust_ratio(self) -> Tensor | None:
        """The mean trust ratio applied at the latest step over adapted tensors: a 0-d tensor on the device.

        ``None`` before the first step or when no tensor is adapted. Reading its value syncs: do it when you log
        (say once per epoch), not every step.
        """
        entries = [g[self._TRUST_RATIO_KEY] for g in self.param_groups if g.get(self._TRUST_RATIO_KEY)]
        if not entries:
            return None
        device = entries[0][0].device
        return sum(mean.to(device) * n for mean, n in entries) / sum(n for _, n in entries)

    def step_readings(self) -> tuple[float | None, Tensor | None]:
        """What a trainer logs after a step: the multiplier on the trust ratio (None: none) and
        :attr:`last_trust_ratio`. Any optimizer may offer this method; the trainer reads it when present."""
        return None, self.last_trust_ratio


def _drop_trust_ratio(optimizer: Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    for group in state_dict["param_groups"]:
        group.pop(LayerwiseOptimizer._TRUST_RATIO_KEY, None)
    return state_dict
