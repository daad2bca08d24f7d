"""The statistics of a comparison, as pure functions on numpy arrays (rules R2–R6 of
:mod:`search_spaces.comparison`).

A comparison's scores come as a table ``{repeat: {seed: score}}`` per arm and batch size: each tuning repeat ``r``
picked a winner, and every winner was re-run on the repeat's fresh seeds (nested in the repeat, shared by every
arm). The unit of replication is the tuning repeat (R1): arm A against arm B is summarised per repeat as

    d_r = mean over the repeat's shared seeds j of (score_A[r, j] − score_B[r, j])

and everything that decides is computed from the ``n`` numbers ``d_1 … d_n`` (:func:`repeat_differences`).

- :func:`paired_t` — R2's test: the one-sample t-test of ``d_r`` against 0 (the paired t over repeats),
  ``t = d̄ / (s/√n)`` on ``n − 1`` degrees of freedom, two-sided p from ``scipy.stats.ttest_1samp``.
- :func:`t_interval` — ``d̄ ± t(1 − α/2, n − 1) · s/√n`` (``scipy.stats.t.ppf``), vectorised.
- :func:`tost` — two one-sided tests of ``|Δ| < δ`` (Schuirmann 1987): ``p = max(p(Δ ≤ −δ), p(Δ ≥ δ))``, each a
  one-sided ``scipy.stats.ttest_1samp`` of ``d_r`` against ``∓δ``. ``p < α/2`` exactly when the two-sided
  ``1 − α`` interval lies inside ``(−δ, δ)``, which is R5's rule for ``equivalent`` at a look's α. (statsmodels'
  ``ttost_paired`` computes the same p-value; it is not a dependency of this package, and two scipy calls suffice.)
- :func:`decide` — R5's table of cases from an interval ``[L, U]`` and the margin δ (vectorised):

  ============================  ==============
  case                          verdict
  ============================  ==============
  ``L > 0``                     ``better``
  ``U < 0``                     ``worse``
  ``−δ < L`` and ``U < δ``      ``equivalent``
  otherwise                     ``undecided``
  ============================  ==============

  Better or worse wins a tie with equivalent (both can hold when the interval is narrow and near 0); the verdict is
  then said to lie "within the margin" (:func:`within_margin`). ``undecided`` means the data did not decide, never
  "no difference".
- :func:`look_alphas` — R3/R4's spending: each of the ``m`` verdicts gets ``α/m`` (Bonferroni); with looks at
  ``n_min … n_max`` repeats, 10 % of ``α/m`` is spent evenly over the interim looks ``n_min … n_max − 1`` and 90 %
  at ``n_max``. By the union bound the chance that a verdict is wrong at any look is at most ``α/m``, whatever the
  dependence between looks (no boundary integration; the t intervals stay exact at each look).
- :func:`sequential_verdicts` — R4/R5 over the looks (vectorised): the verdict at the first look that decides,
  frozen; ``undecided`` if none did.
- :func:`minimum_detectable_difference` — R6's power statement: ``(t(1 − α/2, ν) + t(power, ν)) · s/√n``, the
  true difference a paired t at level α detects with the given power (the usual normal-approximation formula with
  t quantiles; Cohen 1988, ch. 2); ``ν = n − 1`` unless the pooled ``df`` is given (:func:`pooled_sd`).
- :func:`bootstrap_difference` / :func:`bootstrap_mean` — descriptive only (R2): a 95 % percentile interval from a
  two-level bootstrap that resamples repeats and seeds, shown in the report beside the t interval. No verdict reads
  it: with few repeats a percentile bootstrap is far too narrow (with 2 repeats it sees at most three distinct
  resampled means per arm).
- :func:`range_position` / :func:`at_edge` — where a tuned value sits in its searched range.
- :class:`SpendingCheck` — the arms' epochs spent at one batch size and whether they lie within one trial's epochs.
- :func:`expected_best` — Sivaprasad et al. (ICML 2020) / Dodge et al. (2019): the expected best validation score of
  ``n`` trials drawn at random from the trials seen, exactly, over their empirical distribution
  (``E[max of n] = Σ_i v_(i) · ((i/N)^n − ((i−1)/N)^n)`` over the sorted values), with a bootstrap percentile band.
- :func:`time_to_target` — AlgoPerf's time-to-result: the first epoch a curve reaches a target, in epochs, optimizer
  steps and wall seconds; a curve that never reaches it counts as never (``None``), not as its last epoch.
- :func:`lr_sensitivity` — final score against LR (points, and log-spaced bins).

How these behave together is simulated in :mod:`service.comparisons.simulate` (family-wise error under the null,
P(equivalent) at a true difference of δ, power at a true difference of the MDD).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from search_spaces.comparison import RANGE_EDGE
from tvlars.train.metrics import Metric

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
    "Look",
    "PairedT",
    "ScoreTable",
    "SpendingCheck",
    "Summary",
    "TimeToTarget",
    "Verdict",
    "at_edge",
    "bootstrap_difference",
    "bootstrap_mean",
    "decide",
    "expected_best",
    "expected_max",
    "look_alphas",
    "lr_sensitivity",
    "minimum_detectable_difference",
    "paired_t",
    "pooled_sd",
    "range_position",
    "repeat_differences",
    "resampled_means",
    "seeds_per_repeat",
    "sequential_verdicts",
    "shared_seeds",
    "t_interval",
    "time_to_target",
    "tost",
    "within_margin",
]

#: A comparison's family-wise error rate (R3), and the confidence of descriptive intervals.
ALPHA = 0.05
CONFIDENCE = 1 - ALPHA
#: The power a verdict's minimum detectable difference is stated at (R6).
POWER = 0.8
#: Bootstrap draws per interval, and the generator's seed: the same stored scores always give the same numbers.
N_BOOT = 10_000
BOOT_SEED = 0
#: Fewest tuning repeats (shared by both arms) and re-run seeds per repeat a verdict needs: a paired t over repeats
#: needs 2 of them to estimate a spread.
MIN_REPEATS = 2
MIN_SEEDS = 1

#: One arm's re-run scores at one batch size: ``{tuning repeat: {seed: score}}`` (rank-1 winners only).
ScoreTable = Mapping[int, Mapping[int, float]]


class Verdict(StrEnum):
    """What a comparison says about the arm under test against another arm at one batch size (R5).

    ``better``/``worse``/``equivalent``/``undecided`` come from the interval at the look that decided
    (:func:`decide`, :func:`sequential_verdicts`); ``undecided`` means the repeats did not decide, not "no
    difference". ``inconclusive: search failure``: the arm under test's space contains the other arm's (TVLARS with
    λ → 0 is LARS), yet it is ``worse`` than it: its search failed, so no verdict at that batch size stands.
    ``inconclusive``: a rule could not be checked (too few repeats, a missing arm, a failed study, unequal spending);
    the verdict's ``reason`` says which.
    """

    BETTER = "better"
    WORSE = "worse"
    EQUIVALENT = "equivalent"
    UNDECIDED = "undecided"
    SEARCH_FAILURE = "inconclusive: search failure"
    INCONCLUSIVE = "inconclusive"

    @property
    def is_decided(self) -> bool:
        """Whether more repeats could not change it: a decision (frozen, R5) or a search failure."""
        return self in (Verdict.BETTER, Verdict.WORSE, Verdict.EQUIVALENT, Verdict.SEARCH_FAILURE)

    @property
    def is_conclusive(self) -> bool:
        """Whether every rule could be checked (undecided is conclusive about the data: they did not decide)."""
        return self in (Verdict.BETTER, Verdict.WORSE, Verdict.EQUIVALENT, Verdict.UNDECIDED)


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
class PairedT:
    """The paired t over repeats (:func:`paired_t`): ``n`` differences, their mean and SD, ``se = sd/√n``,
    ``df = n − 1``, the statistic and its two-sided p-value (``None`` where there is no spread to estimate)."""

    n: int
    mean: float
    sd: float | None
    se: float | None
    df: int
    t: float | None
    p_value: float | None


@dataclass(frozen=True)
class Look:
    """One look at a verdict (R4): ``n`` repeats, the α spent at it, the t interval at that α, its p-values and
    the verdict it gave then."""

    n: int
    alpha: float
    mean: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_equivalence: float | None
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Difference:
    """Arm a minus arm b at one batch size, as the verdict reads it (R2–R6).

    ``mean``, ``sd``, ``n``, ``ci_low``/``ci_high`` (the t interval at ``alpha``), ``p_value`` (paired t) and
    ``p_equivalence`` (TOST at ``±margin``) are those of the look that decided (``look``), else of the last look;
    ``alpha`` the α spent at that look; ``mdd`` the minimum detectable difference at ``n_max`` repeats with the SD
    pooled over the batch size's verdicts (R6). ``repeat_differences`` are the ``d_r``; ``boot_low``/``boot_high``
    a descriptive 95 % two-level bootstrap interval; ``looks`` every look in order. Scores are fractions (0..1);
    ``margin`` too.
    """

    mean: float
    sd: float | None
    n: int
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_equivalence: float | None
    alpha: float
    margin: float
    look: int | None = None
    mdd: float | None = None
    mdd_sd: float | None = None
    mdd_df: int | None = None
    repeat_differences: list[float] = field(default_factory=list)
    n_seeds: int = 0
    boot_low: float | None = None
    boot_high: float | None = None
    looks: list[Look] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


# --- the test over repeats (R2), the verdict (R5), the looks (R3, R4), the power (R6) -------------------------------


def repeat_differences(a: ScoreTable, b: ScoreTable) -> tuple[list[int], np.ndarray]:
    """``(repeats, d)``: the repeats both arms have (sorted) and ``d_r`` = mean over the seeds both have in repeat
    ``r`` of ``a − b`` (R1). A repeat without a shared seed is left out."""
    repeats, d = [], []
    for r in sorted(set(a) & set(b)):
        seeds = sorted(set(a[r]) & set(b[r]))
        if not seeds:
            continue
        diff = np.array([float(a[r][s]) - float(b[r][s]) for s in seeds], dtype=np.float64)
        if not np.isfinite(diff).all():
            raise ValueError("scores must be finite")
        repeats.append(r)
        d.append(float(diff.mean()))
    return repeats, np.array(d, dtype=np.float64)


def paired_t(d: Sequence[float] | np.ndarray) -> PairedT:
    """The paired t over repeats on ``d_r`` (R2): ``t = d̄ / (s/√n)``, ``n − 1`` df, two-sided p.

    ``scipy.stats.ttest_1samp(d, 0)``. With one difference ``sd`` is ``None``; with differences that do not vary it
    is 0; in both cases ``se``/``t``/``p_value`` are ``None`` (a constant difference has no t).
    """
    x = np.asarray(d, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no repeat differences")
    if not np.isfinite(x).all():
        raise ValueError("differences must be finite")
    mean = float(x.mean())
    if x.size < 2 or np.ptp(x) == 0:
        return PairedT(int(x.size), mean, None if x.size < 2 else 0.0, None, int(x.size) - 1, None, None)
    res = scipy_stats.ttest_1samp(x, 0.0)
    sd = float(x.std(ddof=1))
    return PairedT(int(x.size), mean, sd, sd / math.sqrt(x.size), int(x.size) - 1, float(res.statistic),
                   float(res.pvalue))  # fmt: skip


def t_interval(mean: Any, sd: Any, n: Any, alpha: Any) -> tuple[np.ndarray, np.ndarray]:
    """``d̄ ± t(1 − α/2, n − 1) · s/√n`` (``scipy.stats.t.ppf``), elementwise over arrays."""
    mean, sd, n, alpha = (np.asarray(x, dtype=np.float64) for x in (mean, sd, n, alpha))
    half = scipy_stats.t.ppf(1 - alpha / 2, n - 1) * sd / np.sqrt(n)
    return mean - half, mean + half


def tost(d: Sequence[float] | np.ndarray, margin: float) -> float | None:
    """Two one-sided tests of equivalence within ``±margin`` (Schuirmann 1987): ``max`` of the one-sided p-values of
    ``H0: Δ ≤ −margin`` and ``H0: Δ ≥ margin`` (``scipy.stats.ttest_1samp`` with ``alternative``). ``None`` where
    there is no spread. Equivalent at a look's α ⇔ ``p < α/2`` ⇔ the ``1 − α`` t interval lies in ``(−δ, δ)``."""
    x = np.asarray(d, dtype=np.float64)
    if margin <= 0:
        raise ValueError(f"Invalid margin: {margin}")
    if x.size < 2 or np.ptp(x) == 0:
        return None
    above = scipy_stats.ttest_1samp(x, -margin, alternative="greater").pvalue
    below = scipy_stats.ttest_1samp(x, margin, alternative="less").pvalue
    return float(max(above, below))


