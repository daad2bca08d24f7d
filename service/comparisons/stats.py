"""The statistics of a comparison, as pure functions on plain numbers (numpy).

A comparison's scores come as a table ``{repeat: {seed: score}}`` per arm and batch size: each of the
``tuning_repeats`` independent tunings picked a winner, and every winner was re-run on the same fresh seeds (the same
seeds in every arm and every repeat).

- :func:`bootstrap_difference` — arm a minus arm b: the difference of their mean scores with a 95 % percentile
  bootstrap interval and a two-sided bootstrap p-value, resampling **repeats and seeds** (two levels, see
  :func:`resampled_means`), so the interval carries tuning variance (another tuning could have picked another
  winner) as well as seed variance. Seeds are resampled once for both arms (pairing: a seed's initial weights and
  data order act on both), repeats independently per arm (repeat ``r`` of one arm has nothing to do with repeat ``r``
  of another).
- :func:`repeats_p_value` — the same difference tested at the level of tuning repeats with scipy's t-tests (Welch's
  on the arms' repeat means; where neither arm's repeats differ, the paired one over seeds), which counts a tuning
  repeat as the unit of replication it is. A verdict's p-value is the larger of the two (see below).
- :func:`bootstrap_mean` — one arm's mean score with the same two-level interval, the spread of its repeats.
- :func:`holm` — Holm's step-down adjustment of one comparison's p-values (family-wise error rate ≤ α over all its
  verdicts, valid under any dependence between them).
- :func:`decide` — ``better`` / ``worse`` when the (adjusted) p-value is below α = 1 − :data:`CONFIDENCE`, in the
  direction of the mean difference, else ``no clear difference``. The other two words of :class:`Verdict` are given
  by the comparison's rules (:mod:`service.comparisons.result`), not by a p-value.
- :func:`range_position` — where a tuned value sits in its searched range, 0..1 (in log space for a log range);
  :func:`at_edge` is the range check's "outer 10 %" (``search_spaces.comparison.RANGE_EDGE``).
- :class:`SpendingCheck` — the arms' epochs spent at one batch size and whether they lie within one trial's epochs.
- :func:`expected_best` — Sivaprasad et al. (ICML 2020) / Dodge et al. (2019): the expected best validation score of
  ``n`` trials drawn at random from the trials seen, exactly, over their empirical distribution
  (``E[max of n] = Σ_i v_(i) · ((i/N)^n − ((i−1)/N)^n)`` over the sorted values), with a bootstrap percentile band.
  Callers pass completed trials only (a pruned trial's value is its accuracy at an early epoch, not a draw's result).
- :func:`time_to_target` — AlgoPerf's time-to-result: the first epoch a curve reaches a target, in epochs, optimizer
  steps and wall seconds; a curve that never reaches it counts as never (``None``), not as its last epoch.
- :func:`lr_sensitivity` — final score against LR (points, and log-spaced bins).

Why the bootstrap is written here on numpy's ``Generator`` rather than with ``scipy.stats.bootstrap``: scipy resamples
one axis per sample, either with the same indices for every sample (``paired=True``) or independent ones. Our
resampling is crossed and nested at once: seed indices shared by both arms, repeat indices drawn per arm, and the
statistic a mean over the resampled repeats × seeds grid. scipy's API cannot express that, so each bootstrap draw is
written out as multinomial counts (how often each seed and each repeat was drawn) and the resampled mean is
``counts_repeats · scores · counts_seeds / (R · S)``, vectorised over draws (:func:`resampled_means`). The interval is
the percentile one (the 2.5th and 97.5th percentiles of the draws); the p-value is the two-sided bootstrap one,
``min(1, 2 · min(#{Δ* ≤ 0} + 1, #{Δ* ≥ 0} + 1) / (B + 1))`` (the +1 keeps it from being 0 with finite B), so
``p < 0.05`` is, up to that +1, the 95 % interval leaving out 0.

Why a verdict does not rest on the bootstrap alone: with few repeats a percentile bootstrap is far too narrow. With
2 repeats per arm it sees at most three distinct resampled means per arm, and where every score of one arm lies below
every score of the other no draw crosses 0, so its p-value is ``2 / (B + 1)`` whatever the spread between repeats:
the first published run under this protocol called a 1.5-point gap "worse" at p = 0.0002 from 2 repeats × 2 seeds
whose repeats differed by 1.2 points. Welch's t-test on the repeat means has the degrees of freedom those repeats
really give (about 1 there, p ≈ 0.24). So every verdict's ``p_value`` is ``max(p_bootstrap, p_repeats)``: a
difference must hold both seed by seed and from tuning to tuning before Holm's correction (over the whole family of
verdicts) lets it through. The result's rules also ask for at least :data:`MIN_REPEATS` repeats and
:data:`MIN_SEEDS` seeds before they state a verdict.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from search_spaces.comparison import RANGE_EDGE

from ..trial_report import TrialAttr

__all__ = [
    "ALPHA",
    "CONFIDENCE",
    "MIN_REPEATS",
    "MIN_SEEDS",
    "N_BOOT",
    "Difference",
    "ExpectedBest",
    "LRBin",
    "LRSensitivity",
    "ScoreTable",
    "SpendingCheck",
    "Summary",
    "TimeToTarget",
    "Verdict",
    "at_edge",
    "bootstrap_difference",
    "bootstrap_mean",
    "common_seeds",
    "decide",
    "expected_best",
    "expected_max",
    "holm",
    "lr_sensitivity",
    "range_position",
    "repeats_p_value",
    "resampled_means",
    "time_to_target",
]

#: Every test in a comparison is at level α (after Holm), and every interval a 1 − α = 95 % one.
ALPHA = 0.05
CONFIDENCE = 1 - ALPHA
#: Bootstrap draws per interval, and the generator's seed: the same stored scores always give the same numbers.
N_BOOT = 10_000
BOOT_SEED = 0
#: Fewest tuning repeats (per arm) and shared re-run seeds a verdict needs: fewer estimate no variance at that level.
MIN_REPEATS = 2
MIN_SEEDS = 2

#: One arm's re-run scores at one batch size: ``{tuning repeat: {seed: score}}`` (rank-1 winners only).
ScoreTable = Mapping[int, Mapping[int, float]]


class Verdict(str, Enum):
    """What a comparison may say about the arm under test against another arm at one batch size.

    ``better``/``worse``/``no clear difference`` come from the Holm-adjusted bootstrap p-value (:func:`decide`).
    ``inconclusive: search failure``: the arm under test's space contains the other arm's (TVLARS with λ → 0 is
    LARS), yet its tuned score is clearly below: its search failed, so no verdict at that batch size stands.
    ``inconclusive``: a rule could not be checked (too few repeats or seeds, a missing arm, a failed study, unequal
    spending); the verdict's ``reason`` says which.
    """

    BETTER = "better"
    NO_CLEAR_DIFFERENCE = "no clear difference"
    WORSE = "worse"
    SEARCH_FAILURE = "inconclusive: search failure"
    INCONCLUSIVE = "inconclusive"

    @property
    def is_conclusive(self) -> bool:
        return self in (Verdict.BETTER, Verdict.NO_CLEAR_DIFFERENCE, Verdict.WORSE)


@dataclass(frozen=True)
class Summary:
    """One arm's re-run scores over repeats × seeds: mean, std of all scores, the two-level bootstrap interval.

    ``repeat_means`` is each repeat's winner's mean over the seeds (the tuning spread). ``std``, ``ci_low`` and
    ``ci_high`` are ``None`` for a single score.
    """

    n_seeds: int
    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    n_repeats: int = 1
    repeat_means: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Difference:
    """Arm a minus arm b: difference of means over repeats × the seeds both have, its bootstrap interval and p-value.

    ``se`` is the bootstrap standard error; ``p_value`` the larger of ``p_bootstrap`` (two-level bootstrap) and
    ``p_repeats`` (t-test at the level of tuning repeats, :func:`repeats_p_value`; ``None`` where it cannot run);
    ``p_adjusted`` is ``p_value`` Holm-adjusted once the comparison's family is known (``None`` before).
    ``ci_low``/``ci_high``/``p_value`` are ``None`` when nothing can vary (one seed, one repeat per arm).
    """

    mean: float
    ci_low: float | None
    ci_high: float | None
    se: float | None
    p_value: float | None
    n_seeds: int
    n_repeats: tuple[int, int]
    seeds: tuple[int, ...]
    p_adjusted: float | None = None
    p_bootstrap: float | None = None
    p_repeats: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seeds": list(self.seeds), "n_repeats": list(self.n_repeats)}


@dataclass(frozen=True)
class SpendingCheck:
    """The arms' tuning epochs at one batch size (and repeat): equal spending means a spread within ``limit``.

    ``limit`` is one trial's epochs: a budget in epochs can end with one trial more in one arm than in another.
    """

    batch_size: int
    repeat: int | None
    spent: dict[str, int]
    limit: int

    @property
    def spread(self) -> int:
        return max(self.spent.values()) - min(self.spent.values()) if self.spent else 0

    @property
    def ok(self) -> bool:
        return self.spread <= self.limit

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "spread": self.spread, "ok": self.ok}


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


# --- the bootstrap over repeats and seeds ----------------------------------------------------------------------------


def common_seeds(*tables: ScoreTable) -> tuple[int, ...]:
    """The seeds every repeat of every table has, sorted: the grid both levels resample."""
    rows = [set(row) for table in tables for row in table.values()]
    return tuple(sorted(set.intersection(*rows))) if rows else ()


def _matrix(table: ScoreTable, seeds: Sequence[int]) -> np.ndarray:
    """``table`` as a repeats × seeds array (repeats in sorted order), checked finite."""
    if not table:
        raise ValueError("no repeats")
    x = np.array([[float(table[r][s]) for s in seeds] for r in sorted(table)], dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("scores must be finite")
    return x


def resampled_means(x: np.ndarray, seed_counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mean of ``x`` (repeats × seeds) under each bootstrap draw: seeds as given, repeats drawn here.

    ``seed_counts`` (draws × seeds) says how often each seed was drawn in each draw (a multinomial row summing to the
    number of seeds); the repeats are drawn the same way from ``rng``. The resampled grid's mean is then
    ``Σ_r Σ_s c_r · x[r, s] · c_s / (R · S)``.
    """
    n_repeats, n_seeds = x.shape
    repeat_counts = rng.multinomial(n_repeats, np.full(n_repeats, 1 / n_repeats), size=seed_counts.shape[0])
    return np.einsum("br,rs,bs->b", repeat_counts, x, seed_counts) / (n_repeats * n_seeds)


