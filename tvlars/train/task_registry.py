"""The task registry, apart from the task protocol: the trial config checks a task's name and keys against
``TASKS``, and the protocol (:mod:`.tasks`) names the trial, which is built from that config — kept in one module,
they were an import cycle (config → tasks → trial → config)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..registry import Registry
from .keys import defaults

__all__ = ["TASKS", "task_options"]


def task_options(task: Any) -> Mapping[str, Any]:
    """A task's options as listed: its own trial config keys with their defaults."""
    given = defaults()
    return {key: given.get(key) for key in getattr(task, "keys", ())}


#: Every task by name: the built-ins and the ``tvlars.tasks`` entry points of installed distributions.
TASKS = Registry("task", "tvlars.tasks", options=task_options)
