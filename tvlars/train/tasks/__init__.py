"""Training tasks: what a trial trains its model to do, behind one small protocol, registered like datasets.

A task turns a prepared :class:`~tvlars.train.trial.Trial` (data on the device, loaders, the config) into a
:class:`Training`: the model, the optimizer and LR schedule (from ``trial.build_optimizer``), one optimizer step,
and the per-epoch evaluation. The loop does the rest (epochs, instrumentation, divergence, checkpoints, reports).
Built in: ``classification`` and ``barlow_twins``; an installed distribution adds one with an entry point in
group ``tvlars.tasks`` (``NAME = "pkg.module:MyTask"``), or code with :func:`register_task`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from ..task_registry import TASKS, task_options

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from ...pipeline import DeviceLoader
    from ...schedules import WarmupCosine
    from ..trial import Trial

__all__ = ["TASKS", "Task", "Training", "register_task", "task_options"]


@dataclass
class Training:
    """What a task hands the loop.

    ``train_step(xb, yb)`` takes one optimizer step on a raw batch from ``loader`` and returns its loss as a 0-d
    device tensor (no host read). ``evaluate(epoch)`` returns ``test_acc`` (a 0-d tensor or float) and optionally
    ``test_loss``, ``val_acc``, ``val_loss`` (tensors are fetched in the epoch's one device→host transfer) and any
    extra keys to report as they are.
    """

    model: nn.Module
    loader: DeviceLoader
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosine | None
    train_step: Callable[[Tensor, Tensor], Tensor]
    evaluate: Callable[[int], dict[str, Any]]


@runtime_checkable
class Task(Protocol):
    """One kind of training. ``keys``: the trial config keys only this task reads (another task given them fails)."""

    keys: ClassVar[tuple[str, ...]]

    def prepare(self, trial: Trial) -> Training: ...


def register_task(name: str, task: type[Task] | Task) -> None:
    """Make ``task`` (a :class:`Task` class, constructed with no arguments, or an instance) available as ``name``."""
    TASKS.register(name, task)


def create_task(name: str) -> Task:
    """The task a trial's ``task`` names, ready to ``prepare`` a trial."""
    entry = TASKS.get(name)
    task = entry.obj() if isinstance(entry.obj, type) else entry.obj
    if not callable(getattr(task, "prepare", None)):
        raise TypeError(f"task {name!r} ({entry.source}) has no prepare(trial) method: see tvlars.train.tasks.Task")
    return task