def decide(low: Any, high: Any, margin: float) -> Any:
    """R5's table of cases (module docstring) for an interval ``[low, high]``: ``better`` if ``low > 0``, ``worse``
    if ``high < 0``, ``equivalent`` if ``−margin < low`` and ``high < margin``, else ``undecided``.

    Scalars give a :class:`Verdict`; arrays an array of verdict strings (for simulations).
    """
    lo, hi = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    out = np.select(
        [lo > 0, hi < 0, (lo > -margin) & (hi < margin)],
        [Verdict.BETTER.value, Verdict.WORSE.value, Verdict.EQUIVALENT.value],
        Verdict.UNDECIDED.value,
    )
    return Verdict(str(out)) if out.ndim == 0 else out


def within_margin(verdict: Verdict, mean: float, margin: float) -> bool:
    """A ``better``/``worse`` whose estimate lies inside the margin: decided, yet smaller than δ (R5)."""
    return verdict in (Verdict.BETTER, Verdict.WORSE) and abs(mean) < margin


def look_alphas(alpha_family: float, m: int, n_min: int, n_max: int) -> dict[int, float]:
    """The α spent at each look ``n`` (repeats) for one of ``m`` verdicts (R3, R4).

    Each verdict gets ``α/m`` (Bonferroni). With ``n_min == n_max`` (an integer ``tuning_repeats``) that is one look
    at ``α/m``. Otherwise 10 % of ``α/m`` is spread evenly over the interim looks ``n_min … n_max − 1`` and 90 % is
    spent at ``n_max``; the values sum to ``α/m`` (a union bound over looks).

    >>> {n: round(a, 6) for n, a in look_alphas(0.05, 2, 3, 5).items()}
    {3: 0.00125, 4: 0.00125, 5: 0.0225}
    """
    if not 0 < alpha_family < 1:
        raise ValueError(f"Invalid alpha_family: {alpha_family}")
    if m < 1:
        raise ValueError(f"Invalid m: {m}")
    if not 1 <= n_min <= n_max:
        raise ValueError(f"Invalid looks: n_min {n_min}, n_max {n_max}")
    alpha = alpha_family / m
    if n_min == n_max:
        return {n_max: alpha}
    interim = n_max - n_min
    return {**{n: 0.1 * alpha / interim for n in range(n_min, n_max)}, n_max: 0.9 * alpha}


