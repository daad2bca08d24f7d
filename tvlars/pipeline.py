"""A device-resident input pipeline: the whole data set lives on the device; shuffling and augmentation run there.

No DataLoader worker processes and no per-sample Python: a batch is an index into a device tensor, cropped, flipped
and rotated in a few batched ops. Randomness comes from a ``torch.Generator`` on the device, so nothing is read
back to the host and a seed fixes the stream.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["Augment", "DeviceLoader", "augment_batch", "normalize"]


@dataclass(frozen=True)
class Augment:
    """The official code's CIFAR training transforms, on the device.

    Args:
        crop_padding: random crop to the input size after zero-padding each side by this many pixels (0: none)
        flip: random horizontal flip with probability 1/2
        rotation: random rotation by up to ± this many degrees (the official code uses 15; 0: none)
        jitter: random brightness (added) and contrast (multiplied) of up to ± this much per sample, in
            normalised units, as Barlow Twins' colour jitter in miniature (0: none)
        noise: additive Gaussian noise of this std in normalised units (0: none)
        shift: for 1-D signals, random circular shift by up to ± this many positions (0: none)
    """

    crop_padding: int = 4
    flip: bool = True
    rotation: float = 0.0
    jitter: float = 0.0
    noise: float = 0.0
    shift: int = 0

    @classmethod
    def none(cls) -> Augment:
        return cls(crop_padding=0, flip=False, rotation=0.0)


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 → float in [0, 1] (other dtypes as they are), then ``(x − mean) / std`` per channel."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    return (x - mean) / std


def _random_crop(x: Tensor, padding: int, generator: torch.Generator | None) -> Tensor:
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), device=x.device, generator=generator)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (n, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # advanced indexing puts the indexed dims first: (n, h, w, c) → back to (n, c, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _random_flip(x: Tensor, generator: torch.Generator | None) -> Tensor:
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _random_rotation(x: Tensor, degrees: float, generator: torch.Generator | None) -> Tensor:
    n = x.shape[0]
    angle = (torch.rand(n, device=x.device, generator=generator) * 2 - 1) * math.radians(degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_batch(x: Tensor, aug: Augment, mean: Tensor, std: Tensor, generator: torch.Generator | None) -> Tensor:
    """Augment and normalise a batch: images (N, C, H, W), uint8 or float; signals (N, C, L) float.

    Crop and flip run on the raw values (uint8 stays uint8: a quarter of the memory traffic); rotation and noise
    need floats and run after normalisation, where the zero padding of a rotation is the data mean.
    """
    if x.ndim == 4:
        if aug.crop_padding:
            x = _random_crop(x, aug.crop_padding, generator)
        if aug.flip:
            x = _random_flip(x, generator)
        x = normalize(x, mean, std)
        if aug.rotation:
            x = _random_rotation(x, aug.rotation, generator)
    else:
        x = normalize(x, mean, std)
        if aug.shift:
            shift = torch.randint(-aug.shift, aug.shift + 1, (x.shape[0],), device=x.device, generator=generator)
            idx = (torch.arange(x.shape[-1], device=x.device)[None, :] - shift[:, None]) % x.shape[-1]
            x = torch.gather(x, -1, idx[:, None, :].expand_as(x))
    if aug.jitter:
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        u = (torch.rand((2, *shape), device=x.device, generator=generator) * 2 - 1) * aug.jitter
        x = x * (1 + u[0]) + u[1]
    if aug.noise:
        x = x + aug.noise * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    return x


class DeviceLoader:
    """Batches over tensors that already live on the device.

    Each epoch draws a permutation on the device; each batch gathers its rows, augments and normalises them. With
    ``drop_last`` every batch has exactly ``batch_size`` rows (large-batch training keeps its batch size fixed).

    >>> x = torch.randint(0, 255, (10, 3, 8, 8), dtype=torch.uint8)
    >>> loader = DeviceLoader(x, torch.arange(10), batch_size=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    >>> [tuple(xb.shape) for xb, _ in loader]
    [(4, 3, 8, 8), (4, 3, 8, 8)]
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        augment: Augment | None = None,
        generator: torch.Generator | None = None,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size}")
        if drop_last and batch_size > len(x):
            raise ValueError(f"Invalid batch_size: {batch_size} (larger than the {len(x)} training examples)")
        self.x, self.y = x, y
        self.batch_size = batch_size
        shape = (1, -1) + (1,) * (x.ndim - 2)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(shape)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(shape)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.augment = augment
        self.generator = generator
        self.channels_last = channels_last and x.ndim == 4

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for xb, yb in self.raw_batches():
            yield self.transform(xb), yb

    def raw_batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of raw (not yet augmented or normalised) rows; for several views of each batch."""
        n = len(self.x)
        order = torch.randperm(n, device=self.x.device, generator=self.generator) if self.shuffle else None
        for i in range(len(self)):
            start = i * self.batch_size
            if order is None:
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            else:
                idx = order[start : start + self.batch_size]
                yield self.x[idx], self.y[idx]

    def transform(self, xb: Tensor) -> Tensor:
        """Augment (when configured) and normalise one batch of raw rows."""
        if self.augment is not None:
            xb = augment_batch(xb, self.augment, self.mean, self.std, self.generator)
        else:
            xb = normalize(xb, self.mean, self.std)
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb
