"""What a trial reports and what it leaves in Optuna: one vocabulary for the trainable that writes it, the searcher
that records it, and the queries (and comparisons) that read it back.

- :class:`EpochReport`: the result a trial sends to Ray Tune each epoch (and once more if it fails): the trainer's
  row (metrics by name) and the facts of the run (attempt, restore, clone, where it ran). ``to_result`` flattens it
  for ``tune.report``; ``from_result`` reads it back on the driver.
- :class:`TrialAttr` and :class:`StudyAttr`: the Optuna user attribute keys a trial and a study carry;
  :class:`FailKind`: why a trial is FAIL (the value of ``TrialAttr.FAIL_KIND``).
- :func:`curves` and :func:`summary`: what the searcher stores at a trial's end, from its epoch reports.

No other module spells an attribute key as a string (``tests/unit/test_attribute_keys.py`` greps for it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from tvlars.train.metrics import CURVES, SUMMARIES, Metric

__all__ = [
    "BOARD_ATTRS",
    "SUMMARY_ATTRS",
    "SUMMARY_METRICS",
    "EpochReport",
    "FailKind",
    "StudyAttr",
    "TrialAttr",
    "curves",
    "summary",
]


class TrialAttr(StrEnum):
    """A trial's user attribute keys in Optuna."""

    # where and how it ran
    RAY_TRIAL_ID = "ray_trial_id"
    NODE_ID = "node_id"  # the Ray node it ran on (the last one, if it moved)
    HOSTNAME = "hostname"
    DEVICE = Metric.DEVICE
    ENQUEUED = "enqueued"  # a config the spec enqueued, not the sampler's
    DRIVER = "driver"  # the worker (driver) that asked for the trial, or continued it
    TOLD_BY = "told_by"  # the driver that told Optuna how the trial ended (a fenced driver never does)
    SEED = "train_seed"  # the seed it trained with (data order, initial weights): checkable from storage alone
    # restarts, checkpoints and PBT
    RESTARTS = "restarts"
    RESUMED_FROM_EPOCH = "resumed_from_epoch"
    CHECKPOINT = "checkpoint"  # {"uri", "epoch"} of a running trial's latest checkpoint; None once it ended
    PBT_LINEAGE = "pbt_lineage"  # [{"epoch", "cloned_from_trial", "new_params"}]
    # how it ended
    FAIL_KIND = "fail_kind"
    FAIL_REASON = "fail_reason"
    TRACEBACK = "traceback"
    DIVERGED = Metric.DIVERGED
    # its summary, stored at the end: each metric's under the metric's name
    CURVES = "curves"  # {"epoch": [...], each of tvlars.train.metrics.CURVES: [...]}
    EPOCHS_RUN = Metric.EPOCHS_RUN
    BEST_VAL_ACC = Metric.BEST_VAL_ACC
    TEST_ACC_AT_BEST_VAL = Metric.TEST_ACC_AT_BEST_VAL
    BEST_TEST_ACC = Metric.BEST_TEST_ACC
    FINAL_TEST_ACC = Metric.FINAL_TEST_ACC
    IMAGES_PER_S = Metric.IMAGES_PER_S  # the mean over its epochs
    WALL_SECONDS = Metric.WALL_SECONDS
    TRAIN_SECONDS = "train_seconds"  # the trainer's time in its epochs (training + evaluation, not data loading)


class StudyAttr(StrEnum):
    """A study's attribute keys in Optuna (user attrs, and the system attr of the driver's lease)."""

    SPEC = "spec"  # the canonical spec: a name run again with another spec is refused
    LEASE = "tvlars-tune:driver"  # system attr: which driver runs the study, and its heartbeat


class FailKind(StrEnum):
    """Why a trial is FAIL (``TrialAttr.FAIL_KIND``). Only ``ERROR`` counts against ``budget.max_failed``."""

    ERROR = "error"  # the trial raised: bad hyperparameters, missing data, a bug
    INFRASTRUCTURE = "infrastructure"  # Ray gave up on it after retries (worker killed, node lost)
    CANCELLED = "cancelled"  # stopped by a cancel request
    ORPHANED = "orphaned"  # left RUNNING by a driver that died
    NOT_FINITE = "not_finite"  # finished, but its objective is NaN/inf


#: The attribute keys of a trial's summary numbers (:data:`tvlars.train.metrics.SUMMARIES`): validation (what a
#: study selects on) beside test (what is reported).
SUMMARY_METRICS = tuple(TrialAttr(m) for m in SUMMARIES)
#: What a leaderboard row shows beside the objective.
BOARD_ATTRS = (*SUMMARY_METRICS, TrialAttr.FINAL_TEST_ACC, TrialAttr.DIVERGED, TrialAttr.WALL_SECONDS)
#: User attrs shown with each trial (curves only when asked: they are the bulk of a trial's data).
SUMMARY_ATTRS = (
    TrialAttr.FAIL_KIND,
    TrialAttr.FAIL_REASON,
    TrialAttr.DIVERGED,
    TrialAttr.EPOCHS_RUN,
    *SUMMARY_METRICS,
    TrialAttr.FINAL_TEST_ACC,
    TrialAttr.IMAGES_PER_S,
    TrialAttr.WALL_SECONDS,
    TrialAttr.DEVICE,
    TrialAttr.ENQUEUED,
    TrialAttr.SEED,
)
#: Characters of a failure's reason kept (``TrialAttr.FAIL_REASON``).
MAX_REASON_CHARS = 2000


