"""The statistics of a comparison, as pure functions on plain numbers (scipy for the t distribution).

- :func:`summarize` — one arm's re-runs: mean, sample standard deviation (ddof 1) and the 95 % Student-t interval
  ``mean ± t(0.975, n−1) · s/√n``. Few seeds (3 by default) make the normal interval too narrow; t is exact for
  normal noise and the usual choice (DeepOBS, AlgoPerf report seed spread the same way). One seed has no spread
  estimate: std and the interval are ``None``, never a zero-width interval that would look certain.
- :func:`paired_difference` — two arms re-run on the same seeds: the t interval of the per-seed differences. Pairing
  removes what the seed does to both arms (initial weights, data order), so it is narrower than comparing two
  independent intervals, and it only uses seeds both arms have.
- :func:`verdict` — ``better`` when the whole interval is above 0, ``worse`` when below, otherwise
  ``no clear difference`` (including an interval touching 0, and no interval at all): it says only what the
  interval allows.
- :func:`expected_best` — Sivaprasad et al. (ICML 2020) / Dodge et al. (2019): the expected best validation score of
  ``n`` trials drawn at random from the trials seen, exactly, over their empirical distribution
  (``E[max of n] = Σ_i v_(i) · ((i/N)^n − ((i−1)/N)^n)`` over the sorted values), with a bootstrap percentile band
  (resample the N trials with replacement, recompute the curve, take the 2.5 and 97.5 percentiles). It answers
  "how good is this optimizer after n trials of tuning?", the question an equal budget is about.
- :func:`time_to_target` — AlgoPerf's time-to-result: the first epoch a curve reaches a target, in epochs, optimizer
  steps and wall seconds; a curve that never reaches it counts as never (``None``), not as its last epoch.
- :func:`lr_sensitivity` and :func:`compute_spent` — final score against LR (points, and log-spaced bins), and the
  epochs and seconds an arm spent, pruned and failed trials included.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats

__all__ = [
    "CONFIDENCE",
    "ComputeSpent",
    "Difference",
    "ExpectedBest",
    "LRBin",
    "LRSensitivity",
    "Summary",
    "TimeToTarget",
    "Verdict",
    "compute_spent",
    "expected_best",
    "expected_max",
    "lr_sensitivity",
    "paired_difference",
    "summarize",
    "t_interval",
    "time_to_target",
    "verdict",
]

#: Every interval in a comparison is a 95 % one.
CONFIDENCE = 0.95


class Verdict(str, Enum):
    """What a paired difference's interval allows one to say about the arm under test against another."""

    BETTER = "better"
    NO_CLEAR_DIFFERENCE = "no clear difference"
    WORSE = "worse"


@dataclass(frozen=True)
class Summary:
    """One arm's re-run scores: ``std``, ``ci_low`` and ``ci_high`` are ``None`` for a single seed."""

    n_seeds: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Difference:
    """Arm a minus arm b on the seeds both have: mean and std of the per-seed differences, their t interval."""

    n_pairs: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    seeds: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seeds": list(self.seeds)}


@dataclass(frozen=True)
class ExpectedBest:
    """Expected best score against number of trials ``n`` (1..n_max), its bootstrap band, and the observed best."""

    n: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    observed: list[float]  # the running best in trial order: what this one search actually found

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TimeToTarget:
    """When a curve first reached the target: 1-based epoch, optimizer steps, wall seconds (``None`` if unknown)."""

    epochs: int
    steps: int | None
    wall_seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LRBin:
    """Trials whose LR fell in ``[lr_low, lr_high)``: how many, and their median and best score."""

    lr_low: float
    lr_high: float
    count: int
    median: float | None
    best: float | None


@dataclass(frozen=True)
class LRSensitivity:
    """Score against LR: every trial as a point (sorted by LR), and log-spaced bins."""

    lrs: list[float]
    values: list[float]
    bins: list[LRBin]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ComputeSpent:
    """What an arm spent: trials started, epochs trained and wall seconds, pruned and failed trials included."""

    n_trials: int
    epochs: int
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float | None, float | None]:
    """``(mean, low, high)``: the Student-t interval of the mean; ``None`` bounds for fewer than 2 values."""
    x = _finite_array(values)
    mean = float(x.mean())
    if x.size < 2:
        return mean, None, None
    half = float(_scipy_stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean, std (ddof 1) and t interval of one arm's re-run scores; one value gives no std and no interval."""
    x = _finite_array(values)
    mean, low, high = t_interval(x, confidence)
    std = float(x.std(ddof=1)) if x.size >= 2 else None
    return Summary(n_seeds=int(x.size), mean=mean, std=std, ci_low=low, ci_high=high)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], confidence: float = CONFIDENCE) -> Difference:
    """``a − b`` seed by seed on the seeds both have (``{seed: score}``), with the t interval of the differences."""
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        raise ValueError("no seed in common: a paired difference needs both arms re-run on the same seeds")
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    s = summarize(diffs, confidence)
    return Difference(n_pairs=len(seeds), mean=s.mean, std=s.std, ci_low=s.ci_low, ci_high=s.ci_high, seeds=seeds)


def verdict(diff_ci: Difference | tuple[float | None, float | None]) -> Verdict:
    """``better`` if the interval lies above 0, ``worse`` if below, else ``no clear difference``."""
    low, high = (diff_ci.ci_low, diff_ci.ci_high) if isinstance(diff_ci, Difference) else diff_ci
    if low is None or high is None:
        return Verdict.NO_CLEAR_DIFFERENCE
    if low > 0:
        return Verdict.BETTER
    if high < 0:
        return Verdict.WORSE
    return Verdict.NO_CLEAR_DIFFERENCE


