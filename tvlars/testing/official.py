"""The official TVLARS and LAMB steps, as the paper's code (github.com/KhoiDOO/tvlars) computes them.

A plain per-layer loop with the official code's norms (``pow(2).sum().sqrt().clamp(0, 10)``), its 1-D filters, its
``t = step_cnt + 1`` and its host reads of the ratio (``.item()``, kept: the official code logs every ratio). Tests
check our optimizers against it; ``benchmarks/optimizer_step.py`` times it as the per-layer baseline.
"""

from __future__ import annotations

import math

import torch


class OfficialTVLARS:
    def __init__(self, params, lr, weight_decay=5e-4, momentum=0.9, eta=1e-3, lmbda=1e-3):
        self.params = [p for p in params]
        self.lr, self.wd, self.momentum, self.eta, self.lmbda = lr, weight_decay, momentum, eta, lmbda
        self.mu = {}
        self.step_cnt = 0
        self.ratio_log, self.weight_log, self.gradient_log = [], [], []

    @torch.no_grad()
    def step(self):
        ratios, weights, gradients = [], [], []
        for p in self.params:
            if p.grad is None:
                continue
            dp = p.grad
            if p.ndim != 1:  # weight_decay_filter and lars_adaptation_filter both on
                dp = dp.add(p, alpha=self.wd)
                param_norm = p.pow(2).sum().sqrt().clamp(0, 10)
                update_norm = dp.pow(2).sum().sqrt().clamp(0, 10)
                one = torch.ones_like(param_norm)
                # the official code builds phi from a one-element tensor each layer (a FloatTensor there; the
                # parameter's dtype here, so float64 runs compare exactly)
                t = torch.tensor([self.step_cnt + 1], dtype=p.dtype)
                ratio = self.eta * torch.pow(0.1 + torch.exp(self.lmbda * t)[0], -1) * param_norm / update_norm
                q = torch.where(param_norm > 0.0, torch.where(update_norm > 0.0, ratio, one), one)
                dp = dp.mul(q)
                ratios.append(ratio.item())  # the official code logs all three, every layer, every step
                weights.append(param_norm.item())
                gradients.append(update_norm.item())
            if p not in self.mu:
                self.mu[p] = torch.zeros_like(p)
            self.mu[p].mul_(self.momentum).add_(dp)
            p.add_(self.mu[p], alpha=-self.lr)
        self.ratio_log.append(ratios)
        self.weight_log.append(weights)
        self.gradient_log.append(gradients)
        self.step_cnt += 1


class OfficialLARS:
    """facebookresearch/barlowtwins' LARS as the official repository ships it, both 1-D filters on (no norm clamp).

    ``lr`` is a list, so the warm-up recipe can set it before each step as the official ``adjust_learning_rate``.
    """

    def __init__(self, params, lr, weight_decay=5e-4, momentum=0.9, eta=1e-3):
        self.params = [p for p in params]
        self.lr, self.wd, self.momentum, self.eta = lr, weight_decay, momentum, eta
        self.mu = {}

    @torch.no_grad()
    def step(self):
        for p in self.params:
            dp = p.grad
            if dp is None:
                continue
            if p.ndim != 1:
                dp = dp.add(p, alpha=self.wd)
                param_norm, update_norm = torch.norm(p), torch.norm(dp)
                one = torch.ones_like(param_norm)
                ratio = self.eta * param_norm / update_norm
                dp = dp.mul(torch.where(param_norm > 0.0, torch.where(update_norm > 0, ratio, one), one))
            if p not in self.mu:
                self.mu[p] = torch.zeros_like(p)
            self.mu[p].mul_(self.momentum).add_(dp)
            p.add_(self.mu[p], alpha=-self.lr)


def official_warmup_lr(lr, batch_size, step, steps_per_epoch, epochs, warmup_epochs=20):
    """scheduler/lars_warmup.py's ``adjust_learning_rate``: the LR of the 0-based ``step``."""
    max_steps = epochs * steps_per_epoch
    warmup_steps = warmup_epochs * steps_per_epoch
    base_lr = batch_size / 256
    if step < warmup_steps:
        factor = base_lr * step / warmup_steps
    else:
        step -= warmup_steps
        max_steps -= warmup_steps
        q = 0.5 * (1 + math.cos(math.pi * step / max_steps))
        factor = base_lr * q + base_lr * 0.001 * (1 - q)
    return factor * lr


class OfficialLAMB:
    """cybertronai/pytorch-lamb as the official repository ships it: no bias correction, ‖w‖ clamped to 10.

    ``adam=True`` is its Adam mode (trust ratio 1, weight decay kept), which the official Barlow Twins runs use.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, adam=False):
        self.params = [p for p in params]
        self.lr, self.betas, self.eps, self.wd, self.adam = lr, betas, eps, weight_decay, adam
        self.state = {}

    @torch.no_grad()
    def step(self):
        for p in self.params:
            if p.grad is None:
                continue
            g = p.grad
            if p not in self.state:
                self.state[p] = (torch.zeros_like(p), torch.zeros_like(p))
            m, v = self.state[p]
            b1, b2 = self.betas
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            weight_norm = p.pow(2).sum().sqrt().clamp(0, 10)
            adam_step = m / v.sqrt().add(self.eps)
            if self.wd != 0:
                adam_step.add_(p, alpha=self.wd)
            adam_norm = adam_step.pow(2).sum().sqrt()
            trust = 1.0 if weight_norm == 0 or adam_norm == 0 or self.adam else weight_norm / adam_norm
            p.add_(adam_step, alpha=-self.lr * float(trust))
