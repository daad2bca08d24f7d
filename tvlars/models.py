"""Models of the TVLARS paper's workloads, without torchvision.

ResNet-18/34/50 in two stems: ``"cifar"`` (3×3 stride-1 stem, no max-pool: the usual choice for 32×32 inputs) and
``"imagenet"`` (7×7 stride-2 stem and 3×3 max-pool: torchvision's layout, which the official code trains on CIFAR).
Parameter names and shapes follow torchvision's ResNet, so its state dicts load into ``stem="imagenet"`` models.
Plus a small CNN and an MLP for CPU-sized data (MNIST-1D, digits).

Models are a registry (:mod:`tvlars.registry`): the built-ins register with :func:`register_model` like any user
code, and an installed distribution adds its own through the ``tvlars.models`` entry-point group. A builder is
``build(input_shape, num_classes, **options) -> nn.Module``; its keyword parameters are the options a trial's
``model_options`` may set. A model the Barlow Twins task pretrains also needs ``features(x)`` and ``num_features``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated

import torch
from torch import Tensor, nn

from .registry import Bounds, Registry

__all__ = [
    "MLP",
    "MODELS",
    "ResNet",
    "SmallCNN",
    "build_model",
    "list_models",
    "register_model",
    "resnet18",
    "resnet34",
    "resnet50",
]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # stride on the 3x3, as torchvision v1.5
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_planes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class ResNet(nn.Module):
    """A ResNet whose ``features(x)`` is the pooled representation (Barlow Twins' backbone) and ``fc`` the head."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        num_classes: int = 10,
        stem: str = "cifar",
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            raise ValueError(f"Invalid stem: {stem!r} (choose from 'cifar', 'imagenet')")
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        in_planes = 64
        stages = []
        for i, (planes, n_blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            blocks = []
            for j in range(n_blocks):
                blocks.append(block(in_planes, planes, 2 if (i > 0 and j == 0) else 1))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = in_planes
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def resnet18(num_classes: int = 10, stem: str = "cifar", in_channels: int = 3) -> ResNet:
    """ResNet-18 (11.17M parameters with the CIFAR stem and 10 classes)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, stem, in_channels)


def resnet34(num_classes: int = 10, stem: str = "cifar", in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, stem, in_channels)


def resnet50(num_classes: int = 10, stem: str = "cifar", in_channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, stem, in_channels)


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head; for 1-D signals (MNIST-1D) or small images (digits)."""

    def __init__(self, num_classes: int, in_channels: int = 1, dims: int = 2, width: int = 32) -> None:
        super().__init__()
        conv, bn, pool = (
            (nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d)
            if dims == 1
            else (
                nn.Conv2d,
                nn.BatchNorm2d,
                nn.AdaptiveAvgPool2d,
            )
        )
        self.body = nn.Sequential(
            conv(in_channels, width, 3, padding=1, bias=False),
            bn(width),
            nn.ReLU(inplace=True),
            conv(width, 2 * width, 3, stride=2, padding=1, bias=False),
            bn(2 * width),
            nn.ReLU(inplace=True),
            pool(1),
            nn.Flatten(),
        )
        self.num_features = 2 * width
        self.fc = nn.Linear(2 * width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(x))


class MLP(nn.Module):
    """A ReLU MLP over flattened inputs."""

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        self.body = nn.Sequential(*layers)
        self.num_features = width
        self.fc = nn.Linear(width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(x))


#: Every model by name: the built-ins below and the ``tvlars.models`` entry points of installed distributions.
MODELS = Registry("model", "tvlars.models", leading=2)


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`, built-in and installed plugins, sorted."""
    return MODELS.names()


def register_model(name: str, build: Callable[..., nn.Module]) -> None:
    """Make ``build(input_shape, num_classes, **options) -> nn.Module`` available as model ``name``.

    Its keyword parameters after ``num_classes`` are the options (and defaults) a trial's ``model_options`` may
    set. A name already taken, by a built-in or a plugin, is a :class:`~tvlars.registry.PluginError`.
    """
    MODELS.register(name, build)


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **options: object) -> nn.Module:
    """A model by name for inputs of ``input_shape`` (C, H, W) or (C, L), without the batch dimension."""
    entry = MODELS.get(name)
    MODELS.check_options(name, options)
    model = entry.obj(tuple(input_shape), num_classes, **options)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {name!r} ({entry.source}) returned {type(model).__name__}, not torch.nn.Module")
    return model


def _images(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3:
        raise ValueError(f"Invalid model: {name} needs images (C, H, W), got inputs of shape {tuple(input_shape)}")


def _build_resnet18(input_shape: tuple[int, ...], num_classes: int, *, stem: str = "cifar") -> nn.Module:
    """ResNet-18; stem "cifar" (3x3, no max-pool) or "imagenet" (torchvision's 7x7 + max-pool)."""
    _images("resnet18", input_shape)
    return resnet18(num_classes, stem, in_channels=input_shape[0])


def _build_resnet34(input_shape: tuple[int, ...], num_classes: int, *, stem: str = "cifar") -> nn.Module:
    """ResNet-34; stem "cifar" (3x3, no max-pool) or "imagenet" (torchvision's 7x7 + max-pool)."""
    _images("resnet34", input_shape)
    return resnet34(num_classes, stem, in_channels=input_shape[0])


def _build_resnet50(input_shape: tuple[int, ...], num_classes: int, *, stem: str = "cifar") -> nn.Module:
    """ResNet-50; stem "cifar" (3x3, no max-pool) or "imagenet" (torchvision's 7x7 + max-pool)."""
    _images("resnet50", input_shape)
    return resnet50(num_classes, stem, in_channels=input_shape[0])


def _build_cnn(
    input_shape: tuple[int, ...], num_classes: int, *, width: Annotated[int, Bounds(ge=1, le=4096)] = 32
) -> nn.Module:
    """Two conv blocks and a linear head, 1-D or 2-D by the input's shape."""
    return SmallCNN(num_classes, in_channels=input_shape[0], dims=len(input_shape) - 1, width=width)


def _build_mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    hidden: Annotated[Sequence[int], Bounds(ge=1, le=65_536, max_length=64)] = (256, 256),
) -> nn.Module:
    """A ReLU MLP over flattened inputs; hidden: the widths of its hidden layers."""
    return MLP(int(torch.Size(input_shape).numel()), num_classes, tuple(hidden))


for _name, _build in (
    ("cnn", _build_cnn),
    ("mlp", _build_mlp),
    ("resnet18", _build_resnet18),
    ("resnet34", _build_resnet34),
    ("resnet50", _build_resnet50),
):
    register_model(_name, _build)