def sequential_verdicts(
    means: np.ndarray, sds: np.ndarray, ns: Sequence[int], alphas: Sequence[float], margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """The frozen verdict over looks (R4/R5), vectorised: ``means``/``sds`` are ``(..., looks)`` arrays of ``d̄`` and
    ``s`` at each look, with ``ns[k]`` repeats and ``alphas[k]`` spent. Returns ``(verdicts, look_index)``: the
    verdict of the first look that decided (``undecided`` if none; index −1)."""
    low, high = t_interval(means, sds, np.asarray(ns), np.asarray(alphas))
    each = decide(low, high, margin)
    decided = each != Verdict.UNDECIDED.value
    first = np.where(decided.any(axis=-1), decided.argmax(axis=-1), -1)
    verdicts = np.where(first >= 0, np.take_along_axis(each, np.maximum(first, 0)[..., None], -1)[..., 0],
                        Verdict.UNDECIDED.value)  # fmt: skip
    return verdicts, first


def minimum_detectable_difference(
    sd: float, n: int, alpha: float, df: int | None = None, power: float = POWER
) -> float:
    """R6: ``(t(1 − α/2, ν) + t(power, ν)) · sd/√n`` with ``ν = n − 1`` unless ``df`` is given (an SD pooled over
    several verdicts carries their df, :func:`pooled_sd`): the true difference that a two-sided paired t at level
    ``α`` over ``n`` repeats finds with probability ``power`` (Cohen 1988, ch. 2, with t quantiles;
    ``scipy.stats.t.ppf``).

    >>> round(minimum_detectable_difference(1.0, 10, 0.05), 4)
    0.9947
    """
    nu = n - 1 if df is None else df
    if n < 1 or nu < 1:
        raise ValueError(f"Invalid n/df: {n}/{nu} (an SD needs 1+ degree of freedom)")
    if not 0 < alpha < 1 or not 0 < power < 1 or sd < 0:
        raise ValueError(f"Invalid alpha/power/sd: {alpha}/{power}/{sd}")
    t = scipy_stats.t
    return float((t.ppf(1 - alpha / 2, nu) + t.ppf(power, nu)) * sd / math.sqrt(n))


def pooled_sd(sds: Sequence[float], ns: Sequence[int]) -> tuple[float, int]:
    """``(s, ν)``: ``s = √(Σ (n_i − 1) s_i² / Σ (n_i − 1))``, ``ν = Σ (n_i − 1)`` (R6 pools a batch size's verdicts)."""
    if len(sds) != len(ns) or not sds:
        raise ValueError("one n per SD, at least one")
    df = sum(n - 1 for n in ns)
    if df < 1:
        raise ValueError("no degree of freedom to pool")
    return math.sqrt(sum((n - 1) * s * s for s, n in zip(sds, ns, strict=True)) / df), df


# --- the descriptive bootstrap over repeats and seeds ----------------------------------------------------------------


def shared_seeds(*tables: ScoreTable) -> dict[int, tuple[int, ...]]:
    """Per repeat every table has, the seeds every table has in it (sorted). Seeds are nested in the repeat (R1):
    repeat ``r``'s seeds are its own, shared by the arms, so seeds pair within a repeat, never across repeats."""
    if not tables:
        return {}
    repeats = set.intersection(*(set(t) for t in tables))
    out = {}
    for r in sorted(repeats):
        seeds = set.intersection(*(set(t[r]) for t in tables))
        if seeds:
            out[r] = tuple(sorted(seeds))
    return out


def seeds_per_repeat(*tables: ScoreTable) -> int:
    """The fewest seeds any shared repeat has in common (0 without a shared repeat): the grid's width."""
    per = shared_seeds(*tables)
    return min((len(s) for s in per.values()), default=0)


def _matrix(table: ScoreTable, per_repeat: Mapping[int, Sequence[int]], width: int) -> np.ndarray:
    """``table`` as a repeats × ``width`` array: repeat ``r``'s first ``width`` shared seeds, checked finite."""
    if not per_repeat:
        raise ValueError("no repeats")
    x = np.array([[float(table[r][s]) for s in seeds[:width]] for r, seeds in per_repeat.items()], dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("scores must be finite")
    return x


def resampled_means(x: np.ndarray, seed_counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The mean of ``x`` (repeats × seed positions) under each bootstrap draw: seed positions as given, repeats drawn
    here.

    ``seed_counts`` (draws × seeds) says how often each seed position was drawn in each draw (a multinomial row
    summing to the number of seeds); the repeats are drawn the same way from ``rng``. The resampled grid's mean is
    then ``Σ_r Σ_s c_r · x[r, s] · c_s / (R · S)``. (scipy's ``bootstrap`` resamples one axis per sample and cannot
    express this crossed draw, hence the multinomial counts.)
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


def _bootstrap(x: np.ndarray, n_boot: int, rng: np.random.Generator | int | None, confidence: float):
    gen = _generator(rng)
    return _percentiles(resampled_means(x, _seed_counts(x.shape[1], n_boot, gen), gen), confidence)


def bootstrap_mean(
    scores: ScoreTable, *, n_boot: int = N_BOOT, rng: np.random.Generator | int | None = None,
    confidence: float = CONFIDENCE,
) -> Summary:  # fmt: skip
    """One arm's mean over repeats × seeds (each repeat's first ``w`` seeds, ``w`` the fewest any repeat has), with
    the two-level percentile interval (descriptive)."""
    per = shared_seeds(scores)
    width = seeds_per_repeat(scores)
    if not width:
        raise ValueError("no re-run score")
    x = _matrix(scores, per, width)
    repeat_means = x.mean(axis=1).tolist()
    if x.size < 2:
        return Summary(width, float(x.mean()), None, None, None, x.shape[0], repeat_means)
    low, high = _bootstrap(x, n_boot, rng, confidence)
    return Summary(width, float(x.mean()), float(x.std(ddof=1)), low, high, x.shape[0], repeat_means)


def bootstrap_difference(
    a: ScoreTable, b: ScoreTable, *, n_boot: int = N_BOOT, rng: np.random.Generator | int | None = None,
    confidence: float = CONFIDENCE,
) -> tuple[float, float] | None:  # fmt: skip
    """A descriptive percentile interval of ``mean(a) − mean(b)`` (R2: no verdict reads it), from a two-level
    bootstrap of the paired differences: each draw resamples the repeats, and the seed positions within them, once
    for both arms (a repeat's seeds are shared by the arms, R1). ``None`` where nothing varies."""
    per = shared_seeds(a, b)
    width = seeds_per_repeat(a, b)
    if not width:
        return None
    x = _matrix(a, per, width) - _matrix(b, per, width)
    if x.size < 2:
        return None
    return _bootstrap(x, n_boot, rng, confidence)


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
    metric: str = Metric.VAL_ACC,
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
                spent = row.get(Metric.EPOCH_SECONDS)
                seconds = seconds + float(spent) if spent is not None else None
            value = row.get(metric)
            if value is None or not math.isfinite(float(value)) or float(value) < target:
                continue
            epoch = int(row[Metric.EPOCH])
            if row.get(Metric.STEP) is not None:
                steps: int | None = int(row[Metric.STEP])
            else:
                steps = epoch * steps_per_epoch if steps_per_epoch is not None else None
            wall = float(row[Metric.WALL_SECONDS]) if row.get(Metric.WALL_SECONDS) is not None else seconds
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
