"""Update kernels shared by the optimizers.

Each update has a single-tensor path that reads like the paper (the ground truth the tests compare against), a
multi-tensor (``torch._foreach_*``) path grouped by device and dtype, and a fused path, which is the single-tensor path
compiled by ``torch.compile`` (Inductor fuses each layer's norms and elementwise work into one or two loops).

No kernel reads a tensor value on the host: trust ratios stay tensors, zero norms are guarded with ``torch.where``,
and every branch is on a Python value. Each returns the mean trust ratio over the adapted tensors as a 0-d tensor
(``None`` when none is adapted), so callers can log it without a sync per step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__: list[str] = []


def _guarded_ratio(numerator: Tensor, w_norm: Tensor, u_norm: Tensor) -> Tensor:
    # The official code's rule: a ratio of 1 when either norm is zero (a fresh zero-initialised layer, a zero grad).
    return torch.where((w_norm > 0) & (u_norm > 0), numerator / u_norm, torch.ones_like(w_norm))


def _add_scaled_(x: Tensor, y: Tensor, alpha: float) -> None:
    """``x += alpha * y`` in place. Compiled code keeps ``alpha`` out of ``alpha=`` (torch.compile would specialise
    on it and recompile for every new learning rate); eager code uses ``alpha=`` to avoid a temporary."""
    if torch.compiler.is_compiling():
        x.add_(y * alpha)
    else:
        x.add_(y, alpha=alpha)


def _stack_mean(ratios: list[Tensor]) -> Tensor | None:
    return torch.stack(ratios).mean() if ratios else None


def _lars_single_tensor(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    bufs: Sequence[Tensor],
    adapt: Sequence[bool],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    eta: float,
    scale: float,
    norm_clip: float | None,
) -> Tensor | None:
    ratios = []
    for p, g, buf, adapted in zip(params, grads, bufs, adapt, strict=True):
        buf.mul_(momentum)
        if adapted:
            d = g.add(p, alpha=weight_decay) if weight_decay != 0 else g
            w_norm = torch.linalg.vector_norm(p)
            d_norm = torch.linalg.vector_norm(d)
            if norm_clip is not None:
                w_norm = w_norm.clamp(max=norm_clip)
                d_norm = d_norm.clamp(max=norm_clip)
            ratio = _guarded_ratio((eta * scale) * w_norm, w_norm, d_norm)
            ratios.append(ratio)
            buf.addcmul_(d, ratio)
        else:
            buf.add_(g)
        _add_scaled_(p, buf, -lr)
    return _stack_mean(ratios)


def _lars_foreach(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    bufs: Sequence[Tensor],
    adapt: Sequence[bool],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    eta: float,
    scale: float,
    norm_clip: float | None,
) -> Tensor | None:
    ratio_sum, n_adapted = None, 0
    for (adapted, plain), _ in _split_buckets([params, grads, bufs], adapt):
        if plain[0]:
            p_params, p_grads, p_bufs = plain
            torch._foreach_mul_(p_bufs, momentum)
            torch._foreach_add_(p_bufs, p_grads)
            torch._foreach_add_(p_params, p_bufs, alpha=-lr)
        if adapted[0]:
            a_params, a_grads, a_bufs = adapted
            d = torch._foreach_add(a_grads, a_params, alpha=weight_decay)
            w_norm = torch.stack(torch._foreach_norm(a_params))
            d_norm = torch.stack(torch._foreach_norm(d))
            if norm_clip is not None:
                w_norm = w_norm.clamp(max=norm_clip)
                d_norm = d_norm.clamp(max=norm_clip)
            ratio = _guarded_ratio((eta * scale) * w_norm, w_norm, d_norm)
            torch._foreach_mul_(a_bufs, momentum)
            torch._foreach_addcmul_(a_bufs, d, list(ratio.unbind()))
            torch._foreach_add_(a_params, a_bufs, alpha=-lr)
            s = ratio.sum()
            ratio_sum = s if ratio_sum is None else ratio_sum + s.to(ratio_sum.device)
            n_adapted += ratio.numel()
    return None if ratio_sum is None else ratio_sum / n_adapted


def _lamb_single_tensor(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    adapt: Sequence[bool],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias_correction1: float,
    bias_correction2: float,
    norm_clip: float | None,
    trust_ratio: bool = True,
) -> Tensor | None:
    ratios = []
    for p, g, m, v, adapted in zip(params, grads, exp_avgs, exp_avg_sqs, adapt, strict=True):
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v / bias_correction2).sqrt_().add_(eps)
        update = (m / bias_correction1).div_(denom)
        if adapted:
            if weight_decay != 0:
                update.add_(p, alpha=weight_decay)
            w_norm = torch.linalg.vector_norm(p)
            if norm_clip is not None:
                w_norm = w_norm.clamp(max=norm_clip)
            ratio = _guarded_ratio(w_norm, w_norm, torch.linalg.vector_norm(update))
            if not trust_ratio:
                ratio = torch.ones_like(ratio)
            ratios.append(ratio)
            update.mul_(ratio)
        _add_scaled_(p, update, -lr)
    return _stack_mean(ratios)


def _lamb_foreach(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    adapt: Sequence[bool],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias_correction1: float,
    bias_correction2: float,
    norm_clip: float | None,
    trust_ratio: bool = True,
) -> Tensor | None:
    ratio_sum, n_adapted = None, 0
    for buckets, _ in _split_buckets([params, grads, exp_avgs, exp_avg_sqs], adapt):
        for is_adapted, (b_params, b_grads, b_m, b_v) in zip((True, False), buckets, strict=True):
            if not b_params:
                continue
            torch._foreach_lerp_(b_m, b_grads, 1 - beta1)
            torch._foreach_mul_(b_v, beta2)
            torch._foreach_addcmul_(b_v, b_grads, b_grads, value=1 - beta2)
            denom = torch._foreach_div(b_v, bias_correction2)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, eps)
            update = torch._foreach_div(b_m, bias_correction1)
            torch._foreach_div_(update, denom)
            if not is_adapted:
                torch._foreach_add_(b_params, update, alpha=-lr)
                continue
            if weight_decay != 0:
                torch._foreach_add_(update, b_params, alpha=weight_decay)
            w_norm = torch.stack(torch._foreach_norm(b_params))
            if norm_clip is not None:
                w_norm = w_norm.clamp(max=norm_clip)
            ratio = _guarded_ratio(w_norm, w_norm, torch.stack(torch._foreach_norm(update)))
            if not trust_ratio:
                ratio = torch.ones_like(ratio)
            torch._foreach_mul_(update, list(ratio.unbind()))
            torch._foreach_add_(b_params, update, alpha=-lr)
            s = ratio.sum()
            ratio_sum = s if ratio_sum is None else ratio_sum + s.to(ratio_sum.device)
            n_adapted += ratio.numel()
    return None if ratio_sum is None else ratio_sum / n_adapted


def _split_buckets(tensorlists: list[Sequence[Tensor]], adapt: Sequence[bool]):
    """Group parallel tensor lists by (device, dtype), then split each group into adapted and plain tensors.

    Yields ``((adapted_lists, plain_lists), (device, dtype))`` with each ``*_lists`` parallel to ``tensorlists``.
    """
    grouped = Optimizer._group_tensors_by_device_and_dtype([list(t) for t in tensorlists], with_indices=True)
    for key, (lists, indices) in grouped.items():
        adapted = [[t for t, i in zip(tl, indices, strict=True) if adapt[i]] for tl in lists]
        plain = [[t for t, i in zip(tl, indices, strict=True) if not adapt[i]] for tl in lists]
        yield (adapted, plain), key


@functools.cache
def _compiled(fn: Callable) -> Callable:
    # Compiled lazily and once per process; Inductor caches the generated code on disk across processes.
    return torch.compile(fn)


def _fused_by_bucket(fn: Callable, tensorlists: list[Sequence[Tensor]], adapt: Sequence[bool], **hp) -> Tensor | None:
    compiled = _compiled(fn)
    grouped = Optimizer._group_tensors_by_device_and_dtype([list(t) for t in tensorlists], with_indices=True)
    means, counts = [], []
    for lists, indices in grouped.values():
        bucket_adapt = [adapt[i] for i in indices]
        mean = compiled(*lists, bucket_adapt, **hp)
        if mean is not None:
            means.append(mean)
            counts.append(sum(bucket_adapt))
    if not means:
        return None
    if len(means) == 1:
        return means[0]
    device = means[0].device
    return sum(m.to(device) * c for m, c in zip(means, counts, strict=True)) / sum(counts)


def lars_update(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    bufs: Sequence[Tensor],
    adapt: Sequence[bool],
    *,
    foreach: bool,
    fused: bool,
    **hp,
) -> Tensor | None:
    """One LARS/TVLARS step over parallel lists; ``hp['scale']`` is φ(t) for TVLARS and 1 for LARS."""
    if not params:
        return None
    if fused:
        return _fused_by_bucket(_lars_single_tensor, [params, grads, bufs], adapt, **hp)
    kernel = _lars_foreach if foreach else _lars_single_tensor
    return kernel(params, grads, bufs, adapt, **hp)


def lamb_update(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    adapt: Sequence[bool],
    *,
    foreach: bool,
    fused: bool,
    **hp,
) -> Tensor | None:
    """One LAMB step over parallel lists."""
    if not params:
        return None
    if fused:
        return _fused_by_bucket(_lamb_single_tensor, [params, grads, exp_avgs, exp_avg_sqs], adapt, **hp)
    kernel = _lamb_foreach if foreach else _lamb_single_tensor
    return kernel(params, grads, exp_avgs, exp_avg_sqs, adapt, **hp)