@dataclass
class EpochReport:
    """One result a trial sends to Ray Tune.

    ``metrics`` is the trainer's row for the epoch (``tvlars.train``'s ``report``: ``val_acc``, ``test_acc``,
    ``best_val_acc``, ``test_acc_at_best_val``, ``lr``, ``phi``, ``images_per_s``, ``device``, ``diverged``, ...);
    the other fields are what the trainable adds. ``epoch`` is None only in a result that is not the trial's (Ray
    Tune's own bookkeeping).
    """

    epoch: int | None
    metrics: dict[str, Any] = field(default_factory=dict)
    final: bool = False  # the trial's last result: its last epoch, a divergence or an error
    attempt: str | None = None  # a token per start of the trial's function: a new one means it started again
    wall_seconds: float | None = None  # since this attempt started
    node_id: str | None = None
    hostname: str | None = None
    resumed_from_epoch: int | None = None  # it continued from a checkpoint saved after this epoch
    cloned_from: str | None = None  # the Ray trial id whose state a scheduler gave it (PBT's exploit)
    new_params: dict[str, Any] | None = None  # with ``cloned_from``: the clone's own hyperparameters
    restored_history: list[dict[str, Any]] | None = None  # trainer rows before the restore, sent once
    error: str | None = None  # the trial raised: ``"Type: message"``
    traceback: str | None = None

    @property
    def diverged(self) -> bool:
        return bool(self.metrics.get(Metric.DIVERGED))

    def value(self, name: str) -> Any:
        """A metric by name (an objective may also be ``wall_seconds``, this report's fact)."""
        if name == Metric.WALL_SECONDS:
            return self.wall_seconds
        return self.metrics.get(name)

    def to_result(self) -> dict[str, Any]:
        """The flat dict ``tune.report`` takes, with plain ``str`` keys (Tune flattens nested dicts, so the clone's
        params go as JSON under ``params``)."""
        facts = {name: getattr(self, name) for name in _FACTS}
        facts[_PARAMS] = json.dumps(self.new_params) if self.new_params is not None else None
        return {**self.metrics, Metric.EPOCH.value: self.epoch, **{k: v for k, v in facts.items() if v is not None}}

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> EpochReport:
        """A result as the driver gets it (Tune adds keys of its own; they stay in ``metrics``)."""
        row = dict(result)
        params = row.pop(_PARAMS, None)
        facts = {name: row.pop(name, None) for name in _FACTS}
        return cls(
            epoch=row.pop(Metric.EPOCH, None),
            metrics=row,
            final=bool(facts.pop("final")),
            new_params=json.loads(params) if isinstance(params, str) else params,
            **facts,
        )


#: The facts a result carries beside the trainer's row: the fields after ``metrics``, each under its own name
#: (``new_params`` as JSON, under :data:`_PARAMS`).
_NAMES = [f.name for f in fields(EpochReport)]
_FACTS = tuple(name for name in _NAMES[_NAMES.index("metrics") + 1 :] if name != "new_params")
_PARAMS = "params"


def curves(reports: Sequence[EpochReport]) -> dict[str, list[Any]]:
    """``TrialAttr.CURVES``: ``epoch`` and each of :data:`tvlars.train.metrics.CURVES` per reported epoch."""
    return {
        Metric.EPOCH.value: [r.epoch for r in reports],
        **{k.value: [r.metrics.get(k) for r in reports] for k in CURVES},
    }


def summary(reports: Sequence[EpochReport]) -> dict[TrialAttr, Any]:
    """The user attrs stored at a trial's end, from its last report (and its mean throughput)."""
    last = reports[-1]
    speeds = [r.metrics[Metric.IMAGES_PER_S] for r in reports if r.metrics.get(Metric.IMAGES_PER_S)]
    return {
        TrialAttr.EPOCHS_RUN: last.epoch,
        TrialAttr.DIVERGED: last.diverged,
        **{TrialAttr(m): last.metrics.get(m) for m in SUMMARIES},
        TrialAttr.FINAL_TEST_ACC: last.metrics.get(Metric.TEST_ACC),
        TrialAttr.IMAGES_PER_S: sum(speeds) / len(speeds) if speeds else None,
        TrialAttr.WALL_SECONDS: last.wall_seconds,
        TrialAttr.TRAIN_SECONDS: sum(float(r.metrics.get(Metric.EPOCH_SECONDS) or 0.0) for r in reports),
        TrialAttr.DEVICE: last.metrics.get(Metric.DEVICE),
    }
