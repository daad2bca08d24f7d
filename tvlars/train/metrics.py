"""What a trial measures, by name: the keys of the trainer's per-epoch row and of its result, spelled once.

The trainer writes its rows keyed by :class:`Metric`; the service's trainable, searcher, queries, comparisons and the
spec's objectives read them by it. Members are ``str`` (a :class:`~enum.StrEnum`), so a row, a stored curve or a
user attribute keyed by a member is the same JSON as one keyed by its name.

- :data:`CURVES`: the per-epoch values a trial keeps as curves (beside ``epoch``), in their stored order.
- :data:`SUMMARIES`: a trial's summary numbers, validation (what a study selects on) beside test (what is reported).
- :data:`VALIDATION`: the metrics read on the validation split (a study without one cannot optimise them).
- :data:`DIRECTIONS`: the metrics a study can optimise, and which way each is better by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

__all__ = ["CURVES", "DIRECTIONS", "SUMMARIES", "VALIDATION", "Metric"]


class Metric(StrEnum):
    """A value a trial reports: each epoch's row (``run``'s ``report``) and, after the last epoch, its result."""

    # each epoch
    EPOCH = "epoch"  # 1-based
    STEP = "step"  # optimizer steps so far
    TRAIN_LOSS = "train_loss"
    VAL_LOSS = "val_loss"
    VAL_ACC = "val_acc"
    BEST_VAL_ACC = "best_val_acc"
    TEST_ACC_AT_BEST_VAL = "test_acc_at_best_val"  # test accuracy at the first epoch of best validation accuracy
    TEST_LOSS = "test_loss"
    TEST_ACC = "test_acc"
    BEST_TEST_ACC = "best_test_acc"  # the paper's protocol: best test accuracy over epochs
    LR = "lr"  # the last param group's LR after the epoch's steps
    PHI = "phi"  # the optimizer's multiplier φ(t) at its latest step (TVLARS)
    MEAN_TRUST_RATIO = "mean_trust_ratio"
    IMAGES_PER_S = "images_per_s"  # training throughput (timed on the device)
    EPOCH_SECONDS = "epoch_seconds"
    DIVERGED = "diverged"
    DEVICE = "device"  # where it trained, e.g. "cpu:2 threads"
    # the result, after the last epoch (beside the last row)
    FINAL_TEST_ACC = "final_test_acc"
    EPOCHS_RUN = "epochs_run"
    WALL_SECONDS = "wall_seconds"  # also each report's, as the service's trainable adds it


#: The per-epoch values kept as curves, beside ``epoch`` (the order is the stored curves' key order).
CURVES: tuple[Metric, ...] = (
    Metric.STEP,
    Metric.TRAIN_LOSS,
    Metric.VAL_LOSS,
    Metric.VAL_ACC,
    Metric.TEST_LOSS,
    Metric.TEST_ACC,
    Metric.LR,
    Metric.PHI,
    Metric.MEAN_TRUST_RATIO,
    Metric.IMAGES_PER_S,
)
#: A trial's summary numbers: validation (what a study selects on) beside test (what is reported).
SUMMARIES: tuple[Metric, ...] = (Metric.BEST_VAL_ACC, Metric.TEST_ACC_AT_BEST_VAL, Metric.BEST_TEST_ACC)
#: The metrics measured on the validation split: absent from a trial with ``val_fraction: 0``.
VALIDATION: tuple[Metric, ...] = (Metric.VAL_ACC, Metric.BEST_VAL_ACC, Metric.VAL_LOSS, Metric.TEST_ACC_AT_BEST_VAL)
#: The metrics a study can optimise, and which way each is better by default.
DIRECTIONS: Mapping[Metric, str] = MappingProxyType(
    {
        Metric.VAL_ACC: "maximize",
        Metric.BEST_VAL_ACC: "maximize",
        Metric.VAL_LOSS: "minimize",
        Metric.TEST_ACC_AT_BEST_VAL: "maximize",
        Metric.TEST_ACC: "maximize",
        Metric.BEST_TEST_ACC: "maximize",
        Metric.TEST_LOSS: "minimize",
        Metric.TRAIN_LOSS: "minimize",
        Metric.WALL_SECONDS: "minimize",
        Metric.IMAGES_PER_S: "maximize",
    }
)
