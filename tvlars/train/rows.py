"""What each epoch reports: the best-so-far numbers a trial tracks (:class:`Best`) and the row built from the epoch's
host values (:func:`epoch_row`), keyed by :class:`~tvlars.train.metrics.Metric`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .metrics import Metric

__all__ = ["Best", "epoch_row", "plain_keys"]


@dataclass
class Best:
    """The best-so-far numbers over a trial's epochs (saved with its state, so a resumed trial carries them on)."""

    test: float = -math.inf  # best test accuracy (the paper's protocol)
    val: float = -math.inf  # best validation accuracy
    test_at_val: float | None = None  # test accuracy at the first epoch of the best validation accuracy

    def update(self, test_acc: float, val_acc: float | None) -> None:
        """Take in one epoch's accuracies (a non-finite one changes nothing; the first epoch of the best wins ties)."""
        self.test = max(self.test, test_acc) if math.isfinite(test_acc) else self.test
        if val_acc is not None and math.isfinite(val_acc) and val_acc > self.val:
            self.val, self.test_at_val = val_acc, test_acc


def plain_keys(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row with plain ``str`` keys (the same JSON): a trial's state holds rows, and is read back with
    ``torch.load(weights_only=True)``, which loads no enum."""
    return {str(k): v for k, v in row.items()}


def epoch_row(
    epoch: int,
    *,
    step: int,
    train_loss: float,
    measured: Mapping[str, Any],
    best: Best,
    lr: float,
    phi: float | None,
    mean_trust_ratio: float | None,
    images_per_s: float,
    epoch_seconds: float,
    diverged: bool,
    device: str,
) -> dict[str, Any]:
    """One epoch's row, as ``run`` reports it.

    ``measured`` is what the task's ``evaluate`` returned, read to the host: ``test_acc``, and where the task
    measured them ``test_loss``, ``val_acc`` and ``val_loss``, plus any keys of the task's own (reported as they
    are, last). ``best`` has taken in this epoch's accuracies. The validation keys are present only when the task
    measured ``val_acc``.
    """
    measured = dict(measured)
    test_acc = measured.pop(Metric.TEST_ACC)
    validation: dict[str, Any] = {}
    if Metric.VAL_ACC in measured:
        validation = {
            Metric.VAL_LOSS: measured.pop(Metric.VAL_LOSS, None),
            Metric.VAL_ACC: measured.pop(Metric.VAL_ACC),
            Metric.BEST_VAL_ACC: best.val if math.isfinite(best.val) else None,
            Metric.TEST_ACC_AT_BEST_VAL: best.test_at_val,
        }
    row = {
        Metric.EPOCH: epoch,
        Metric.STEP: step,
        Metric.TRAIN_LOSS: train_loss,
        **validation,
        Metric.TEST_LOSS: measured.pop(Metric.TEST_LOSS, None),
        Metric.TEST_ACC: test_acc,
        Metric.BEST_TEST_ACC: best.test if math.isfinite(best.test) else None,
        Metric.LR: lr,
        Metric.PHI: phi,
        Metric.MEAN_TRUST_RATIO: mean_trust_ratio,
        Metric.IMAGES_PER_S: images_per_s,
        Metric.EPOCH_SECONDS: epoch_seconds,
        Metric.DIVERGED: diverged,
        Metric.DEVICE: device,
        **measured,
    }
    return plain_keys(row)
