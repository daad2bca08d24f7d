"""One trial: train a model with the optimizer under test and report per epoch (:func:`run`).

The package: :mod:`~tvlars.train.keys` and :mod:`~tvlars.train.config` (the trial config in sections, its checks,
the optimizer it names), :mod:`~tvlars.train.metrics` (what a trial reports, by name: :class:`Metric`),
:mod:`~tvlars.train.trial` (the data on the device, what every task starts from), :mod:`~tvlars.train.loop` (the
epoch loop and :func:`run`) with :mod:`~tvlars.train.rows` (each epoch's row) and :mod:`~tvlars.train.state` (the
trial's whole state, saved and restored), and :mod:`~tvlars.train.tasks` (the :class:`~tvlars.train.tasks.Task`
protocol and one module per task). The command line is ``python -m tvlars.train key=value ...``
(:mod:`~tvlars.train.__main__`).
"""

from .config import OPTIMIZERS, TrialConfig, build_optimizer, dead_keys, resolve_device
from .loop import run
from .metrics import CURVES, SUMMARIES, Metric
from .state import STATE_VERSION, SaveState
from .tasks import TASKS, Task, Training, create_task, register_task
from .tasks import barlow_twins as _barlow_twins  # noqa: F401  (registers the built-in task)
from .tasks import classification as _classification  # noqa: F401  (registers the built-in task)
from .trial import Trial

__all__ = [
    "CURVES",
    "OPTIMIZERS",
    "STATE_VERSION",
    "SUMMARIES",
    "TASKS",
    "Metric",
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
