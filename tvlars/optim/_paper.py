"""The TVLARS paper's sweeps (CIFAR-10, ResNet-18, 100 epochs): the grids its optimizers' reference points come from.

The paper presets (``search_spaces/paper-cifar10-resnet18-bs*.yaml``) run these grids; a test checks they agree.
"""

from __future__ import annotations

import math

__all__ = ["BATCH_SIZES", "LAMB_LR", "LARS_WARMUP_LR", "TVLARS_LAM", "TVLARS_LR", "paper_steps"]

BATCH_SIZES = (512, 1024, 2048, 4096, 8192, 16384, 32768)
#: TVLARS's LR grid (KhoiDOO/tvlars script/tvlars/script.json); LARS without warm-up sweeps the same ('non-warm').
TVLARS_LR = {
    512: (1.0, 2.0, 3.0),
    1024: (5.0, 8.0, 10.0),
    2048: (10.0, 12.0, 15.0),
    4096: (12.0, 15.0, 17.0, 20.0),
    8192: (12.0, 15.0, 17.0, 20.0, 25.0, 30.0),
    16384: (12.0, 15.0, 17.0, 20.0, 25.0, 30.0, 35.0),
    32768: (12.0, 15.0, 17.0, 20.0, 25.0, 30.0, 35.0),
}
_LAM = (1e-6, 1e-5, 1e-4, 1e-3, 5e-3, 1e-2, 5e-2)
#: TVLARS's λ grid: to 1e-3 at 512, 5e-3 at 1024, 1e-2 at 2048, 5e-2 beyond.
TVLARS_LAM = {bs: _LAM[: {512: 4, 1024: 5, 2048: 6}.get(bs, 7)] for bs in BATCH_SIZES}
#: LARS with warm-up: a base LR per 256 examples, the same at every batch size ('warm').
LARS_WARMUP_LR = {bs: (0.1, 0.3, 0.5) for bs in BATCH_SIZES}
#: LAMB: the repository has no sweep; this grid is ours.
LAMB_LR = {bs: (0.005, 0.01, 0.02) for bs in BATCH_SIZES}
#: The paper's runs: 100 epochs over CIFAR-10's 50 000 training rows.
_EPOCHS, _TRAIN_ROWS = 100, 50_000


def paper_steps(batch_size: int) -> int:
    """The optimizer steps of a paper run at ``batch_size`` (the last partial batch is a step)."""
    return _EPOCHS * math.ceil(_TRAIN_ROWS / batch_size)
