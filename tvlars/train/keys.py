"""The sections of a trial config: each a dataclass of keys with their defaults (:mod:`.config` composes them).

A module of its own, importing nothing of the package, so that the task registry can read a task's keys' defaults
without importing the config module that checks a trial against that registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SECTIONS", "BarlowTwinsKeys", "OptimizerKeys", "RuntimeKeys", "ScheduleKeys", "WorkloadKeys", "defaults"]


@dataclass
class WorkloadKeys:
    """What is trained, on what data, for how long."""

    task: str = "classification"
    dataset: str = "mnist1d"
    dataset_options: dict[str, Any] = field(default_factory=dict)  # the dataset loader's keyword options
    data_dir: str | None = None
    model: str = "mlp"
    model_options: dict[str, Any] = field(default_factory=dict)  # the model builder's keyword options
    stem: str | None = None  # the ResNets' stem option (cifar | imagenet); None: the model's default
    batch_size: int = 512
    epochs: int = 10
    val_fraction: float = 0.1  # stratified hold-out of the training split (0: none, no val metrics)
    split_seed: int = 0  # chooses the validation rows; shared by every trial of a study (not the trial's seed)
    drop_last: bool = False  # False: the last partial batch is a step, as the official loader does
    augment: bool | None = None  # None: on for uint8 images (crop + flip), off otherwise
    rotation: float = 0.0  # the official code adds ±15° rotations


@dataclass
class OptimizerKeys:
    """The optimizer and its hyperparameters.

    Its trial keys (``lr``, ``lam``, ``lam_steps``, ``momentum``, ...) are the optimizer's declaration's
    (:class:`tvlars.optim.OptimizerSpec`; ``GET /v1/workloads`` lists them): a flat config gives them beside the other
    keys, and ``hyperparameters`` holds the ones given. ``cfg.lr`` reads a key, given or its declared default.
    """

    optimizer: str = "tvlars"
    hyperparameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScheduleKeys:
    """The LR schedule around the optimizer; ``None``: the optimizer declaration's recipe."""

    warmup_epochs: float | None = None  # None: 20 % of epochs for lars_warmup, none otherwise
    lr_scaling: str | None = None  # none | linear_256 (lr · batch / 256); None: linear_256 for lars_warmup
    lr_schedule: str | None = None  # constant | warmup_cosine; None: warmup_cosine for lars_warmup or warm-up > 0


@dataclass
class RuntimeKeys:
    """Where and how the trial runs: none of these changes what is optimised, only how."""

    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    channels_last: bool | None = None  # None: on CUDA for images
    micro_batch_size: int | None = None  # gradient accumulation for memory; BatchNorm then sees micro-batches
    ddp_devices: int = 1  # split each batch into this many equal shares with their own BN statistics (official: 4)
    eval_batch_size: int = 4096
    num_threads: int | None = None
    nan_check_every: int = 1  # CUDA: steps between (non-blocking) divergence checks
    checkpoint_every: int = 1  # epochs between trial states handed to run()'s save_state (0: never)


@dataclass
class BarlowTwinsKeys:
    """The Barlow Twins task's own keys (``task: barlow_twins``)."""

    projector_dims: list[int] | None = None  # None: 4096-4096-4096 on ResNets (official), 512-512-512 otherwise
    bt_lambda: float = 0.005
    probe_epochs: int | None = None  # None: 100 on CUDA (official), 20 on CPU
    probe_lr: float = 0.3  # official: SGD lr 0.3, momentum 0.9, cosine
    probe_weight_decay: float = 5e-4
    probe_batch_size: int = 256
    probe_augment: bool | None = None  # train the probe on augmented images; None: on CUDA for images (official)


#: The sections of a trial config, in the order ``python -m tvlars.train --help`` lists them.
SECTIONS: Mapping[str, type] = {
    "workload": WorkloadKeys,
    "optimizer": OptimizerKeys,
    "schedule": ScheduleKeys,
    "runtime": RuntimeKeys,
    "barlow_twins task": BarlowTwinsKeys,
}


def defaults() -> dict[str, Any]:
    """Every section's keys with a plain default, and that default (a mutable one, made by a factory, is left out)."""
    out: dict[str, Any] = {}
    for keys in SECTIONS.values():
        for f in dataclasses.fields(keys):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
    return out
