"""What every task starts from: a :class:`Trial` (the config, the device, the data on it with its splits and
loaders), and the evaluation helpers tasks share (:func:`evaluate_classifier`, :func:`features`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..data import ArrayDataset, load_dataset, validation_split
from ..models import build_model
from ..pipeline import Augment, DeviceLoader
from ..schedules import WarmupCosine
from .config import TrialConfig, build_optimizer, resolve_device

__all__ = ["Trial", "evaluate_classifier", "features"]


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
