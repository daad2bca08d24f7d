"""The epoch loop every task shares: data on the device, instrumentation, divergence, checkpoints, reports.

:func:`run` is one trial: it checks the config, prepares a :class:`Trial`, asks the config's task for its
:class:`~tvlars.train.tasks.Training` and trains it for the configured epochs.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..data import ArrayDataset, load_dataset, validation_split
from ..models import build_model
from ..pipeline import Augment, DeviceLoader
from ..schedules import WarmupCosine
from .config import TrialConfig, build_optimizer, resolve_device
from .tasks import Training, create_task

__all__ = ["STATE_VERSION", "SaveState", "Trial", "evaluate_classifier", "features", "run"]

#: The layout of the trial state ``run`` saves and restores; a state of another version is refused.
STATE_VERSION = 1
#: ``save_state(epoch, state)``: called with the trial's whole state every ``checkpoint_every`` epochs.
SaveState = Callable[[int, dict[str, Any]], None]


class _Stopwatch:
    """Elapsed time of a stretch of device work: CUDA events on CUDA (read after the epoch's one sync), else a clock."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            self.begin, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self.end.record()
        else:
            self.seconds_ = time.perf_counter() - self.t0

    def seconds(self) -> float:
        """Call after the device work is known to be done (here: after the epoch's device→host transfer)."""
        return self.begin.elapsed_time(self.end) / 1e3 if self.cuda else self.seconds_


class _DivergenceWatch:
    """Notices a non-finite loss without stalling the device.

    On CPU it checks every step (reading a CPU tensor costs nothing). On CUDA it copies a flag to pinned host
    memory without blocking and reads it once the copy's event has completed, a few steps later at most.
    """

    def __init__(self, device: torch.device, check_every: int) -> None:
        self.cuda = device.type == "cuda"
        self.check_every = check_every
        self.pending: list[tuple[torch.cuda.Event, Tensor]] = []
        self.step = 0

    def diverged(self, loss: Tensor) -> bool:
        self.step += 1
        if not self.cuda:
            return not bool(torch.isfinite(loss))
        if self.step % self.check_every == 0:
            flag = torch.empty((), dtype=torch.bool, pin_memory=True)
            flag.copy_(torch.isfinite(loss), non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self.pending.append((event, flag))
        while self.pending and self.pending[0][0].query():
            _, flag = self.pending.pop(0)
            if not bool(flag):  # pinned host memory the copy has finished writing: no device sync
                return True
        return False


def _autocast(device: torch.device, precision: str):
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate_classifier(
    forward: Callable[[Tensor], Tensor], loader: DeviceLoader, autocast_ctx: Callable
) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy over a loader, as 0-d device tensors (no host read)."""
    loss_sum = torch.zeros((), device=loader.x.device)
    correct = torch.zeros((), device=loader.x.device)
    for xb, yb in loader:
        with autocast_ctx():
            logits = forward(xb).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    n = len(loader.x)
    return loss_sum / n, correct / n


@torch.no_grad()
def features(backbone: nn.Module, loader: DeviceLoader, autocast_ctx: Callable) -> Tensor:
    chunks = []
    for xb, _ in loader:
        with autocast_ctx():
            chunks.append(backbone.features(xb).float())
    return torch.cat(chunks)


class Trial:
    """What every task starts from: the config, the device, the data on it with its splits and loaders."""

    def __init__(self, cfg: TrialConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.data: ArrayDataset = load_dataset(cfg.dataset, cfg.data_dir, **cfg.dataset_options)
        is_image = len(self.data.input_shape) == 3
        self.channels_last = (
            (self.device.type == "cuda" and is_image) if cfg.channels_last is None else cfg.channels_last
        )
        self.autocast = lambda: _autocast(self.device, cfg.precision)

        def to_device(a):
            return torch.from_numpy(a).to(self.device)

        train_x, train_y = self.data.train_x, self.data.train_y
        splits = {}
        if cfg.val_fraction > 0:
            # chosen by split_seed alone: every trial of a study is judged on the same rows
            train_rows, val_rows = validation_split(train_y, cfg.val_fraction, cfg.split_seed)
            splits["val"] = (to_device(train_x[val_rows]), to_device(train_y[val_rows]))
            train_x, train_y = train_x[train_rows], train_y[train_rows]
        if cfg.batch_size > len(train_y):
            raise ValueError(f"Invalid batch_size: {cfg.batch_size} (larger than the {len(train_y)} training examples)")
        self.train_x, self.train_y = to_device(train_x), to_device(train_y)
        self.test_x, self.test_y = to_device(self.data.test_x), to_device(self.data.test_y)
        splits = {"train": (self.train_x, self.train_y), **splits, "test": (self.test_x, self.test_y)}
        self.eval_loaders = {
            split: DeviceLoader(
                x,
                y,
                min(cfg.eval_batch_size, len(x)),
                self.data.mean,
                self.data.std,
                shuffle=False,
                drop_last=False,
                channels_last=self.channels_last,
            )
            for split, (x, y) in splits.items()
        }

    def build_model(self) -> nn.Module:
        """The config's model (with its ``model_options``) for this data's input shape and classes, on the CPU."""
        return build_model(
            self.cfg.model, self.data.input_shape, self.data.num_classes, **self.cfg.model_build_options()
        )

    def build_optimizer(
        self, model: nn.Module, steps_per_epoch: int
    ) -> tuple[torch.optim.Optimizer, WarmupCosine | None]:
        """The config's optimizer on ``model`` and its LR schedule (:func:`~tvlars.train.config.build_optimizer`)."""
        return build_optimizer(self.cfg, model, steps_per_epoch)

    def train_loader(self, augment: Augment | None) -> DeviceLoader:
        return DeviceLoader(
            self.train_x,
            self.train_y,
            self.cfg.batch_size,
            self.data.mean,
            self.data.std,
            drop_last=self.cfg.drop_last,
            augment=augment,
            generator=self.generator,
            channels_last=self.channels_last,
        )

    def default_augment(self) -> Augment | None:
        wanted = self.cfg.augment if self.cfg.augment is not None else self.data.is_uint8
        if not wanted:
            return None
        if len(self.data.input_shape) == 3:
            return Augment(crop_padding=4, flip=True, rotation=self.cfg.rotation)
        return Augment(crop_padding=0, flip=False, shift=2, noise=0.05)

    def micro_batches(self, xb: Tensor, yb: Tensor) -> Iterator[tuple[Tensor, Tensor, float]]:
        """Chunks to forward and backward one at a time, with the weight of each chunk's mean loss.

        ``ddp_devices`` splits the batch into that many equal shares (as DistributedSampler deals a batch to the
        official run's GPUs, the last partial batch too), each weighted 1/devices as DDP averages gradients, each
        normalised by its own BatchNorm statistics; ``micro_batch_size`` further splits a share for memory.
        """
        devices = min(self.cfg.ddp_devices, len(xb))
        micro = self.cfg.micro_batch_size
        for xs, ys in zip(xb.tensor_split(devices), yb.tensor_split(devices), strict=True):
            if micro is None or micro >= len(xs):
                yield xs, ys, 1.0 / devices
                continue
            for xc, yc in zip(xs.split(micro), ys.split(micro), strict=True):
                yield xc, yc, len(xc) / len(xs) / devices


def _optimizer_readings(opt: torch.optim.Optimizer) -> tuple[float | None, Tensor | None]:
    """φ at the latest step (a host float, no sync) and the mean trust ratio (a device tensor), from the optimizer's
    ``step_readings()`` where it offers one (TVLARS, LARS, LAMB do); (None, None) otherwise."""
    readings = getattr(opt, "step_readings", None)
    return readings() if callable(readings) else (None, None)


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
        sched.load_state_dict(saved_sched)
        sched.base_lrs = [g["initial_lr"] for g in opt.param_groups]
        lrs = [base * sched.lr_lambdas[i](sched.last_epoch) for i, base in enumerate(sched.base_lrs)]
        for group, lr in zip(opt.param_groups, lrs, strict=True):
            group["lr"] = lr
        sched._last_lr = lrs


def _epoch_loop(
    trial: Trial,
    training: Training,
    report: Callable[[dict[str, Any]], None] | None,
    state: dict[str, Any] | None = None,
    save_state: SaveState | None = None,
) -> dict[str, Any]:
    """Train for the configured epochs; report once per epoch with one device→host transfer.

    With ``state`` (what ``save_state`` was given at some epoch) it continues after that epoch; ``save_state``
    gets the trial's whole state every ``checkpoint_every`` epochs, just before that epoch's report.
    """
    cfg = trial.cfg
    model, opt, sched, loader = training.model, training.optimizer, training.scheduler, training.loader
    train_step, evaluate = training.train_step, training.evaluate
    watch = _DivergenceWatch(trial.device, cfg.nan_check_every if trial.device.type == "cuda" else 1)
    history: list[dict[str, Any]] = []
    best = best_val = -math.inf
    test_at_best_val: float | None = None
    start = time.perf_counter()
    elapsed_before = 0.0  # wall seconds of the epochs a restored state had already run
    first_epoch = 1
    if state is not None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"Invalid state: version {state.get('version')!r} (this trainer reads {STATE_VERSION})")
        model.load_state_dict(state["model"])
        _load_optimizer_state(opt, sched, state["optimizer"], state.get("scheduler"))
        _set_rng_state(trial, state["rng"])
        tracked = state["trackers"]
        best, best_val, test_at_best_val = tracked["best"], tracked["best_val"], tracked["test_at_best_val"]
        watch.step = tracked["watch_step"]
        elapsed_before = tracked["wall_seconds"]
        history = [dict(r) for r in state["history"]]
        first_epoch = state["epoch"] + 1
    row: dict[str, Any] = dict(history[-1]) if history else {}
    train_clock = _Stopwatch(trial.device)
    device_name = _device_name(trial.device)

    def snapshot(epoch: int) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "rng": _rng_state(trial),
            "trackers": {
                "best": best,
                "best_val": best_val,
                "test_at_best_val": test_at_best_val,
                "watch_step": watch.step,
                "wall_seconds": elapsed_before + time.perf_counter() - start,
            },
            "history": [dict(r) for r in history],
        }

    for epoch in range(first_epoch, cfg.epochs + 1):
        epoch_start = time.perf_counter()
        train_clock.start()
        loss_sum = torch.zeros((), device=trial.device)
        steps = 0
        diverged = False
        for xb, yb in loader.raw_batches():
            loss = train_step(xb, yb)
            loss_sum += loss
            steps += 1
            if sched is not None:
                sched.step()
            if watch.diverged(loss):
                diverged = True
                break
        train_clock.stop()
        metrics = evaluate(epoch)  # test_acc, test_loss (or None), val_acc / val_loss when validating, extras
        phi, ratio = _optimizer_readings(opt)
        nan = torch.tensor(math.nan, device=trial.device)
        values = [loss_sum / max(steps, 1), nan if ratio is None else ratio.float()]
        tensor_keys = [k for k, v in metrics.items() if isinstance(v, Tensor)]
        values += [metrics[k].float() for k in tensor_keys]
        fetched = torch.stack(values).tolist()  # the epoch's one device→host transfer
        train_loss, ratio_f = fetched[:2]
        metrics = {**metrics, **dict(zip(tensor_keys, fetched[2:], strict=True))}
        test_acc_f = metrics.pop("test_acc")
        seconds = time.perf_counter() - epoch_start
        diverged = diverged or not math.isfinite(train_loss)
        best = max(best, test_acc_f) if math.isfinite(test_acc_f) else best
        validation: dict[str, Any] = {}
        if "val_acc" in metrics:
            val_acc = metrics.pop("val_acc")
            if math.isfinite(val_acc) and val_acc > best_val:  # the first epoch of the best wins ties
                best_val, test_at_best_val = val_acc, test_acc_f
            validation = {
                "val_loss": metrics.pop("val_loss", None),
                "val_acc": val_acc,
                "best_val_acc": best_val if math.isfinite(best_val) else None,
                "test_acc_at_best_val": test_at_best_val,
            }
        row = {
            "epoch": epoch,
            "step": epoch * len(loader) if not diverged else (epoch - 1) * len(loader) + steps,
            "train_loss": train_loss,
            **validation,
            "test_loss": metrics.pop("test_loss", None),
            "test_acc": test_acc_f,
            "best_test_acc": best if math.isfinite(best) else None,
            "lr": opt.param_groups[-1]["lr"],
            "phi": phi,
            "mean_trust_ratio": None if ratio is None else ratio_f,
            "images_per_s": steps * cfg.batch_size / max(train_clock.seconds(), 1e-9),
            "epoch_seconds": seconds,
            "diverged": diverged,
            "device": device_name,
            **metrics,
        }
        history.append(row)
        if save_state is not None and cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0 and not diverged:
            save_state(epoch, snapshot(epoch))
        if report is not None:
            report(dict(row))
        if diverged:
            break
    return {
        **row,
        "final_test_acc": row.get("test_acc"),
        "epochs_run": len(history),
        "wall_seconds": elapsed_before + time.perf_counter() - start,
        "history": history,
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()} threads"


def run(
    config: dict[str, Any],
    report: Callable[[dict[str, Any]], None] | None = None,
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
