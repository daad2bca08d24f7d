"""A trial's configuration: :class:`TrialConfig`, its checks, and the optimizer and LR schedule it names.

The keys come in sections (the workload, the optimizer's hyperparameters, the LR schedule, the runtime, the Barlow
Twins task's own), and a trial config is one flat dict of them. A key given for a trial that nothing in it reads
(``lam`` with ``optimizer: lars``, ``probe_lr`` for classification, an option the dataset's loader lacks) is an
error naming the key and what takes it, never dropped silently: see :func:`dead_keys`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data import DATASETS
from ..models import MODELS
from ..optim import LR_SCALINGS, LR_SCHEDULES, OPTIMIZERS, OptimizerSpec, create_optimizer, get_optimizer
from ..schedules import WarmupCosine
from .keys import SECTIONS, BarlowTwinsKeys, OptimizerKeys, RuntimeKeys, ScheduleKeys, WorkloadKeys
from .task_registry import TASKS

__all__ = [
    "OPTIMIZERS",
    "SECTIONS",
    "BarlowTwinsKeys",
    "OptimizerKeys",
    "RuntimeKeys",
    "ScheduleKeys",
    "TrialConfig",
    "WorkloadKeys",
    "build_optimizer",
    "dead_keys",
    "resolve_device",
    "trial_keys",
]

_PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrialConfig(BarlowTwinsKeys, RuntimeKeys, ScheduleKeys, OptimizerKeys, WorkloadKeys):
    """Everything one trial needs, flat: the keys of every section. ``from_dict`` checks names and values."""

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TrialConfig:
        names = trial_keys()
        unknown = sorted(set(config) - set(names))
        if unknown:
            raise ValueError(f"Unknown trial config key(s): {', '.join(unknown)} (valid: {', '.join(sorted(names))})")
        dead = dead_keys(config)
        if dead:
            raise ValueError("; ".join(f"{key}: {why}" for key, why in dead.items()))
        fields = _field_names()
        cfg = cls(
            **{k: v for k, v in config.items() if k in fields},
            hyperparameters={k: v for k, v in config.items() if k not in fields},
        )
        cfg.validate()
        return cfg

    def __getattr__(self, name: str) -> Any:
        # only called for names that are not fields: an optimizer key, given or its declared default
        if name.startswith("_") or name in ("hyperparameters", "optimizer"):
            raise AttributeError(name)
        spec = _spec_or_none(self.optimizer)
        if spec is not None and name in spec.keys:
            return self.hyperparameters.get(name, spec.defaults[name])
        raise AttributeError(f"{type(self).__name__!r} has no key {name!r}")

    def optimizer_spec(self) -> OptimizerSpec:
        """The declaration of the optimizer this trial names."""
        return get_optimizer(self.optimizer)

    def validate(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"Invalid {name}: {getattr(self, name)!r} ({rule})")

        TASKS.get(self.task)  # not installed here, or a broken plugin: a clear error
        need(self.optimizer in OPTIMIZERS, "optimizer", f"choose from {', '.join(OPTIMIZERS)}")
        spec = self.optimizer_spec()  # a broken plugin: its error
        need(isinstance(self.hyperparameters, dict), "hyperparameters", "a mapping of the optimizer's keys")
        unknown = sorted(set(self.hyperparameters) - set(spec.keys))
        if unknown:
            raise ValueError(f"Invalid {', '.join(unknown)}: optimizer {self.optimizer!r} does not take it")
        spec.check(self.hyperparameters)  # each key's declared type and bounds
        need(isinstance(self.dataset_options, dict), "dataset_options", "a mapping of option names to values")
        need(isinstance(self.model_options, dict), "model_options", "a mapping of option names to values")
        DATASETS.check_options(self.dataset, self.dataset_options)
        MODELS.check_options(self.model, self.model_build_options())
        need(self.precision in _PRECISIONS, "precision", f"choose from {', '.join(_PRECISIONS)}")
        need(self.lr_scaling in (None, *LR_SCALINGS), "lr_scaling", f"choose from {', '.join(LR_SCALINGS)}")
        need(self.lr_schedule in (None, *LR_SCHEDULES), "lr_schedule", f"choose from {', '.join(LR_SCHEDULES)}")
        need(_positive_int(self.ddp_devices), "ddp_devices", "a positive integer")
        need(isinstance(self.drop_last, bool), "drop_last", "true or false")
        need(
            isinstance(self.val_fraction, int | float) and 0 <= self.val_fraction < 0.5,
            "val_fraction",
            "a number in [0, 0.5)",
        )
        need(_positive_int(self.batch_size), "batch_size", "a positive integer")
        need(_positive_int(self.epochs), "epochs", "a positive integer")
        need(
            self.micro_batch_size is None
            or (_positive_int(self.micro_batch_size) and self.batch_size % self.micro_batch_size == 0),
            "micro_batch_size",
            "a positive divisor of batch_size",
        )
        need(self.warmup_epochs is None or 0 <= self.warmup_epochs <= self.epochs, "warmup_epochs", "0..epochs")
        need(_positive_int(self.eval_batch_size, _MAX_BATCH), "eval_batch_size", f"an integer in 1..{_MAX_BATCH}")
        need(_positive_int(self.nan_check_every), "nan_check_every", "a positive integer")
        need(
            isinstance(self.checkpoint_every, int)
            and not isinstance(self.checkpoint_every, bool)
            and self.checkpoint_every >= 0,
            "checkpoint_every",
            "an integer >= 0 (0: no checkpoints)",
        )
        need(self.num_threads is None or _positive_int(self.num_threads), "num_threads", "a positive integer")
        need(
            self.projector_dims is None or (bool(self.projector_dims) and all(map(_positive_int, self.projector_dims))),
            "projector_dims",
            "a list of positive sizes",
        )
        need(
            self.probe_epochs is None or _positive_int(self.probe_epochs, _MAX_EPOCHS),
            "probe_epochs",
            f"an integer in 1..{_MAX_EPOCHS}",
        )
        need(_positive_int(self.probe_batch_size, _MAX_BATCH), "probe_batch_size", f"an integer in 1..{_MAX_BATCH}")
        need(_seed(self.seed), "seed", f"an integer in 0..{_SEED_MAX}")
        need(_seed(self.split_seed), "split_seed", f"an integer in 0..{_SEED_MAX}")
        need(math.isfinite(self.probe_lr) and self.probe_lr > 0, "probe_lr", "a finite number > 0")
        # the optimizer's own checks (momentum, eta, lam, betas, ...), on a throwaway layer
        build_optimizer(self, nn.Linear(2, 2), steps_per_epoch=1)

    def model_build_options(self) -> dict[str, Any]:
        """The keyword options the model's builder gets: ``model_options``, plus ``stem`` when given."""
        if self.stem is None:
            return dict(self.model_options)
        if "stem" in self.model_options:
            raise ValueError("Invalid stem: given both as a key and in model_options (keep one)")
        return {**self.model_options, "stem": self.stem}


