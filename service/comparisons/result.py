"""A comparison's result as plain dataclasses: what the worker stores and the report draws.

Everything derived (re-run summaries, paired differences, verdicts, compute spent) is computed from the stored
per-trial and per-seed numbers by :mod:`service.comparisons.stats`, never stored twice, so the REST resource, the
HTML page and the Markdown files cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .stats import ComputeSpent, Difference, Summary, Verdict, compute_spent, paired_difference, summarize, verdict

__all__ = ["ArmResult", "ComparisonResult", "RerunRecord", "TrialRecord", "VerdictRecord"]


@dataclass(frozen=True)
class TrialRecord:
    """One tuning trial: its Optuna state (COMPLETE, PRUNED, FAIL), params, objective value, epochs and seconds."""

    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    epochs: int
    wall_seconds: float | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RerunRecord:
    """One re-run of a tuned config on a fresh seed, at full epochs: its final score and per-epoch rows."""

    seed: int
    score: float  # test accuracy at the best validation epoch
    curve: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 1  # which of the top-k configs (1 = the best by validation)


@dataclass
class ArmResult:
    """One optimizer at one batch size: its studies, trials, tuned config, re-runs and parameter importances."""

    label: str
    optimizer: str
    batch_size: int
    studies: list[int | str]  # the service's study ids (the tuning study, then its re-runs)
    best_params: dict[str, Any]
    fixed: dict[str, Any]
    epochs: int  # a full trial's epochs
    steps_per_epoch: int
    trials: list[TrialRecord] = field(default_factory=list)
    reruns: list[RerunRecord] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)

    @property
    def rerun_scores(self) -> dict[int, float]:
        """``{seed: score}`` of the best config's re-runs (rank 1), the numbers every verdict pairs on."""
        return {r.seed: r.score for r in self.reruns if r.rank == 1}

    @property
    def rerun(self) -> Summary | None:
        scores = self.rerun_scores
        return summarize(list(scores.values())) if scores else None

    @property
    def spent(self) -> ComputeSpent:
        return compute_spent([t.epochs for t in self.trials], [t.wall_seconds for t in self.trials])

    @property
    def epochs_spent(self) -> int:
        return self.spent.epochs


@dataclass(frozen=True)
class VerdictRecord:
    """The arm under test against another at one batch size: the paired difference and what it allows."""

    batch_size: int
    arm: str
    against: str
    difference: Difference
    verdict: Verdict


@dataclass
class ComparisonResult:
    """A whole comparison. ``arms[0]``'s label is the arm under test (the comparison spec's first arm)."""

    name: str
    workload: dict[str, Any]
    objective: str
    arms: list[ArmResult]
    state: str = "SUCCEEDED"
    target_val_acc: float | None = None
    title: str | None = None  # the page's title; says "example" for fabricated data
    rerun_metric: str = "test_acc_at_best_val"
    curve_metric: str = "val_acc"

    @property
    def labels(self) -> list[str]:
        """Arm labels in the spec's order, the arm under test first."""
        return list(dict.fromkeys(a.label for a in self.arms))

    @property
    def batch_sizes(self) -> list[int]:
        return sorted({a.batch_size for a in self.arms})

    def arm(self, label: str, batch_size: int) -> ArmResult | None:
        return next((a for a in self.arms if a.label == label and a.batch_size == batch_size), None)

    def verdicts(self) -> list[VerdictRecord]:
        """Per batch size, the first arm against each other arm, on the re-run seeds both have."""
        out = []
        test, *others = self.labels
        for bs in self.batch_sizes:
            mine = self.arm(test, bs)
            for other in others:
                theirs = self.arm(other, bs)
                if mine is None or theirs is None or not (set(mine.rerun_scores) & set(theirs.rerun_scores)):
                    continue
                diff = paired_difference(mine.rerun_scores, theirs.rerun_scores)
                out.append(VerdictRecord(bs, test, other, diff, verdict(diff)))
        return out
