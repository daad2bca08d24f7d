"""One trial: train a model with the optimizer under test and report per epoch (:func:`run`).

The package: :mod:`~tvlars.train.config` (the trial config in sections, its checks, the optimizer it names),
:mod:`~tvlars.train.loop` (data on the device, the epoch loop, instrumentation, checkpoints, :func:`run`) and
:mod:`~tvlars.train.tasks` (the :class:`~tvlars.train.tasks.Task` protocol and one module per task). The command
line is ``python -m tvlars.train key=value ...`` (:mod:`~tvlars.train.__main__`).
"""

from .config import OPTIMIZERS, TrialConfig, build_optimizer, dead_keys, resolve_device
from .loop import STATE_VERSION, SaveState, Trial, run
from .tasks import TASKS, Task, Training, create_task, register_task
from .tasks import barlow_twins as _barlow_twins  # noqa: F401  (registers the built-in task)
from .tasks import classification as _classification  # noqa: F401  (registers the built-in task)

__all__ = [
    "OPTIMIZERS",
    "STATE_VERSION",
    "TASKS",
    "SaveState",
    "Task",
    "Training",
    "Trial",
    "TrialConfig",
    "build_optimizer",
    "create_task",
    "dead_keys",
    "register_task",
    "resolve_device",
    "run",
]
