"""One trial: train a model with the optimizer under test and report per epoch (``run``), plus a small CLI.

python -m tvlars.train dataset=mnist1d model=mlp optimizer=tvlars batch_size=1000 epochs=5 lr=4
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .barlow import BarlowTwins, barlow_twins_loss, linear_probe, ridge_probe_accuracy
from .data import ArrayDataset, load_dataset
from .models import build_model
from .optim import LARS, TVLARS, create_optimizer, get_optimizer_info, trainable_optimizers
from .optim._base import LayerwiseOptimizer
from .pipeline import Augment, DeviceLoader
from .schedules import WarmupCosine, paper_lr

__all__ = ["OPTIMIZERS", "TASKS", "TrialConfig", "run"]

TASKS = ("classification", "barlow_twins")
#: What a trial's ``optimizer`` may be: the ``tvlars.optim`` registry's names and recipes (``lars_warmup``).
OPTIMIZERS = trainable_optimizers()
_PRECISIONS = ("auto", "fp32", "bf16")
#: The paper warms LARS up for 20 of its 100 epochs.
_PAPER_WARMUP_FRACTION = 0.2


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
    micro_batch_size: int | None = None
    epochs: int = 10
    lr: float = 1.0
    lam: float = 1e-3
    delay_epochs: float = 0.0
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
    warmup_epochs: float | None = None  # None: 20 % of epochs for lars_warmup, none otherwise
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
    # Barlow Twins
    projector_dims: list[int] = field(default_factory=lambda: [512, 512, 512])
    bt_lambda: float = 0.005
    probe_epochs: int = 20
    probe_lr: float = 0.1

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TrialConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise ValueError(f"Unknown trial config key(s): {', '.join(unknown)} (valid: {', '.join(sorted(names))})")
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
        need(self.warmup_epochs is None or 0 <= self.warmup_epochs <= self.epochs, "warmup_epochs", "0..epochs")
        need(_positive_int(self.eval_batch_size), "eval_batch_size", "a positive integer")
        need(_positive_int(self.nan_check_every), "nan_check_every", "a positive integer")
        need(self.num_threads is None or _positive_int(self.num_threads), "num_threads", "a positive integer")
        need(bool(self.projector_dims) and all(map(_positive_int, self.projector_dims)), "projector_dims", "sizes")
        need(_positive_int(self.probe_epochs), "probe_epochs", "a positive integer")
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

    ``lars_warmup`` is the paper's baseline: LARS at ``lr · batch_size / 256`` with linear warm-up, then cosine.
    ``delay_epochs`` becomes TVLARS's ``delay`` in optimizer steps.
    """
    name = "lars" if cfg.optimizer == "lars_warmup" else cfg.optimizer
    info = get_optimizer_info(name)
    candidates = {
        "lr": paper_lr(cfg.lr, cfg.batch_size) if cfg.optimizer == "lars_warmup" else cfg.lr,
        "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay,
        "eta": cfg.eta,
        "lam": cfg.lam,
        "delay": cfg.delay_epochs * steps_per_epoch,
        "alpha": cfg.alpha,
        "gamma_min": cfg.gamma_min,
        "norm_clip": cfg.norm_clip,
        "exclude_1d": cfg.exclude_1d,
        "betas": (cfg.beta1, cfg.beta2),
        "bias_correction": cfg.bias_correction,
        "fused": cfg.fused_optimizer or None,
    }
    opt = create_optimizer(name, model, **{k: v for k, v in candidates.items() if k in info.hyperparameters})
    warmup = cfg.warmup_epochs
    if warmup is None:
        warmup = round(_PAPER_WARMUP_FRACTION * cfg.epochs) if cfg.optimizer == "lars_warmup" else 0
    scheduled = cfg.optimizer == "lars_warmup" or warmup > 0
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

        self.train_x, self.train_y = to_device(self.data.train_x), to_device(self.data.train_y)
        self.test_x, self.test_y = to_device(self.data.test_x), to_device(self.data.test_y)
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
            for split, (x, y) in {"train": (self.train_x, self.train_y), "test": (self.test_x, self.test_y)}.items()
        }

    def train_loader(self, augment: Augment | None) -> DeviceLoader:
        return DeviceLoader(
            self.train_x,
            self.train_y,
            self.cfg.batch_size,
            self.data.mean,
            self.data.std,
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
        micro = self.cfg.micro_batch_size
        if micro is None or micro >= len(xb):
            yield xb, yb, 1.0
            return
        for xc, yc in zip(xb.split(micro), yb.split(micro), strict=True):
            yield xc, yc, len(xc) / len(xb)


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


def _epoch_loop(
    trial: _Trial,
    opt: torch.optim.Optimizer,
    sched: WarmupCosine | None,
    loader: DeviceLoader,
    train_step: Callable[[Tensor, Tensor], Tensor],
    evaluate: Callable[[int], tuple[Tensor | None, Tensor, dict[str, Any]]],
    report: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    """Train for the configured epochs; report once per epoch with one device→host transfer."""
    cfg = trial.cfg
    watch = _DivergenceWatch(trial.device, cfg.nan_check_every if trial.device.type == "cuda" else 1)
    history: list[dict[str, Any]] = []
    best = -math.inf
    start = time.perf_counter()
    row: dict[str, Any] = {}
    train_clock = _Stopwatch(trial.device)
    device_name = _device_name(trial.device)
    for epoch in range(1, cfg.epochs + 1):
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
        test_loss, test_acc, extra = evaluate(epoch)
        phi, ratio = _optimizer_readings(opt)
        nan = torch.tensor(math.nan, device=trial.device)
        values = [loss_sum / max(steps, 1), nan if test_loss is None else test_loss, test_acc]
        values.append(nan if ratio is None else ratio.float())
        tensor_extras = [k for k, v in extra.items() if isinstance(v, Tensor)]
        values += [extra[k].float() for k in tensor_extras]
        fetched = torch.stack(values).tolist()  # the epoch's one device→host transfer
        train_loss, test_loss_f, test_acc_f, ratio_f = fetched[:4]
        extra = {**extra, **dict(zip(tensor_extras, fetched[4:], strict=True))}
        seconds = time.perf_counter() - epoch_start
        diverged = diverged or not math.isfinite(train_loss)
        best = max(best, test_acc_f) if math.isfinite(test_acc_f) else best
        row = {
            "epoch": epoch,
            "step": epoch * len(loader) if not diverged else (epoch - 1) * len(loader) + steps,
            "train_loss": train_loss,
            "test_loss": None if test_loss is None else test_loss_f,
            "test_acc": test_acc_f,
            "best_test_acc": best if math.isfinite(best) else None,
            "lr": opt.param_groups[-1]["lr"],
            "phi": phi,
            "mean_trust_ratio": None if ratio is None else ratio_f,
            "images_per_s": steps * cfg.batch_size / max(train_clock.seconds(), 1e-9),
            "epoch_seconds": seconds,
            "diverged": diverged,
            "device": device_name,
            **extra,
        }
        history.append(row)
        if report is not None:
            report(dict(row))
        if diverged:
            break
    return {
        **row,
        "final_test_acc": row.get("test_acc"),
        "epochs_run": len(history),
        "wall_seconds": time.perf_counter() - start,
        "history": history,
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()} threads"


def _classification(trial: _Trial, report: Callable | None) -> dict[str, Any]:
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

    def evaluate(epoch: int) -> tuple[Tensor, Tensor, dict[str, Any]]:
        model.eval()
        test_loss, test_acc = _evaluate(model, trial.eval_loaders["test"], trial.autocast)
        return test_loss, test_acc, {}

    return _epoch_loop(trial, opt, sched, loader, train_step, evaluate, report)


def _barlow_twins(trial: _Trial, report: Callable | None) -> dict[str, Any]:
    """Pretrain with Barlow Twins and the optimizer under test; probe the frozen backbone.

    Each epoch reports a closed-form ridge probe's test accuracy (fast, for pruning); the last epoch reports the
    SGD linear probe's (``probe: "sgd"``), the trial's result.
    """
    cfg = trial.cfg
    backbone = build_model(cfg.model, trial.data.input_shape, trial.data.num_classes, cfg.stem)
    model = BarlowTwins(backbone, cfg.projector_dims).to(trial.device)
    if trial.channels_last:
        model = model.to(memory_format=torch.channels_last)
    images = len(trial.data.input_shape) == 3
    if images:
        augment = Augment(crop_padding=4, flip=True, rotation=cfg.rotation, jitter=0.4, noise=0.1)
    else:
        augment = Augment(crop_padding=0, flip=False, shift=4, jitter=0.3, noise=0.2)
    loader = trial.train_loader(augment)
    opt, sched = build_optimizer(cfg, model, len(loader))

    def train_step(xb: Tensor, yb: Tensor) -> Tensor:
        model.train()
        opt.zero_grad(set_to_none=True)
        v1, v2 = loader.transform(xb), loader.transform(xb)
        with trial.autocast():
            loss = barlow_twins_loss(model(v1).float(), model(v2).float(), cfg.bt_lambda)
        loss.backward()
        opt.step()
        return loss.detach()

    def evaluate(epoch: int) -> tuple[Tensor | None, Tensor, dict[str, Any]]:
        model.eval()
        train_f = _features(backbone, trial.eval_loaders["train"], trial.autocast)
        test_f = _features(backbone, trial.eval_loaders["test"], trial.autocast)
        if epoch < cfg.epochs:
            acc = ridge_probe_accuracy(train_f, trial.train_y, test_f, trial.test_y, trial.data.num_classes)
            return None, acc, {"probe": "ridge"}
        best, final = linear_probe(
            train_f,
            trial.train_y,
            test_f,
            trial.test_y,
            trial.data.num_classes,
            epochs=cfg.probe_epochs,
            lr=cfg.probe_lr,
            batch_size=max(1, min(256, len(train_f) // 8)),
            generator=trial.generator,
        )
        return None, final, {"probe": "sgd", "probe_best_acc": best}

    return _epoch_loop(trial, opt, sched, loader, train_step, evaluate, report)


def run(config: dict[str, Any], report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run one trial and return its final metrics.

    Calls ``report`` once per epoch with ``epoch, step, train_loss, test_loss, test_acc, best_test_acc, lr, phi,
    mean_trust_ratio, images_per_s, epoch_seconds, diverged, device``. A loss that turns NaN/inf ends the run at
    once with ``diverged: True``. The result repeats the last row and adds ``final_test_acc, epochs_run, wall_seconds,
    history``. Raises ``ValueError`` for a bad config and
    :class:`~tvlars.data.DatasetNotFoundError` for missing data.

    >>> result = run({"dataset": "mnist1d", "model": "mlp", "epochs": 1, "batch_size": 1000, "lr": 4.0})
    >>> 0.0 <= result["test_acc"] <= 1.0
    True
    """
    cfg = TrialConfig.from_dict(config)
    trial = _Trial(cfg)
    return _classification(trial, report) if cfg.task == "classification" else _barlow_twins(trial, report)


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
    columns = ("epoch", "train_loss", "test_loss", "test_acc", "lr", "phi", "mean_trust_ratio", "images_per_s")
    print("  ".join(f"{c:>12s}" for c in columns))

    def show(row: dict[str, Any]) -> None:
        cells = [row[c] for c in columns]
        print("  ".join(f"{v:>12.4g}" if isinstance(v, float) else f"{v!s:>12s}" for v in cells), flush=True)

    try:
        result = run(config, show)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {k: result[k] for k in ("best_test_acc", "final_test_acc", "epochs_run", "diverged", "device")}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
