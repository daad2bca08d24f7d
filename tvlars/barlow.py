"""Barlow Twins (Zbontar et al., ICML 2021): the self-supervised workload of the TVLARS paper, and its linear probe."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["BarlowTwins", "barlow_twins_loss", "linear_probe", "ridge_probe_accuracy"]


def barlow_twins_loss(z1: Tensor, z2: Tensor, off_diagonal_weight: float = 0.005, shares: int = 1) -> Tensor:
    r"""The Barlow Twins loss of two embeddings of the same batch, (N, D) each.

    .. math::
        \mathcal{L} = \sum_i (1 - C_{ii})^2 + \lambda \sum_i \sum_{j \ne i} C_{ij}^2,
        \quad C = \tilde z_1^\top \tilde z_2 / N

    where :math:`\tilde z` is :math:`z` standardised along the batch. Identical embeddings give a zero on-diagonal
    term; decorrelated features give a zero off-diagonal term. With ``shares > 1`` each of that many equal shares of
    the batch is standardised on its own and their cross-correlations summed, as the official loss does over GPUs
    (per-GPU BatchNorm of z, then an all-reduce of :math:`C`).
    """
    n = z1.shape[0]

    def standardise(z: Tensor) -> Tensor:
        parts = z.tensor_split(min(shares, len(z)))
        return torch.cat([(p - p.mean(0)) / p.std(0, unbiased=False).clamp_min(1e-6) for p in parts])

    z1, z2 = standardise(z1), standardise(z2)
    c = (z1.T @ z2) / n
    diag = torch.diagonal(c)
    on_diag = (diag - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - diag.pow(2).sum()
    return on_diag + off_diagonal_weight * off_diag


class BarlowTwins(nn.Module):
    """A backbone (any model with ``features(x)`` and ``num_features``) with the Barlow Twins projector."""

    def __init__(self, backbone: nn.Module, projector_dims: Sequence[int] = (512, 512, 512)) -> None:
        super().__init__()
        self.backbone = backbone
        dims = [backbone.num_features, *projector_dims]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 2):
            layers += [nn.Linear(dims[i], dims[i + 1], bias=False), nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(dims[-2], dims[-1], bias=False))
        self.projector = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.projector(self.backbone.features(x))


def ridge_probe_accuracy(
    train_f: Tensor, train_y: Tensor, test_f: Tensor, test_y: Tensor, num_classes: int, ridge: float = 1e-2
) -> Tensor:
    """Test accuracy of a closed-form ridge regression onto one-hot labels: a fast per-epoch probe.

    Returns a 0-d tensor on the features' device (no host read).
    """
    mean, std = train_f.mean(0), train_f.std(0).clamp_min(1e-6)
    a = torch.nn.functional.pad((train_f - mean) / std, (0, 1), value=1.0).double()
    t = torch.nn.functional.one_hot(train_y, num_classes).double()
    gram = a.T @ a + ridge * len(a) * torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
    w = torch.linalg.solve(gram, a.T @ t)
    b = torch.nn.functional.pad((test_f - mean) / std, (0, 1), value=1.0).double()
    return ((b @ w).argmax(1) == test_y).float().mean()


def linear_probe(
    train_features: Callable[[Tensor], Tensor],
    train_y: Tensor,
    evals: dict[str, tuple[Tensor, Tensor]],
    num_classes: int,
    *,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 0.3,
    weight_decay: float = 5e-4,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Train a linear classifier on frozen features with SGD (momentum 0.9) and a per-step cosine schedule.

    The official protocol's defaults (100 epochs, lr 0.3, weight decay 5e-4, batch 256). ``train_features(rows)``
    gives the features of those training rows (the caller may augment them each time); ``evals`` maps a split's
    name to its fixed ``(features, labels)``. Returns ``(final, best)``: each split's accuracy after the last epoch
    and its best over epochs, as 0-d tensors on the labels' device (no host read).
    """
    first = train_features(torch.arange(min(2, len(train_y)), device=train_y.device))
    head = nn.Linear(first.shape[1], num_classes).to(train_y.device)
    head.weight.data.normal_(0.0, 0.01)  # the official probe's initialisation
    head.bias.data.zero_()
    steps_per_epoch = max(1, math.ceil(len(train_y) / batch_size))
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    best = {name: torch.zeros((), device=train_y.device) for name in evals}
    final = dict(best)
    for _ in range(epochs):
        order = torch.randperm(len(train_y), device=train_y.device, generator=generator)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            loss = nn.functional.cross_entropy(head(train_features(idx)), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            for name, (f, y) in evals.items():
                final[name] = (head(f).argmax(1) == y).float().mean()
                best[name] = torch.maximum(best[name], final[name])
    return final, best