def _generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(BOOT_SEED if rng is None else rng)


def _seed_counts(n_seeds: int, n_boot: int, gen: np.random.Generator) -> np.ndarray:
    if n_boot < 1:
        raise ValueError(f"Invalid n_boot: {n_boot}")
    return gen.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot)


def _percentiles(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean(
    scores: ScoreTable, *, n_boot: int = N_BOOT, rng: np.random.Generator | int | None = None,
    confidence: float = CONFIDENCE,
) -> Summary:  # fmt: skip
    """One arm's mean over repeats × the seeds every repeat has, with the two-level percentile interval."""
    seeds = common_seeds(scores)
    if not seeds:
        raise ValueError("no seed that every repeat has")
    x = _matrix(scores, seeds)
    repeat_means = x.mean(axis=1).tolist()
    if x.size < 2:
        return Summary(len(seeds), float(x.mean()), None, None, None, x.shape[0], repeat_means)
    gen = _generator(rng)
    low, high = _percentiles(resampled_means(x, _seed_counts(len(seeds), n_boot, gen), gen), confidence)
    return Summary(len(seeds), float(x.mean()), float(x.std(ddof=1)), low, high, x.shape[0], repeat_means)


def bootstrap_difference(
    a: ScoreTable, b: ScoreTable, *, n_boot: int = N_BOOT, rng: np.random.Generator | int | None = None,
    confidence: float = CONFIDENCE,
) -> Difference:  # fmt: skip
    """``mean(a) − mean(b)`` over the seeds both have, its two-level bootstrap interval and two-sided p-value.

    Each draw resamples the seeds once for both arms (paired) and each arm's repeats on their own (module docstring).
    """
    seeds = common_seeds(a, b)
    if not seeds:
        raise ValueError("no seed in common: a difference needs both arms re-run on the same seeds")
    xa, xb = _matrix(a, seeds), _matrix(b, seeds)
    mean = float(xa.mean() - xb.mean())
    n_repeats = (xa.shape[0], xb.shape[0])
    if len(seeds) < 2 and n_repeats == (1, 1):
        return Difference(mean, None, None, None, None, len(seeds), n_repeats, seeds)
    gen = _generator(rng)
    counts = _seed_counts(len(seeds), n_boot, gen)
    draws = resampled_means(xa, counts, gen) - resampled_means(xb, counts, gen)
    low, high = _percentiles(draws, confidence)
    below, above = int((draws <= 0).sum()), int((draws >= 0).sum())
    p_boot = min(1.0, 2 * (min(below, above) + 1) / (draws.size + 1))
    p_rep = repeats_p_value(xa, xb)
    p = p_boot if p_rep is None else max(p_boot, p_rep)
    se = float(draws.std(ddof=1))
    return Difference(mean, low, high, se, p, len(seeds), n_repeats, seeds, p_bootstrap=p_boot, p_repeats=p_rep)


def repeats_p_value(xa: np.ndarray, xb: np.ndarray) -> float | None:
    """Two-sided p-value of ``mean(a) − mean(b)`` with a tuning repeat as the unit of replication.

    ``xa``/``xb`` are repeats × shared seeds. Welch's t-test (``scipy.stats.ttest_ind``, unequal variances) on the
    arms' repeat means (each a mean over the same seeds) where both arms have 2+ repeats and their repeats differ; where
    no arm's repeats differ (every repeat picked the same winner) the tuning adds no variance to estimate, and the
    paired t-test over seeds (``scipy.stats.ttest_rel``) of the repeat-averaged scores decides. ``None`` where neither
    can run (one repeat on a side and one seed); a difference without any spread is 0 (p = 0) or exactly nothing (1).
    """
    ma, mb = xa.mean(axis=1), xb.mean(axis=1)
    if min(ma.size, mb.size) >= 2 and (np.ptp(ma) > 0 or np.ptp(mb) > 0):
        with warnings.catch_warnings():  # scipy warns of precision loss when one arm's repeats agree exactly
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(scipy_stats.ttest_ind(ma, mb, equal_var=False).pvalue)
    d = xa.mean(axis=0) - xb.mean(axis=0)
    if d.size < 2:
        return None
    if np.ptp(d) == 0:
        return 0.0 if d[0] != 0 else 1.0
    return float(scipy_stats.ttest_rel(xa.mean(axis=0), xb.mean(axis=0)).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's adjusted p-values, in the input order: sorted ascending, ``p_(i) · (m − i + 1)``, made monotone, ≤ 1.

    Rejecting where the adjusted value is below α keeps the family-wise error rate at α (Holm 1979).
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return []
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, p[order] * (p.size - np.arange(p.size)))
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted.tolist()


def decide(d: Difference, alpha: float = ALPHA) -> Verdict:
    """``better``/``worse`` when the (Holm-adjusted, if set) p-value is below ``alpha``, else ``no clear difference``.

    A difference with no p-value (nothing could vary) is ``inconclusive``.
    """
    p = d.p_adjusted if d.p_adjusted is not None else d.p_value
    if p is None:
        return Verdict.INCONCLUSIVE
    if p < alpha and d.mean > 0:
        return Verdict.BETTER
    if p < alpha and d.mean < 0:
        return Verdict.WORSE
    return Verdict.NO_CLEAR_DIFFERENCE


# --- ranges ----------------------------------------------------------------------------------------------------------


def range_position(value: float, low: float, high: float, log: bool) -> float:
    """Where ``value`` sits in ``[low, high]``: 0 at ``low``, 1 at ``high``, linear in log space for a log range."""
    if log:
        if min(value, low, high) <= 0:
            raise ValueError("a log range and its value must be > 0")
        value, low, high = math.log(value), math.log(low), math.log(high)
    if high == low:
        return 0.5
    return (value - low) / (high - low)


def at_edge(position: float, tail: float = RANGE_EDGE) -> bool:
    """Whether a position (0..1) lies in the outer ``tail`` of its range at either end: the range check's rule
    (:func:`search_spaces.comparison.range_check`, the same :data:`~search_spaces.comparison.RANGE_EDGE`)."""
    return position < tail or position > 1 - tail


# --- tuning curves ---------------------------------------------------------------------------------------------------


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
            wall = float(row[TrialAttr.WALL_SECONDS]) if row.get(TrialAttr.WALL_SECONDS) is not None else seconds
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


def minimum_detectable_difference(
    sd: float, n: int, alpha: float, df: float | None = None, power: float = 0.8
) -> float | None:
    """The smallest true mean difference a two-sided t test at level ``alpha`` on ``n`` paired repeats detects with
    probability ``power``: ``(t(1 − α/2, ν) + t(power, ν)) · sd / √n``, ν = ``df`` (default ``n − 1``). None where
    ν < 1. (Part B's copy of R6's formula; the lead keeps one at merge.)"""
    nu = n - 1 if df is None else df
    if nu < 1 or n < 1:
        return None
    return float((scipy_stats.t.ppf(1 - alpha / 2, nu) + scipy_stats.t.ppf(power, nu)) * sd / math.sqrt(n))
