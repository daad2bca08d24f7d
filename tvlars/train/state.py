"""A trial's whole state, as ``run`` hands it to ``save_state`` and takes it back: :func:`snapshot` and
:func:`restore`.

The layout (version :data:`STATE_VERSION`): ``version``, ``epoch`` (the last epoch it covers), ``model``,
``optimizer`` and ``scheduler`` state dicts, ``rng`` (every random stream, so the data order too), ``trackers``
(the best-so-far numbers, the divergence watch's step count, the wall seconds so far) and ``history`` (the rows
reported so far). Tensors, ints, floats, strings and lists only: ``torch.load(weights_only=True)`` reads it back.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..schedules import WarmupCosine
from .rows import Best
from .tasks import Training
from .trial import Trial

__all__ = ["STATE_VERSION", "Restored", "SaveState", "restore", "snapshot"]

#: The layout of the trial state ``run`` saves and restores; a state of another version is refused.
STATE_VERSION = 1
#: ``save_state(epoch, state)``: called with the trial's whole state every ``checkpoint_every`` epochs.
SaveState = Callable[[int, dict[str, Any]], None]


@dataclass
class Restored:
    """Where a restored trial carries on: its next epoch, its trackers and the rows it had reported."""

    first_epoch: int = 1
    best: Best = field(default_factory=Best)
    watch_step: int = 0  # the divergence watch's step count
    wall_seconds: float = 0.0  # wall seconds of the epochs it had already run
    history: list[dict[str, Any]] = field(default_factory=list)


def snapshot(
    trial: Trial,
    training: Training,
    epoch: int,
    best: Best,
    watch_step: int,
    wall_seconds: float,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """The trial's whole state after ``epoch`` (its tensors are the live ones: serialise it before training on)."""
    sched = training.scheduler
    return {
        "version": STATE_VERSION,
        "epoch": epoch,
        "model": training.model.state_dict(),
        "optimizer": training.optimizer.state_dict(),
        "scheduler": sched.state_dict() if sched is not None else None,
        "rng": _rng_state(trial),
        "trackers": {
            "best": best.test,
            "best_val": best.val,
            "test_at_best_val": best.test_at_val,
            "watch_step": watch_step,
            "wall_seconds": wall_seconds,
        },
        "history": [dict(r) for r in history],
    }


def restore(trial: Trial, training: Training, state: dict[str, Any]) -> Restored:
    """Load a :func:`snapshot` into a freshly prepared trial (model, optimizer, schedule, every random stream) and
    return where it carries on. Hyperparameters come from this run's config, not from the state."""
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"Invalid state: version {state.get('version')!r} (this trainer reads {STATE_VERSION})")
    training.model.load_state_dict(state["model"])
    _load_optimizer_state(training.optimizer, training.scheduler, state["optimizer"], state.get("scheduler"))
    _set_rng_state(trial, state["rng"])
    tracked = state["trackers"]
    return Restored(
        first_epoch=state["epoch"] + 1,
        best=Best(tracked["best"], tracked["best_val"], tracked["test_at_best_val"]),
        watch_step=tracked["watch_step"],
        wall_seconds=tracked["wall_seconds"],
        history=[dict(r) for r in state["history"]],
    )


def _rng_state(trial: Trial) -> dict[str, Any]:
    """Every random stream a trial draws from, as tensors and ints (``torch.load(weights_only=True)`` reads it)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "generator": trial.generator.get_state(),  # the data order and the augmentations
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "gauss": [has_gauss, gauss],
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(trial: Trial, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    trial.generator.set_state(state["generator"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], *n["gauss"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _load_optimizer_state(
    opt: torch.optim.Optimizer, sched: WarmupCosine | None, saved_opt: dict[str, Any], saved_sched: dict | None
) -> None:
    """Restore buffers, step counts and the schedule's position, with hyperparameters from this run's config.

    The config's values win over the saved ones (lr, λ, momentum, ...): the same config gives back exactly the
    saved values, and a population-based-training member that cloned another's state trains on with its own
    hyperparameters.
    """
    fresh = [{k: v for k, v in g.items() if k not in ("params", "step")} for g in opt.param_groups]
    opt.load_state_dict(saved_opt)
    for group, hyper in zip(opt.param_groups, fresh, strict=True):
        group.update(hyper)
    if sched is not None and saved_sched is not None:
        sched.restore(saved_sched)
