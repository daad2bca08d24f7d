"""Comparison statistics against hand computations on fixed numbers (the hand numbers are written out)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from service.comparisons.simulate import figures
from service.comparisons.stats import (
    SpendingCheck,
    Verdict,
    at_edge,
    bootstrap_difference,
    bootstrap_mean,
    decide,
    expected_best,
    expected_max,
    look_alphas,
    lr_sensitivity,
    minimum_detectable_difference,
    paired_t,
    pooled_sd,
    range_position,
    repeat_differences,
    sequential_verdicts,
    shared_seeds,
    t_interval,
    time_to_target,
    tost,
    within_margin,
)

# Repeat r, seed s scores 0.80 + 0.10·r + 0.04·s: additive, so a resampled mean is 0.80 + 0.10·u + 0.04·v with u, v
# the shares of repeat 1 and of the second seed in the draw, each 0, ½ or 1 with probability ¼, ½, ¼.
ADDITIVE = {0: {7: 0.80, 8: 0.84}, 1: {7: 0.90, 8: 0.94}}
# d_r = 0.01, 0.03, 0.02, 0.04 (seeds nested per repeat, shared by the arms): mean 0.025, SD √(0.0005/3) = 0.012910
D = [0.01, 0.03, 0.02, 0.04]
A = {r: {100 + 10 * r + j: 0.5 + 0.1 * j + d for j in range(2)} for r, d in enumerate(D)}
B = {r: {100 + 10 * r + j: 0.5 + 0.1 * j for j in range(2)} | {999: 0.1} for r in range(4)}  # 999: B's alone


def test_repeat_differences_pair_seeds_within_each_repeat():
    repeats, d = repeat_differences(A, B)
    assert repeats == [0, 1, 2, 3] and d == pytest.approx(D)
    assert shared_seeds(A, B)[2] == (120, 121)
    _, none = repeat_differences({0: {1: 0.5}}, {0: {2: 0.5}})  # no seed in common: the repeat is left out
    assert none.size == 0


def test_paired_t_matches_a_hand_computation():
    t = paired_t(D)
    sd = math.sqrt(0.0005 / 3)
    assert (t.n, t.df) == (4, 3)
    assert t.mean == pytest.approx(0.025) and t.sd == pytest.approx(sd) and t.se == pytest.approx(sd / 2)
    assert t.t == pytest.approx(0.025 / (sd / 2)) == pytest.approx(3.872983, rel=1e-6)
    assert t.p_value == pytest.approx(0.030466, rel=1e-4)  # 2 · P(T_3 > 3.873), scipy.stats.t.sf by hand
    one = paired_t([0.02])
    assert (one.sd, one.t, one.p_value) == (None, None, None)
    flat = paired_t([0.02, 0.02])
    assert (flat.sd, flat.p_value) == (0.0, None)
    with pytest.raises(ValueError, match="no repeat"):
        paired_t([])


def test_t_interval_and_the_table_of_cases():
    # t(0.975, 3) = 3.182446: half-width 3.182446 · 0.012910 / 2 = 0.020543
    low, high = t_interval(0.025, math.sqrt(0.0005 / 3), 4, 0.05)
    assert float(low) == pytest.approx(0.025 - 0.020543, abs=1e-6) and float(high) == pytest.approx(0.045543, rel=1e-5)
    assert decide(low, high, 0.01) is Verdict.BETTER
    assert decide(-high, -low, 0.01) is Verdict.WORSE
    assert decide(-0.004, 0.006, 0.01) is Verdict.EQUIVALENT
    assert decide(-0.004, 0.012, 0.01) is Verdict.UNDECIDED  # undecided: neither side of 0 nor inside ±δ
    assert decide(-0.01, 0.002, 0.01) is Verdict.UNDECIDED  # −δ < L is strict
    # better wins a tie with equivalent, and says so: L > 0 and the interval inside ±0.05
    assert decide(low, high, 0.05) is Verdict.BETTER and within_margin(Verdict.BETTER, 0.025, 0.05)
    assert not within_margin(Verdict.BETTER, 0.025, 0.01) and not within_margin(Verdict.EQUIVALENT, 0.0, 0.05)
    assert list(decide(np.array([0.1, -0.3, -0.01]), np.array([0.2, -0.1, 0.3]), 0.05)) == [
        "better", "worse", "undecided",
    ]  # fmt: skip


def test_tost_matches_two_one_sided_t_tests_and_the_interval_rule():
    sd = math.sqrt(0.0005 / 3)
    se = sd / 2
    # H0 Δ ≥ 0.05: t = (0.025 − 0.05)/se = −3.873 → P(T_3 < −3.873) = 0.015233; H0 Δ ≤ −0.05: t = 11.62, far smaller
    p = tost(D, 0.05)
    assert p == pytest.approx(scipy_stats.t.cdf((0.025 - 0.05) / se, 3)) == pytest.approx(0.030466 / 2, rel=1e-4)
    # equivalent at α ⇔ p < α/2 ⇔ the 1 − α interval [0.00446, 0.04554] lies inside ±δ
    for margin in (0.03, 0.045, 0.046, 0.05):
        low, high = t_interval(0.025, sd, 4, 0.05)
        equivalent = bool(-margin < low and high < margin)
        assert (tost(D, margin) < 0.025) is equivalent
        assert equivalent is (margin in (0.046, 0.05))
    assert tost([0.01, 0.01], 0.05) is None
    with pytest.raises(ValueError, match="margin"):
        tost(D, 0.0)


def test_minimum_detectable_difference_by_hand():
    # (t(0.975, 9) + t(0.8, 9)) · 1/√10 = (2.262157 + 0.883404) / 3.162278
    assert minimum_detectable_difference(1.0, 10, 0.05) == pytest.approx((2.262157 + 0.883404) / math.sqrt(10))
    # a pooled SD brings its own df: ν = 27 instead of 9
    pooled = minimum_detectable_difference(1.0, 10, 0.05, df=27)
    assert pooled == pytest.approx((scipy_stats.t.ppf(0.975, 27) + scipy_stats.t.ppf(0.8, 27)) / math.sqrt(10))
    assert pooled < minimum_detectable_difference(1.0, 10, 0.05)
    assert minimum_detectable_difference(2.0, 10, 0.05, power=0.9) > 2 * minimum_detectable_difference(1.0, 10, 0.05)
    with pytest.raises(ValueError, match="df"):
        minimum_detectable_difference(1.0, 1, 0.05)
    # pooling: √((1·0.01² + 3·0.02²) / 4), 4 df
    assert pooled_sd([0.01, 0.02], [2, 4]) == (pytest.approx(math.sqrt((0.0001 + 3 * 0.0004) / 4)), 4)


def test_look_alphas_spend_ten_percent_over_interim_looks_and_ninety_at_the_last():
    # α/m = 0.025; two interim looks (3, 4) share 0.0025; the last (5) gets 0.0225
    assert look_alphas(0.05, 2, 3, 5) == pytest.approx({3: 0.00125, 4: 0.00125, 5: 0.0225})
    assert sum(look_alphas(0.05, 7, 2, 10).values()) == pytest.approx(0.05 / 7)
    assert look_alphas(0.05, 4, 3, 3) == {3: 0.0125}  # an integer tuning_repeats: one look at α/m
    with pytest.raises(ValueError, match="looks"):
        look_alphas(0.05, 1, 4, 3)


def test_sequential_verdicts_freeze_the_first_decision():
    # look 1: [−∞-ish] undecided; look 2 better; look 3 would be equivalent: the verdict stays better at look 2
    means = np.array([[0.0, 0.03, 0.001]])
    sds = np.array([[0.2, 0.001, 0.0001]])
    verdicts, first = sequential_verdicts(means, sds, [3, 4, 5], [0.001, 0.001, 0.048], 0.01)
    assert verdicts.tolist() == ["better"] and first.tolist() == [1]
    verdicts, first = sequential_verdicts(np.zeros((1, 2)), np.ones((1, 2)), [3, 4], [0.01, 0.04], 0.01)
    assert verdicts.tolist() == ["undecided"] and first.tolist() == [-1]


def test_simulation_keeps_error_rates_and_power():
    # 4 000 comparisons per condition, m = 3 verdicts, looks at 3..8 repeats, repeat, seed and interaction effects
    f = figures(n_sims=4_000, seed=0)
    print("\n".join(f.lines()))
    assert f.family_wise_error <= f.family_wise_bound
    assert f.p_equivalent_at_margin <= f.equivalent_bound
    assert 0.76 <= f.power_at_mdd <= 0.84


def test_bootstrap_difference_is_descriptive_and_enumerable():
    # a − b = ADDITIVE − 0.80 everywhere: a resampled mean difference is 0.07 ± …: 0.10·u + 0.04·v − … ; with b flat
    # at 0.80, Δ* = 0.10·u + 0.04·v: P(0) = P(0.14) = 1/16 > 2.5 %, so the percentile interval is [0, 0.14]
    flat = {0: {7: 0.80, 8: 0.80}, 1: {7: 0.80, 8: 0.80}}
    low, high = bootstrap_difference(ADDITIVE, flat, n_boot=20_000, rng=0)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.14)
    assert bootstrap_difference(ADDITIVE, flat, n_boot=20_000, rng=0) == (low, high)  # a fixed seed
    assert bootstrap_difference({0: {5: 0.9}}, {0: {5: 0.1}}) is None  # one score: nothing varies


def test_bootstrap_mean_and_the_spread_of_repeats():
    s = bootstrap_mean(ADDITIVE, n_boot=20_000, rng=0)
    # mean 0.87; repeat means 0.82 and 0.92; resampled mean 0.80 + 0.10·u + 0.04·v → interval [0.80, 0.94]
    assert s.mean == pytest.approx(0.87) and s.repeat_means == pytest.approx([0.82, 0.92])
    assert (s.n_repeats, s.n_seeds) == (2, 2)
    assert s.ci_low == pytest.approx(0.80) and s.ci_high == pytest.approx(0.94)
    assert s.std == pytest.approx(np.std([0.80, 0.84, 0.90, 0.94], ddof=1))
    one = bootstrap_mean({0: {5: 0.9}})
    assert (one.n_seeds, one.n_repeats, one.mean, one.std, one.ci_low, one.ci_high) == (1, 1, 0.9, None, None, None)


def test_verdict_vocabulary_is_one_str_enum():
    assert [v.value for v in Verdict] == [
        "better", "worse", "equivalent", "undecided", "inconclusive: search failure", "inconclusive",
    ]  # fmt: skip
    assert Verdict("inconclusive: search failure") is Verdict.SEARCH_FAILURE and Verdict.BETTER == "better"
    assert [v.is_decided for v in Verdict] == [True, True, True, False, True, False]
    assert [v.is_conclusive for v in Verdict] == [True, True, True, True, False, False]


def test_range_position_in_log_space_and_the_outer_tail():
    assert range_position(1.0, 0.1, 10.0, log=True) == pytest.approx(0.5)
    assert range_position(0.1 * 10**0.1, 0.1, 10.0, log=True) == pytest.approx(0.05)
    assert range_position(0.25, 0.0, 0.5, log=False) == pytest.approx(0.5)
    assert range_position(3.0, 3.0, 3.0, log=False) == 0.5
    assert at_edge(0.05) and at_edge(0.95) and at_edge(0.0) and not at_edge(0.5) and not at_edge(0.1)  # as the check
    with pytest.raises(ValueError, match="> 0"):
        range_position(0.0, 0.1, 1.0, log=True)


def test_spending_check_allows_one_trial_of_difference():
    ok = SpendingCheck(256, 0, {"tvlars": 96, "lars": 120}, limit=24)
    assert (ok.spread, ok.ok) == (24, True)
    bad = SpendingCheck(256, 1, {"tvlars": 72, "lars": 120}, limit=24)
    assert (bad.spread, bad.ok) == (48, False)
    assert bad.to_dict()["ok"] is False and bad.to_dict()["spread"] == 48


def test_expected_max_matches_the_formula_by_hand_and_by_enumeration():
    values = [0.5, 0.1, 0.9]
    # sorted 0.1, 0.5, 0.9; n=2: weights 1/9, 3/9, 5/9 → 6.1/9; n=3: 1/27, 7/27, 19/27 → 20.7/27
    assert expected_max(values, [1, 2, 3]) == pytest.approx([0.5, 6.1 / 9, 20.7 / 27])
    for n in (1, 2, 3):  # the mean of the max over every ordered draw with replacement
        draws = [max(c) for c in itertools.product(values, repeat=n)]
        assert expected_max(values, n)[0] == pytest.approx(sum(draws) / len(draws))


def test_expected_best_band_contains_the_mean_failed_trials_count_and_is_reproducible():
    values = [0.62, None, 0.71, 0.55, 0.80, 0.40, float("nan"), 0.77]
    eb = expected_best(values, n_max=10, n_boot=300, rng=0)
    assert eb.n == list(range(1, 11))
    assert all(lo <= m + 1e-12 and m <= hi + 1e-12 for lo, m, hi in zip(eb.low, eb.mean, eb.high, strict=True))
    assert all(x <= y + 1e-12 for x, y in itertools.pairwise(eb.mean))  # more trials never hurt in expectation
    assert eb.mean[0] == pytest.approx((0.62 + 0 + 0.71 + 0.55 + 0.80 + 0.40 + 0 + 0.77) / 8)  # failures score 0
    assert eb.observed == [0.62, 0.62, 0.71, 0.71, 0.80, 0.80, 0.80, 0.80]
    assert expected_best(values, n_max=10, n_boot=300, rng=0) == eb
    assert eb.high[-1] <= 0.80 + 1e-12 and eb.mean[-1] < 0.80
    assert expected_best([0.3], n_boot=5, rng=np.random.default_rng(1)).mean == [0.3]


def test_time_to_target_in_epochs_steps_and_seconds_and_never_counts_as_never():
    reaches = [
        {"epoch": 1, "val_acc": 0.30, "step": 8, "epoch_seconds": 1.5},
        {"epoch": 2, "val_acc": 0.58, "step": 16, "epoch_seconds": 1.0},
        {"epoch": 3, "val_acc": 0.61, "step": 24, "epoch_seconds": 1.25},
        {"epoch": 4, "val_acc": 0.70, "step": 32, "epoch_seconds": 1.0},
    ]
    never = [{"epoch": e, "val_acc": 0.5, "epoch_seconds": 1.0} for e in (1, 2, 3)]
    no_step = [{"epoch": 1, "val_acc": 0.2}, {"epoch": 2, "val_acc": 0.9}]
    hit, miss, derived = time_to_target([reaches, never, no_step], 0.6, steps_per_epoch=5)
    assert (hit.epochs, hit.steps, hit.wall_seconds) == (3, 24, 3.75)
    assert miss is None
    assert (derived.epochs, derived.steps, derived.wall_seconds) == (2, 10, None)
    assert time_to_target([reaches], 0.58)[0].epochs == 2  # reaching exactly the target counts
    assert (
        time_to_target([[{"epoch": 1, "test_acc": 0.9, "wall_seconds": 4.0}]], 0.5, metric="test_acc")[0].wall_seconds
        == 4.0
    )


def test_lr_sensitivity_points_and_log_bins():
    sens = lr_sensitivity([10.0, 0.1, 1.0, 100.0, 3.0], [0.6, 0.2, 0.8, None, 0.7], n_bins=2)
    assert sens.lrs == [0.1, 1.0, 3.0, 10.0]  # the failed trial (None) is left out
    assert sens.values == [0.2, 0.8, 0.7, 0.6]
    # bins over 0.1..10 in log space: [0.1, 1) and [1, 10]
    assert [b.count for b in sens.bins] == [1, 3]
    assert sens.bins[0].lr_low == pytest.approx(0.1) and sens.bins[1].lr_low == pytest.approx(1.0)
    assert sens.bins[1].median == pytest.approx(0.7) and sens.bins[1].best == 0.8
    assert sum(b.count for b in lr_sensitivity([0.01 * 1.7**i for i in range(20)], [0.5] * 20).bins) == 20
    with pytest.raises(ValueError, match="LRs"):
        lr_sensitivity([1.0], [0.5, 0.6])
