"""The table of optimizer cases that drives tests/unit/tvlars/optim, in the spirit of torch's OptimizerInfo."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tvlars import LAMB, LARS, TVLARS


@dataclass(frozen=True)
class OptimInput:
    kwargs: dict[str, Any]
    desc: str
    fused: bool = False  # also check the compiled path on this input (each compile costs seconds)


@dataclass(frozen=True)
class ErrorInput:
    kwargs: dict[str, Any]
    error: type[Exception]
    match: str
    desc: str


@dataclass(frozen=True)
class OptimCase:
    cls: type[torch.optim.Optimizer]
    inputs: list[OptimInput]
    error_inputs: list[ErrorInput] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.cls.__name__


def _common_errors(lr_required: bool) -> list[ErrorInput]:
    base = {"lr": 1.0}
    return [
        ErrorInput({**base, "lr": -1.0}, ValueError, r"Invalid learning rate: -1\.0", "negative lr"),
        ErrorInput({**base, "lr": float("nan")}, ValueError, r"Invalid learning rate: nan", "nan lr"),
        ErrorInput({**base, "weight_decay": -1e-4}, ValueError, r"Invalid weight_decay: -0\.0001", "negative wd"),
        ErrorInput({**base, "norm_clip": 0.0}, ValueError, r"Invalid norm_clip: 0\.0", "zero clip"),
        ErrorInput({**base, "foreach": True, "fused": True}, ValueError, r"Invalid foreach: True", "foreach+fused"),
    ]


_LARS_ERRORS = [
    ErrorInput({"lr": 1.0, "momentum": 1.0}, ValueError, r"Invalid momentum: 1\.0", "momentum 1"),
    ErrorInput({"lr": 1.0, "momentum": -0.1}, ValueError, r"Invalid momentum: -0\.1", "negative momentum"),
    ErrorInput({"lr": 1.0, "eta": 0.0}, ValueError, r"Invalid eta: 0\.0", "zero eta"),
]

CASES = [
    OptimCase(
        TVLARS,
        inputs=[
            OptimInput({"lr": 20.0}, "default", fused=True),
            OptimInput({"lr": 20.0, "alpha": 0.1, "norm_clip": 10.0}, "official", fused=True),
            OptimInput({"lr": 20.0, "lam": 0.1, "delay": 5, "gamma_min": 0.1}, "delay and floor"),
            OptimInput({"lr": 2.0, "eta": 1e-2, "momentum": 0.0, "weight_decay": 0.0}, "no momentum, no wd"),
            OptimInput({"lr": 20.0, "exclude_1d": False, "eta": 2e-3}, "adapt 1-d too"),
        ],
        error_inputs=_common_errors(False)
        + _LARS_ERRORS
        + [
            ErrorInput({"lam": -1.0}, ValueError, r"Invalid lam: -1\.0", "negative lam"),
            ErrorInput({"delay": -3}, ValueError, r"Invalid delay: -3", "negative delay"),
            ErrorInput({"alpha": -0.5}, ValueError, r"Invalid alpha: -0\.5", "negative alpha"),
            ErrorInput({"gamma_min": -0.1}, ValueError, r"Invalid gamma_min: -0\.1", "negative floor"),
        ],
    ),
    OptimCase(
        LARS,
        inputs=[
            OptimInput({"lr": 20.0}, "default", fused=True),
            OptimInput({"lr": 20.0, "norm_clip": 10.0}, "clipped"),
            OptimInput({"lr": 20.0, "exclude_1d": False}, "adapt 1-d too"),
        ],
        error_inputs=_common_errors(True) + _LARS_ERRORS,
    ),
    OptimCase(
        LAMB,
        inputs=[
            OptimInput({"lr": 0.02}, "default", fused=True),
            OptimInput({"lr": 0.02, "weight_decay": 0.01}, "weight decay"),
            OptimInput({"lr": 0.02, "bias_correction": False, "norm_clip": 10.0, "exclude_1d": False}, "official"),
        ],
        error_inputs=_common_errors(True)
        + [
            ErrorInput({"lr": 1.0, "betas": (1.0, 0.999)}, ValueError, r"beta parameter at index 0: 1\.0", "b1=1"),
            ErrorInput({"lr": 1.0, "betas": (0.9, -0.1)}, ValueError, r"beta parameter at index 1: -0\.1", "b2<0"),
            ErrorInput({"lr": 1.0, "eps": -1.0}, ValueError, r"Invalid epsilon value: -1\.0", "negative eps"),
        ],
    ),
]

ALL_INPUTS = [(case, inp) for case in CASES for inp in case.inputs]
ALL_ERRORS = [(case, err) for case in CASES for err in case.error_inputs]


def case_id(value: Any) -> str:
    if isinstance(value, OptimCase):
        return value.name
    return value.desc.replace(" ", "-")


class TinyNet(nn.Module):
    """A conv net with BatchNorm plus the awkward parameters: zero-size, never used (None grad), frozen."""

    def __init__(self, big_weight: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)  # a bias before BN has a pure-rounding-noise grad
        self.bn = nn.BatchNorm2d(4)
        self.frozen = nn.Linear(64, 32)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(32, 5)
        self.empty = nn.Parameter(torch.zeros(0, 3))
        self.unused = nn.Parameter(torch.ones(7))
        if big_weight:
            with torch.no_grad():
                self.head.weight.mul_(80.0)  # a layer whose norm exceeds the official clamp of 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x))).flatten(1)
        return self.head(torch.relu(self.frozen(h))) + self.empty.sum()


def batches(n_steps: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, 3, 6, 6, generator=g, dtype=dtype), torch.randint(0, 5, (16,), generator=g))
        for _ in range(n_steps)
    ]


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, data) -> list[float]:
    losses = []
    for x, y in data:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def run_case(case: OptimCase, inp: OptimInput, impl: dict[str, Any], *, device: str = "cpu", n_steps: int = 6):
    """``(model, optimizer)`` after ``n_steps`` float64 steps of TinyNet on ``device`` with ``impl`` (foreach/fused)."""
    torch.manual_seed(0)
    model = TinyNet().double().to(device)
    opt = case.cls(model.parameters(), **inp.kwargs, **impl)
    data = [(x.to(device), y.to(device)) for x, y in batches(n_steps, torch.float64)]
    train_steps(model, opt, data)
    return model, opt


def step_together(pairs: tuple[tuple[nn.Module, Any], ...], x: torch.Tensor, y: torch.Tensor) -> None:
    """One training step of each ``(model, optimizer)`` on the same batch (cross-entropy)."""
    for model, opt in pairs:
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def assert_same_parameters(reference: nn.Module, model: nn.Module, rtol: float, atol: float) -> None:
    """Every parameter of ``model`` close to ``reference``'s, named after the reference's on failure."""
    for (name, a), b in zip(reference.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=rtol, atol=atol, msg=name)