def expected_max(values: Sequence[float], n: int | Sequence[int]) -> np.ndarray:
    """The exact expected maximum of ``n`` draws with replacement from ``values``, for each ``n``."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    size = v.size
    if size == 0:
        raise ValueError("no values")
    ns = np.atleast_1d(np.asarray(n, dtype=np.float64))
    cdf = np.arange(1, size + 1, dtype=np.float64) / size
    prev = np.arange(0, size, dtype=np.float64) / size
    weights = cdf[None, :] ** ns[:, None] - prev[None, :] ** ns[:, None]  # P(max of n is the i-th smallest)
    return weights @ v


def expected_best(
    values_in_trial_order: Sequence[float | None],
    n_max: int | None = None,
    n_boot: int = 1000,
    rng: np.random.Generator | int | None = None,
    *,
    confidence: float = CONFIDENCE,
    failed_value: float = 0.0,
) -> ExpectedBest:
    """Expected best score after ``n`` trials, ``n`` = 1..n_max (default: the number of trials), with a band.

    A failed trial (``None`` or NaN) is a draw that found nothing: it scores ``failed_value`` (0 accuracy), so an
    arm whose trials fail pays for them, as its budget did.
    """
    if n_boot < 1:
        raise ValueError(f"Invalid n_boot: {n_boot}")
    v = np.array(
        [failed_value if x is None or not math.isfinite(x) else float(x) for x in values_in_trial_order],
        dtype=np.float64,
    )
    if v.size == 0:
        raise ValueError("no trials")
    n_max = v.size if n_max is None else n_max
    if n_max < 1:
        raise ValueError(f"Invalid n_max: {n_max}")
    ns = np.arange(1, n_max + 1)
    mean = expected_max(v, ns)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    boot = np.stack([expected_max(gen.choice(v, size=v.size, replace=True), ns) for _ in range(n_boot)])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail], axis=0)
    observed = np.maximum.accumulate(v).tolist()
    return ExpectedBest(n=ns.tolist(), mean=mean.tolist(), low=low.tolist(), high=high.tolist(), observed=observed)


def time_to_target(
    curves: Sequence[Sequence[Mapping[str, Any]]],
    target: float,
    *,
    metric: str = "val_acc",
    steps_per_epoch: int | None = None,
) -> list[TimeToTarget | None]:
    """For each curve (per-epoch report rows), when ``metric`` first reached ``target``; ``None``: never.

    Steps come from the row's ``step`` (the trainer's cumulative count), else ``epoch × steps_per_epoch``. Wall
    seconds are the row's cumulative ``wall_seconds`` if present, else the sum of ``epoch_seconds`` up to that epoch.
    """
    out: list[TimeToTarget | None] = []
    for curve in curves:
        hit: TimeToTarget | None = None
        seconds: float | None = 0.0
        for row in curve:
            if seconds is not None:
                seconds = seconds + float(row["epoch_seconds"]) if row.get("epoch_seconds") is not None else None
            value = row.get(metric)
            if value is None or not math.isfinite(float(value)) or float(value) < target:
                continue
            epoch = int(row["epoch"])
            if row.get("step") is not None:
                steps: int | None = int(row["step"])
            else:
                steps = epoch * steps_per_epoch if steps_per_epoch is not None else None
            wall = float(row["wall_seconds"]) if row.get("wall_seconds") is not None else seconds
            hit = TimeToTarget(epochs=epoch, steps=steps, wall_seconds=wall)
            break
        out.append(hit)
    return out


def lr_sensitivity(lrs: Sequence[float], values: Sequence[float | None], n_bins: int = 6) -> LRSensitivity:
    """Final score against LR: the points (failed trials left out), and ``n_bins`` log-spaced bins over their span."""
    if len(lrs) != len(values):
        raise ValueError(f"{len(lrs)} LRs but {len(values)} values")
    pairs = sorted(
        (float(lr), float(v)) for lr, v in zip(lrs, values, strict=True) if v is not None and math.isfinite(v)
    )
    if any(lr <= 0 for lr, _ in pairs):
        raise ValueError("LRs must be > 0 (they are binned on a log scale)")
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    bins: list[LRBin] = []
    if pairs:
        lo, hi = math.log10(xs[0]), math.log10(xs[-1])
        edges = np.logspace(lo, hi if hi > lo else lo + 1e-9, n_bins + 1)
        edges[0], edges[-1] = xs[0], max(xs[-1], edges[-1])  # exact ends: no point falls outside by rounding
        for i in range(n_bins):
            last = i == n_bins - 1
            inside = [y for x, y in pairs if edges[i] <= x and (x < edges[i + 1] or (last and x <= edges[-1]))]
            bins.append(
                LRBin(
                    lr_low=float(edges[i]),
                    lr_high=float(edges[i + 1]),
                    count=len(inside),
                    median=float(np.median(inside)) if inside else None,
                    best=max(inside) if inside else None,
                )
            )
    return LRSensitivity(lrs=xs, values=ys, bins=bins)


def compute_spent(epochs_per_trial: Sequence[int], wall_seconds_per_trial: Sequence[float | None]) -> ComputeSpent:
    """Totals over every trial an arm started, pruned and failed included (a trial with unknown time adds 0 s)."""
    if len(epochs_per_trial) != len(wall_seconds_per_trial):
        raise ValueError(f"{len(epochs_per_trial)} epoch counts but {len(wall_seconds_per_trial)} times")
    return ComputeSpent(
        n_trials=len(epochs_per_trial),
        epochs=int(sum(int(e) for e in epochs_per_trial)),
        wall_seconds=float(sum(float(w) for w in wall_seconds_per_trial if w is not None)),
    )


def _finite_array(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("no values")
    if not np.isfinite(x).all():
        raise ValueError("values must be finite")
    return x