#: Upper bounds on sizes and seeds (torch and numpy take 32-bit seeds; a batch past a million rows is a typo).
_MAX_BATCH = 1_048_576
_MAX_EPOCHS = 10_000
_SEED_MAX = 2**31 - 1


def _positive_int(v: Any, high: int | None = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0 and (high is None or v <= high)


def _seed(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= _SEED_MAX


def _field_names() -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(TrialConfig)) - {"hyperparameters"}


def _spec_or_none(name: str) -> OptimizerSpec | None:
    try:
        return get_optimizer(name)
    except ValueError:  # not registered, or a broken plugin: validate() says so
        return None


def _declared_keys() -> dict[str, list[str]]:
    """Every usable registered optimizer's trial keys: ``{key: [optimizers that take it]}``."""
    takers: dict[str, list[str]] = {}
    for entry in OPTIMIZERS.entries()[0]:
        for key in entry.obj.keys:
            takers.setdefault(key, []).append(entry.name)
    return takers


def trial_keys() -> list[str]:
    """Every key a trial config may have: the sections' and every registered optimizer's, sorted."""
    return sorted(_field_names() | set(_declared_keys()))


def dead_keys(config: Mapping[str, Any]) -> dict[str, str]:
    """The keys of ``config`` that this trial would not read, each with why and what does take it.

    An optimizer key whose constructor argument the chosen optimizer lacks (``lam`` for ``lars``), a task's own key
    given for another task (``probe_lr`` for classification), ``stem`` for a model without that option. Names
    that are not registered are left to :meth:`TrialConfig.validate`.

    >>> dead_keys({"optimizer": "lars", "lam": 1e-3, "lr": 2.0})
    {'lam': "optimizer 'lars' does not take it (optimizers that take it: tvlars)"}
    """
    dead: dict[str, str] = {}
    optimizer = config.get("optimizer", OptimizerKeys.optimizer)
    spec = _spec_or_none(optimizer) if isinstance(optimizer, str) else None
    if spec is not None:
        fields = _field_names()
        for key, owners in _declared_keys().items():
            if key in config and key not in spec.keys and key not in fields:
                dead[key] = f"optimizer {optimizer!r} does not take it (optimizers that take it: {', '.join(owners)})"
    task = config.get("task", WorkloadKeys.task)
    loaded = {entry.name: _task_keys(entry.obj) for entry in TASKS.loaded()}
    for key in config:
        owners = sorted(name for name, keys in loaded.items() if key in keys)
        if owners and task not in owners:
            dead[key] = f"task {task!r} does not read it (tasks that do: {', '.join(owners)})"
    model = config.get("model", WorkloadKeys.model)
    if config.get("stem") is not None and model in MODELS.names():
        try:
            takes_stem = "stem" in MODELS.get(model).options
        except ValueError:  # a broken plugin: validate() says so
            takes_stem = True
        if not takes_stem:
            owners = ", ".join(e.name for e in MODELS.loaded() if "stem" in e.options)
            dead["stem"] = f"model {model!r} has no option 'stem' (models that do: {owners})"
    return dead


def _task_keys(task: Any) -> tuple[str, ...]:
    return tuple(getattr(task, "keys", ()))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Invalid device: {name!r} (CUDA is not available here)")
    return device


def build_optimizer(
    cfg: TrialConfig, model: nn.Module, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, WarmupCosine | None]:
    """The optimizer a config names and its LR schedule, if any, both as its declaration says.

    The declaration converts each trial key to its constructor argument (``lam_steps`` → ``lam`` for this trial's
    total steps, ``epochs × steps_per_epoch``) and gives the recipe's defaults: the LR scaling rule (``linear_256``:
    ``lr · batch / 256``), warm-up epochs and schedule, which a trial's ``lr_scaling``, ``warmup_epochs`` and
    ``lr_schedule`` override. ``warmup_cosine``: linear warm-up, then cosine to 0.001×.
    """
    spec = cfg.optimizer_spec()
    training = spec.training(cfg.batch_size, cfg.epochs, steps_per_epoch, cfg.lr_scaling)
    opt = create_optimizer(cfg.optimizer, model, **spec.arguments(cfg.hyperparameters, training))
    warmup = spec.warmup_epochs(cfg.warmup_epochs, cfg.epochs)
    scheduled = spec.schedule(cfg.lr_schedule, warmup) == "warmup_cosine"
    sched = WarmupCosine(opt, round(warmup * steps_per_epoch), training.total_steps) if scheduled else None
    return opt, sched
