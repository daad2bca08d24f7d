"""The epoch loop every task shares: :func:`run` is one trial.

It checks the config, prepares a :class:`~tvlars.train.trial.Trial`, asks the config's task for its
:class:`~tvlars.train.tasks.Training` and trains it for the configured epochs, with one device→host transfer per
epoch. The pieces it puts together: :mod:`._instruments` (timing, divergence, the optimizer's readings),
:mod:`.rows` (best-so-far numbers and each epoch's row, keyed by :class:`~tvlars.train.metrics.Metric`) and
:mod:`.state` (the trial's whole state, saved and restored).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ._instruments import DivergenceWatch, Stopwatch, device_name, optimizer_readings
from .config import TrialConfig
from .metrics import Metric
from .rows import epoch_row, plain_keys
from .state import Restored, SaveState, restore, snapshot
from .tasks import Training, create_task
from .trial import Trial

__all__ = ["Report", "run"]

#: ``report(row)``: called once per epoch with that epoch's row.
Report = Callable[[dict[str, Any]], None]


def _epoch_loop(
    trial: Trial,
    training: Training,
    report: Report | None,
    state: dict[str, Any] | None = None,
    save_state: SaveState | None = None,
) -> dict[str, Any]:
    """Train for the configured epochs; report once per epoch with one device→host transfer.

    With ``state`` (what ``save_state`` was given at some epoch) it continues after that epoch; ``save_state``
    gets the trial's whole state every ``checkpoint_every`` epochs, just before that epoch's report.
    """
    cfg = trial.cfg
    opt, sched, loader = training.optimizer, training.scheduler, training.loader
    watch = DivergenceWatch(trial.device, cfg.nan_check_every if trial.device.type == "cuda" else 1)
    start = time.perf_counter()
    carried = restore(trial, training, state) if state is not None else Restored()
    best, history = carried.best, carried.history
    watch.step = carried.watch_step
    row: dict[str, Any] = dict(history[-1]) if history else {}
    train_clock = Stopwatch(trial.device)
    device = device_name(trial.device)

    def wall_seconds() -> float:
        return carried.wall_seconds + time.perf_counter() - start

    for epoch in range(carried.first_epoch, cfg.epochs + 1):
        epoch_start = time.perf_counter()
        train_clock.start()
        loss_sum = torch.zeros((), device=trial.device)
        steps = 0
        diverged = False
        for xb, yb in loader.raw_batches():
            loss = training.train_step(xb, yb)
            loss_sum += loss
            steps += 1
            if sched is not None:
                sched.step()
            if watch.diverged(loss):
                diverged = True
                break
        train_clock.stop()
        measured = training.evaluate(epoch)  # test_acc, test_loss (or None), val_acc / val_loss when validating, extras
        phi, ratio = optimizer_readings(opt)
        nan = torch.tensor(math.nan, device=trial.device)
        values = [loss_sum / max(steps, 1), nan if ratio is None else ratio.float()]
        tensor_keys = [k for k, v in measured.items() if isinstance(v, Tensor)]
        values += [measured[k].float() for k in tensor_keys]
        fetched = torch.stack(values).tolist()  # the epoch's one device→host transfer
        train_loss, ratio_f = fetched[:2]
        measured = {**measured, **dict(zip(tensor_keys, fetched[2:], strict=True))}
        diverged = diverged or not math.isfinite(train_loss)
        best.update(measured[Metric.TEST_ACC], measured.get(Metric.VAL_ACC))
        row = epoch_row(
            epoch,
            step=epoch * len(loader) if not diverged else (epoch - 1) * len(loader) + steps,
            train_loss=train_loss,
            measured=measured,
            best=best,
            lr=opt.param_groups[-1]["lr"],
            phi=phi,
            mean_trust_ratio=None if ratio is None else ratio_f,
            images_per_s=steps * cfg.batch_size / max(train_clock.seconds(), 1e-9),
            epoch_seconds=time.perf_counter() - epoch_start,
            diverged=diverged,
            device=device,
        )
        history.append(row)
        if save_state is not None and cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0 and not diverged:
            save_state(epoch, snapshot(trial, training, epoch, best, watch.step, wall_seconds(), history))
        if report is not None:
            report(dict(row))
        if diverged:
            break
    result = {
        **row,
        Metric.FINAL_TEST_ACC: row.get(Metric.TEST_ACC),
        Metric.EPOCHS_RUN: len(history),
        Metric.WALL_SECONDS: wall_seconds(),
        "history": history,
    }
    return plain_keys(result)


def run(
    config: dict[str, Any],
    report: Report | None = None,
    *,
    state: dict[str, Any] | None = None,
    save_state: SaveState | None = None,
) -> dict[str, Any]:
    """Run one trial and return its final metrics.

    Checkpoints: every ``checkpoint_every`` epochs (default 1; 0: never) ``save_state(epoch, state)`` is called
    just before that epoch's ``report`` with the trial's whole state (model, optimizer with its step counts, LR
    schedule, every RNG and so the data order, best-so-far trackers, history; tensors, ints, floats, strings and
    lists only, so ``torch.load(weights_only=True)`` reads it back). Serialise it before returning: its tensors
    are the live ones. ``run(config, report, state=state)`` continues at ``state["epoch"] + 1`` and reproduces
    the uninterrupted run's later epochs exactly on CPU. Hyperparameters come from ``config``, not from the
    state (a population-based-training member trains on from another's state with its own).

    Calls ``report`` once per epoch with ``epoch, step, train_loss, val_loss, val_acc, best_val_acc,
    test_acc_at_best_val, test_loss, test_acc, best_test_acc, lr, phi, mean_trust_ratio, images_per_s,
    epoch_seconds, diverged, device``; with ``val_fraction: 0`` the four validation keys are absent.
    ``test_acc_at_best_val`` (test accuracy at the first epoch of best validation accuracy) is the number to
    publish. A loss that turns NaN/inf ends the run at once with ``diverged: True``. The result repeats the last
    row and adds ``final_test_acc, epochs_run, wall_seconds, history``. Raises ``ValueError`` for a bad config and
    :class:`~tvlars.data.DatasetNotFoundError` for missing data.

    >>> result = run({"dataset": "mnist1d", "model": "mlp", "epochs": 1, "batch_size": 1000, "lr": 4.0})
    >>> 0.0 <= result["test_acc"] <= 1.0
    True
    """
    cfg = TrialConfig.from_dict(config)
    task = create_task(cfg.task)
    trial = Trial(cfg)
    return _epoch_loop(trial, task.prepare(trial), report, state, save_state)
