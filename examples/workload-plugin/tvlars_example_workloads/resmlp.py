"""``resmlp``: a residual MLP for tabular inputs (pre-norm blocks: LayerNorm, Linear, GELU, Linear, + skip)."""

from __future__ import annotations

import math

from torch import Tensor, nn


class _Block(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, 2 * width),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(2 * width, width),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResMLP(nn.Module):
    """``features(x)`` and ``num_features`` let the Barlow Twins task pretrain it too."""

    def __init__(self, in_features: int, num_classes: int, width: int, depth: int, dropout: float) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(in_features, width))
        self.blocks = nn.Sequential(*(_Block(width, dropout) for _ in range(depth)), nn.LayerNorm(width))
        self.num_features = width
        self.fc = nn.Linear(width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def build(
    input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 2, dropout: float = 0.0
) -> nn.Module:
    """A residual MLP: width, depth (blocks) and dropout are its options."""
    if width < 1 or depth < 0 or not 0 <= dropout < 1:
        raise ValueError(f"Invalid resmlp options: width={width}, depth={depth}, dropout={dropout}")
    return ResMLP(math.prod(input_shape), num_classes, width, depth, dropout)


__all__ = ["ResMLP", "build"]
