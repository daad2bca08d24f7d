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

__all__ = ["Augment", "DeviceLoader", "augment_batch", "barlow_twins_views", "normalize"]


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


def _uniform(n: int, low: float, high: float, x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, device=x.device, generator=generator) * (high - low) + low


def _chance(n: int, p: float, x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, device=x.device, generator=generator) < p


def _random_resized_crop_flip(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """RandomResizedCrop(scale 0.08–1, ratio 3/4–4/3) to the input size and a flip with p 1/2, as one bicubic warp."""
    n = x.shape[0]
    area = _uniform(n, 0.08, 1.0, x, generator)
    log_ratio = _uniform(n, math.log(3 / 4), math.log(4 / 3), x, generator)
    w = (area * log_ratio.exp()).sqrt().clamp(max=1.0)  # crop width and height as fractions of the side
    h = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, device=x.device, generator=generator) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, device=x.device, generator=generator) * 2 - 1) * (1 - h)
    flip = torch.where(_chance(n, 0.5, x, generator), -1.0, 1.0)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([w * flip, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bicubic", padding_mode="border", align_corners=False).clamp_(0.0, 1.0)


def _gray(x: Tensor) -> Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)


def _color_jitter(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """ColorJitter(brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1) in a fixed order, on RGB in [0, 1]."""
    n = x.shape[0]
    shape = (n, 1, 1, 1)
    x = (x * _uniform(n, 0.6, 1.4, x, generator).view(shape)).clamp(0, 1)
    mean = _gray(x).mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * _uniform(n, 0.6, 1.4, x, generator).view(shape) + mean).clamp(0, 1)
    gray = _gray(x)
    x = ((x - gray) * _uniform(n, 0.8, 1.2, x, generator).view(shape) + gray).clamp(0, 1)
    # hue: a rotation of the chroma plane (YIQ), by up to ±0.1 of a turn
    angle = _uniform(n, -0.1, 0.1, x, generator) * 2 * math.pi
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    yiq = torch.einsum("ij,njhw->nihw", to_yiq, x)
    cos, sin = angle.cos().view(n, 1, 1), angle.sin().view(n, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], 1)
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(to_yiq), yiq).clamp(0, 1)


def _gaussian_blur(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Gaussian blur with sigma uniform in [0.1, 2] per image (PIL's GaussianBlur(radius=sigma) in the official)."""
    n, c, h, w = x.shape
    sigma = _uniform(n, 0.1, 2.0, x, generator)
    radius = min(6, (min(h, w) - 1) // 2)
    k = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(k[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n·c, K)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def _bt_view(
    x: Tensor, blur_p: float, solarize_p: float, mean: Tensor, std: Tensor, generator: torch.Generator | None
) -> Tensor:
    n = x.shape[0]
    rows = (n, 1, 1, 1)
    colour = x.dtype == torch.uint8  # photometric ops need [0, 1] values; float inputs get the geometric ones
    x = x.float().div(255.0) if colour else x.float()
    x = _random_resized_crop_flip(x, generator) if colour else _random_resized_crop_flip(x.clamp(0, 1), generator)
    if colour and x.shape[1] == 3:
        x = torch.where(_chance(n, 0.8, x, generator).view(rows), _color_jitter(x, generator), x)
        x = torch.where(_chance(n, 0.2, x, generator).view(rows), _gray(x), x)
    if blur_p > 0:
        x = torch.where(_chance(n, blur_p, x, generator).view(rows), _gaussian_blur(x, generator), x)
    if colour and solarize_p > 0:
        x = torch.where(_chance(n, solarize_p, x, generator).view(rows), torch.where(x >= 0.5, 1.0 - x, x), x)
    return (x - mean) / std


def barlow_twins_views(
    x: Tensor, mean: Tensor, std: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """The official Barlow Twins augmentations on the device: two asymmetric, normalised views of a raw batch.

    Both views: random resized crop (scale 0.08–1) and flip, colour jitter (p 0.8), grayscale (p 0.2). The first
    view is always blurred and never solarised; the second is blurred with p 0.1 and solarised with p 0.2 (the
    official ``Transform`` / ``transform_prime``). ``x`` is uint8 (N, C, H, W); float inputs (already in [0, 1])
    get the geometric and blur ops only. ``mean``/``std`` are (1, C, 1, 1).
    """
    return _bt_view(x, 1.0, 0.0, mean, std, generator), _bt_view(x, 0.1, 0.2, mean, std, generator)


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
