"""How much host memory one trial of a spec needs, estimated at submit without training or reading data.

The model is built on PyTorch's ``meta`` device (shapes only, no storage) and run once on a meta batch, counting
its parameters and, per example, the outputs of its layers with weights (convolutions, linear layers, norms: what
backward must keep). A trial holds the parameters about four times (weights, gradients, two optimizer state
buffers), one (micro-)batch's activations on the device that trains, and its dataset as float32 in host memory. A
dataset's size comes from its loader's ``shape(**options) -> (input_shape, num_classes, rows)`` (the built-ins carry
one; a plugin may): without it, nothing is estimated. Every term is a lower bound on what a trial needs, so a spec
it refuses cannot fit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["TrialMemory", "host_memory_bytes", "trial_memory"]

_FLOAT = 4
#: Copies of each parameter a trial holds: weights, gradients, and up to two optimizer buffers (LAMB's Adam moments).
_PARAM_COPIES = 4


@dataclass(frozen=True)
class TrialMemory:
    """One trial's estimated host memory and what it is made of."""

    parameters: int
    activations_per_example: int
    batch_size: int
    data_bytes: int
    #: the activations live on a GPU (not host memory)
    on_gpu: bool = False

    @property
    def total_bytes(self) -> int:
        """Host memory: parameters and data, and the batch's activations unless a GPU holds them."""
        activations = 0 if self.on_gpu else self.activations_per_example * _FLOAT * self.batch_size
        return self.parameters * _FLOAT * _PARAM_COPIES + activations + self.data_bytes

    def describe(self) -> str:
        return (
            f"about {_gib(self.total_bytes)} ({self.parameters:,} parameters; "
            f"{_gib(self.activations_per_example * _FLOAT)} of activations per example × batch size {self.batch_size}"
            f"{' (on the GPU)' if self.on_gpu else ''}; "
            f"{_gib(self.data_bytes)} of data)"
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**27 else f"{n / 2**20:.3g} MiB"


def trial_memory(config: dict[str, Any], *, on_gpu: bool = False) -> TrialMemory | None:
    """The estimate for one trial config (a ``tvlars.train`` config dict), or None when the dataset declares no
    ``shape`` or the model cannot be built on the meta device. ``on_gpu``: the trial trains on a GPU."""
    import torch

    from tvlars.data import DATASETS
    from tvlars.models import build_model

    load = DATASETS.get(config["dataset"]).obj
    shape = getattr(load, "shape", None)
    if shape is None:
        return None
    input_shape, num_classes, rows = shape(**config.get("dataset_options", {}))
    options = dict(config.get("model_options", {}))
    if config.get("stem") is not None:
        options["stem"] = config["stem"]
    outputs = 0

    def count(module: torch.nn.Module, inputs: Any, output: Any) -> None:
        nonlocal outputs
        if isinstance(output, torch.Tensor) and any(True for _ in module.parameters(recurse=False)):
            outputs += output.numel()

    try:
        with torch.device("meta"):
            model = build_model(config["model"], input_shape, num_classes, **options)
            hooks = [m.register_forward_hook(count) for m in model.modules()]
            model.train()
            model(torch.empty((2, *input_shape)))  # two examples: batch norm refuses one
            for h in hooks:
                h.remove()
    except (RuntimeError, NotImplementedError, TypeError):  # an op without a meta kernel, say: no estimate
        return None
    parameters = sum(p.numel() for p in model.parameters())
    batch = int(config.get("micro_batch_size") or config["batch_size"]) // max(1, int(config.get("ddp_devices", 1)))
    data_bytes = int(rows) * math.prod(input_shape) * _FLOAT
    return TrialMemory(parameters, outputs // 2, max(1, batch), data_bytes, on_gpu)


def host_memory_bytes() -> int | None:
    """This host's physical memory (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
