"""One trial: train a model with the optimizer under test and report per epoch (``run``), plus a small CLI.

python -m tvlars.train dataset=mnist1d model=mlp optimizer=tvlars batch_size=1000 epochs=5 lr=4
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .barlow import BarlowTwins, barlow_twins_loss, linear_probe, ridge_probe_accuracy
from .data import ArrayDataset, load_dataset, validation_split
from .models import build_model
from .optim import LARS, TVLARS, create_optimizer, get_optimizer_info, trainable_optimizers
from .optim._base import LayerwiseOptimizer
from .pipeline import Augment, DeviceLoader, augment_batch, barlow_twins_views
from .schedules import WarmupCosine, paper_lr

__all__ = ["OPTIMIZERS", "STATE_VERSION", "TASKS", "TrialConfig", "run"]

TASKS = ("classification", "barlow_twins")
#: What a trial's ``optimizer`` may be: the ``tvlars.optim`` registry's names and recipes (``lars_warmup``).
OPTIMIZERS = trainable_optimizers()
_PRECISIONS = ("auto", "fp32", "bf16")
_LR_SCALINGS = ("none", "linear_256")
_LR_SCHEDULES = ("constant", "warmup_cosine")
#: The paper warms LARS up for 20 of its 100 epochs.
_PAPER_WARMUP_FRACTION = 0.2
#: The official Barlow Twins projector; the small MLP/CNN workloads get a smaller one.
_BT_PROJECTOR_RESNET = [4096, 4096, 4096]
_BT_PROJECTOR_SMALL = [512, 512, 512]
#: The layout of the trial state ``run`` saves and restores; a state of another version is refused.
STATE_VERSION = 1


@dataclass
class TrialConfig:
    """Everything one trial needs. ``TrialConfig.from_dict`` checks names and values with clear errors."""

    task: str = "classification"
    dataset: str = "mnist1d"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    model: str = "mlp"
    stem: str = "cifar"
    optimizer: str = "tvlars"
    batch_size: int = 512
    micro_batch_size: int | None = None  # gradient accumulation for memory; BatchNorm then sees micro-batches
    ddp_devices: int = 1  # split each batch into this many equal shares with their own BN statistics (official: 4)
    drop_last: bool = False  # False: the last partial batch is a step, as the official loader does
    val_fraction: float = 0.1  # stratified hold-out of the training split (0: none, no val metrics)
    split_seed: int = 0  # chooses the validation rows; shared by every trial of a study (not the trial's seed)
    epochs: int = 10
    lr: float = 1.0
    lam: float = 1e-3
    delay_epochs: float = 0.0
    # TVLARS's schedule in units of training, the same φ over training progress at every batch size and length:
    lam_steps: float | None = None  # λ × the trial's total optimizer steps (exclusive with lam)
    delay_fraction: float | None = None  # d_e as a fraction of total optimizer steps (exclusive with delay_epochs)
    alpha: float = 1.0
    gamma_min: float = 0.0
    eta: float = 1e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    norm_clip: float | None = None
    exclude_1d: bool = True
    bias_correction: bool = True  # LAMB; the official code's LAMB has none
    trust_ratio: bool = True  # LAMB; False is pytorch-lamb's "adam" mode (official Barlow Twins)
    warmup_epochs: float | None = None  # None: 20 % of epochs for lars_warmup, none otherwise
    lr_scaling: str | None = None  # none | linear_256 (lr · batch / 256); None: linear_256 for lars_warmup
    lr_schedule: str | None = None  # constant | warmup_cosine; None: warmup_cosine for lars_warmup or warm-up > 0
    augment: bool | None = None  # None: on for uint8 images (crop + flip), off otherwise
    rotation: float = 0.0  # the official code adds ±15° rotations
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    channels_last: bool | None = None  # None: on CUDA for images
    fused_optimizer: bool = False  # torch.compile the optimizer step (seconds to compile, then faster)
    eval_batch_size: int = 4096
    num_threads: int | None = None
    nan_check_every: int = 1  # CUDA: steps between (non-blocking) divergence checks
    checkpoint_every: int = 1  # epochs between trial states handed to run()'s save_state (0: never)
    # Barlow Twins
    projector_dims: list[int] | None = None  # None: 4096-4096-4096 on ResNets (official), 512-512-512 otherwise
    bt_lambda: float = 0.005
    probe_epochs: int | None = None  # None: 100 on CUDA (official), 20 on CPU
    probe_lr: float = 0.3  # official: SGD lr 0.3, momentum 0.9, cosine
    probe_weight_decay: float = 5e-4
    probe_batch_size: int = 256
    probe_augment: bool | None = None  # train the probe on augmented images; None: on CUDA for images (official)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TrialConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"Unknown trial config key(s): {', '.join(unknown)} (valid: {', '.join(sorted(names))})")
        for units, raw in (("lam_steps", "lam"), ("delay_fraction", "delay_epochs")):
            if config.get(units) is not None and raw in config:
                raise ValueError(f"Give {units} or {raw}, not both ({units} is {raw} in units of training)")
        cfg = cls(**config)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"Invalid {name}: {getattr(self, name)!r} ({rule})")

        need(self.task in TASKS, "task", f"choose from {', '.join(TASKS)}")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"choose from {', '.join(OPTIMIZERS)}")
        need(self.precision in _PRECISIONS, "precision", f"choose from {', '.join(_PRECISIONS)}")
        need(self.lr_scaling in (None, *_LR_SCALINGS), "lr_scaling", f"choose from {', '.join(_LR_SCALINGS)}")
        need(self.lr_schedule in (None, *_LR_SCHEDULES), "lr_schedule", f"choose from {', '.join(_LR_SCHEDULES)}")
        need(_positive_int(self.ddp_devices), "ddp_devices", "a positive integer")
        need(isinstance(self.drop_last, bool), "drop_last", "true or false")
        need(
            isinstance(self.trust_ratio, bool) and (self.trust_ratio or self.optimizer == "lamb"),
            "trust_ratio",
            "true or false; false (Adam mode) only for lamb",
        )
        need(
            isinstance(self.val_fraction, int | float) and 0 <= self.val_fraction < 0.5,
            "val_fraction",
            "a number in [0, 0.5)",
        )
        need(isinstance(self.split_seed, int) and not isinstance(self.split_seed, bool), "split_seed", "an integer")
        need(_positive_int(self.batch_size), "batch_size", "a positive integer")
        need(_positive_int(self.epochs), "epochs", "a positive integer")
        need(
            self.micro_batch_size is None
            or (_positive_int(self.micro_batch_size) and self.batch_size % self.micro_batch_size == 0),
            "micro_batch_size",
            "a positive divisor of batch_size",
        )
        need(math.isfinite(self.lr) and self.lr >= 0, "lr", "a finite number >= 0")
        need(self.delay_epochs >= 0, "delay_epochs", ">= 0")
        need(
            self.lam_steps is None or (math.isfinite(self.lam_steps) and self.lam_steps >= 0),
            "lam_steps",
            "a finite number >= 0 (λ × total optimizer steps)",
        )
        need(
            self.delay_fraction is None or 0 <= self.delay_fraction <= 1,
            "delay_fraction",
            "a fraction of training in [0, 1]",
        )
        for units in ("lam_steps", "delay_fraction"):
            need(getattr(self, units) is None or self.optimizer == "tvlars", units, "a TVLARS key: tvlars only")
        need(self.warmup_epochs is None or 0 <= self.warmup_epochs <= self.epochs, "warmup_epochs", "0..epochs")
        need(_positive_int(self.eval_batch_size), "eval_batch_size", "a positive integer")
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
        need(self.probe_epochs is None or _positive_int(self.probe_epochs), "probe_epochs", "a positive integer")
        need(_positive_int(self.probe_batch_size), "probe_batch_size", "a positive integer")
        need(math.isfinite(self.probe_lr) and self.probe_lr > 0, "probe_lr", "a finite number > 0")
        # the optimizer's own checks (momentum, eta, lam, betas, ...), on a throwaway layer
        build_optimizer(self, nn.Linear(2, 2), steps_per_epoch=1)


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


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
    """The optimizer a config names (through the registry) and its LR schedule, if any.

    The official warm-up recipe applies to any optimizer: ``lr_scaling: linear_256`` (base LR ``lr · batch / 256``),
    ``warmup_epochs`` of linear warm-up, then cosine to 0.001× (``lr_schedule: warmup_cosine``). ``lars_warmup``
    is that recipe's name on LARS (its defaults: linear_256, 20 % warm-up). ``delay_epochs`` becomes TVLARS's
    ``delay`` in optimizer steps; ``lam_steps`` and ``delay_fraction`` (units of training) become ``lam`` and ``delay``
    for this trial's total steps, ``epochs × steps_per_epoch``.
    """
    name = "lars" if cfg.optimizer == "lars_warmup" else cfg.optimizer
    info = get_optimizer_info(name)
    recipe = cfg.optimizer == "lars_warmup"
    scaling = cfg.lr_scaling or ("linear_256" if recipe else "none")
    total_steps = cfg.epochs * steps_per_epoch
    candidates = {
        "lr": paper_lr(cfg.lr, cfg.batch_size) if scaling == "linear_256" else cfg.lr,
        "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay,
        "eta": cfg.eta,
        "lam": cfg.lam if cfg.lam_steps is None else cfg.lam_steps / total_steps,
        "delay": cfg.delay_epochs * steps_per_epoch if cfg.delay_fraction is None else cfg.delay_fraction * total_steps,
        "alpha": cfg.alpha,
        "gamma_min": cfg.gamma_min,
        "norm_clip": cfg.norm_clip,
        "exclude_1d": cfg.exclude_1d,
        "betas": (cfg.beta1, cfg.beta2),
        "bias_correction": cfg.bias_correction,
        "adam": not cfg.trust_ratio,
        "fused": cfg.fused_optimizer or None,
    }
    opt = create_optimizer(name, model, **{k: v for k, v in candidates.items() if k in info.hyperparameters})
    warmup = cfg.warmup_epochs
    if warmup is None:
        warmup = round(_PAPER_WARMUP_FRACTION * cfg.epochs) if recipe else 0
    schedule = cfg.lr_schedule or ("warmup_cosine" if recipe or warmup > 0 else "constant")
    scheduled = schedule == "warmup_cosine"
    sched = WarmupCosine(opt, round(warmup * steps_per_epoch), cfg.epochs * steps_per_epoch) if scheduled else None
    return opt, sched


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
def _evaluate(
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
def _features(backbone: nn.Module, loader: DeviceLoader, autocast_ctx: Callable) -> Tensor:
    chunks = []
    for xb, _ in loader:
        with autocast_ctx():
            chunks.append(backbone.features(xb).float())
    return torch.cat(chunks)


class _Trial:
    """State shared by the two tasks: data on the device, model, optimizer, loaders, the epoch loop."""

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
    """φ at the latest step (a host float, no sync) and the mean trust ratio (a device tensor)."""
    if isinstance(opt, TVLARS):
        phi: float | None = opt.current_phi(-1)
    elif isinstance(opt, LARS):
        phi = 1.0
    else:
        phi = None
    ratio = opt.last_trust_ratio if isinstance(opt, LayerwiseOptimizer) else None
    return phi, ratio


SaveState = Callable[[int, dict[str, Any]], None]


def _rng_state(trial: _Trial) -> dict[str, Any]:
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


def _set_rng_state(trial: _Trial, state: dict[str, Any]) -> None:
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
    trial: _Trial,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: WarmupCosine | None,
    loader: DeviceLoader,
    train_step: Callable[[Tensor, Tensor], Tensor],
    evaluate: Callable[[int], dict[str, Any]],
    report: Callable[[dict[str, Any]], None] | None,
    state: dict[str, Any] | None = None,
    save_state: SaveState | None = None,
) -> dict[str, Any]:
    """Train for the configured epochs; report once per epoch with one device→host transfer.

    With ``state`` (what ``save_state`` was given at some epoch) it continues after that epoch; ``save_state``
    gets the trial's whole state every ``checkpoint_every`` epochs, just before that epoch's report.
    """
    cfg = trial.cfg
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


def _classification(trial: _Trial, report: Callable | None, state: dict | None, save: SaveState | None) -> dict:
    cfg = trial.cfg
    model = build_model(cfg.model, trial.data.input_shape, trial.data.num_classes, cfg.stem).to(trial.device)
    if trial.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = trial.train_loader(trial.default_augment())
    opt, sched = build_optimizer(cfg, model, len(loader))

    def train_step(xb: Tensor, yb: Tensor) -> Tensor:
        model.train()
        opt.zero_grad(set_to_none=True)
        xb = loader.transform(xb)
        total = torch.zeros((), device=trial.device)
        for xc, yc, weight in trial.micro_batches(xb, yb):
            with trial.autocast():
                loss = F.cross_entropy(model(xc).float(), yc) * weight
            loss.backward()
            total += loss.detach()
        opt.step()
        return total

    def evaluate(epoch: int) -> dict[str, Any]:
        model.eval()
        metrics: dict[str, Any] = {}
        if "val" in trial.eval_loaders:
            metrics["val_loss"], metrics["val_acc"] = _evaluate(model, trial.eval_loaders["val"], trial.autocast)
        metrics["test_loss"], metrics["test_acc"] = _evaluate(model, trial.eval_loaders["test"], trial.autocast)
        return metrics

    return _epoch_loop(trial, model, opt, sched, loader, train_step, evaluate, report, state, save)


def _barlow_twins(trial: _Trial, report: Callable | None, state: dict | None, save: SaveState | None) -> dict:
    """Pretrain with Barlow Twins and the optimizer under test; probe the frozen backbone.

    Each epoch reports a closed-form ridge probe's validation and test accuracy (fast, for pruning); the last
    epoch reports the SGD linear probe's (``probe: "sgd"``), the trial's result. On CUDA the probe follows the
    official protocol (100 epochs, lr 0.3, weight decay 5e-4, batch 256, trained on augmented images through the
    frozen backbone); on CPU it trains 20 epochs on standardised features computed once.
    """
    cfg = trial.cfg
    cuda = trial.device.type == "cuda"
    backbone = build_model(cfg.model, trial.data.input_shape, trial.data.num_classes, cfg.stem)
    projector = cfg.projector_dims or (_BT_PROJECTOR_RESNET if cfg.model.startswith("resnet") else _BT_PROJECTOR_SMALL)
    model = BarlowTwins(backbone, projector).to(trial.device)
    if trial.channels_last:
        model = model.to(memory_format=torch.channels_last)
    images = len(trial.data.input_shape) == 3
    loader = trial.train_loader(None if images else Augment(crop_padding=0, flip=False, shift=4, jitter=0.3, noise=0.2))
    opt, sched = build_optimizer(cfg, model, len(loader))

    def views(xb: Tensor) -> tuple[Tensor, Tensor]:
        if not images:
            return loader.transform(xb), loader.transform(xb)
        v1, v2 = barlow_twins_views(xb, loader.mean, loader.std, trial.generator)
        if trial.channels_last:
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
        return v1, v2

    def train_step(xb: Tensor, yb: Tensor) -> Tensor:
        model.train()
        opt.zero_grad(set_to_none=True)
        v1, v2 = views(xb)
        shares = min(cfg.ddp_devices, len(xb))  # per-device BatchNorm, the loss over the whole batch

        def embed(v: Tensor) -> Tensor:
            return torch.cat([model(s).float() for s in v.tensor_split(shares)])

        with trial.autocast():
            loss = barlow_twins_loss(embed(v1), embed(v2), cfg.bt_lambda, shares=shares)
        loss.backward()
        opt.step()
        return loss.detach()

    eval_splits = [s for s in ("val", "test") if s in trial.eval_loaders]

    def evaluate(epoch: int) -> dict[str, Any]:
        model.eval()
        feats = {s: _features(backbone, trial.eval_loaders[s], trial.autocast) for s in ("train", *eval_splits)}
        labels = {s: trial.eval_loaders[s].y for s in eval_splits}
        if epoch < cfg.epochs:
            out: dict[str, Any] = {"probe": "ridge"}
            for s in eval_splits:
                out[f"{s}_acc"] = ridge_probe_accuracy(
                    feats["train"], trial.train_y, feats[s], labels[s], trial.data.num_classes
                )
            return out
        augmented = cfg.probe_augment if cfg.probe_augment is not None else (cuda and images)
        if augmented:
            probe_aug = trial.default_augment() or Augment(crop_padding=4, flip=True)

            @torch.no_grad()
            def train_features(rows: Tensor) -> Tensor:
                xb = augment_batch(trial.train_x[rows], probe_aug, loader.mean, loader.std, trial.generator)
                with trial.autocast():
                    return backbone.features(xb).float()

            evals = {s: (feats[s], labels[s]) for s in eval_splits}
        else:
            mean, std = feats["train"].mean(0), feats["train"].std(0).clamp_min(1e-6)
            train_std = (feats["train"] - mean) / std

            def train_features(rows: Tensor) -> Tensor:
                return train_std[rows]

            evals = {s: ((feats[s] - mean) / std, labels[s]) for s in eval_splits}
        final, best = linear_probe(
            train_features,
            trial.train_y,
            evals,
            trial.data.num_classes,
            epochs=cfg.probe_epochs or (100 if cuda else 20),
            lr=cfg.probe_lr,
            weight_decay=cfg.probe_weight_decay,
            batch_size=min(cfg.probe_batch_size, len(trial.train_y)),
            generator=trial.generator,
        )
        return {**{f"{s}_acc": final[s] for s in eval_splits}, "probe": "sgd", "probe_best_acc": best["test"]}

    return _epoch_loop(trial, model, opt, sched, loader, train_step, evaluate, report, state, save)


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
    trial = _Trial(cfg)
    task = _classification if cfg.task == "classification" else _barlow_twins
    return task(trial, report, state, save_state)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        print("\nKeys and defaults:")
        for f in dataclasses.fields(TrialConfig):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            print(f"  {f.name} = {default!r}")
        return 0
    config = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            print(f"error: expected key=value, got {arg!r}", file=sys.stderr)
            return 2
        config[key] = _parse_value(value)
    columns = ("epoch", "train_loss", "val_loss", "val_acc", "test_loss", "test_acc", "lr", "phi", "images_per_s")
    print("  ".join(f"{c:>12s}" for c in columns))

    def show(row: dict[str, Any]) -> None:
        cells = [row.get(c, "-") for c in columns]
        print("  ".join(f"{v:>12.4g}" if isinstance(v, float) else f"{v!s:>12s}" for v in cells), flush=True)

    try:
        result = run(config, show)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    keys = (
        "best_val_acc",
        "test_acc_at_best_val",
        "best_test_acc",
        "final_test_acc",
        "epochs_run",
        "diverged",
        "device",
    )
    summary = {k: result[k] for k in keys if k in result}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
