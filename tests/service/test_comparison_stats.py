"""Comparison statistics against hand computations on fixed numbers (the hand numbers are written out)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from service.comparisons.stats import (
    Difference,
    SpendingCheck,
    Verdict,
    at_edge,
    bootstrap_difference,
    bootstrap_mean,
    common_seeds,
    decide,
    expected_best,
    expected_max,
    holm,
    lr_sensitivity,
    range_position,
    time_to_target,
)

# Repeat r, seed s scores 0.80 + 0.10·r + 0.04·s: additive, so a resampled mean is 0.80 + 0.10·u + 0.04·v with u, v
# the shares of repeat 1 and of the second seed in the draw, each 0, ½ or 1 with probability ¼, ½, ¼.
ADDITIVE = {0: {7: 0.80, 8: 0.84}, 1: {7: 0.90, 8: 0.94}}
FLAT = {0: {7: 0.80, 8: 0.80}}


def test_bootstrap_difference_matches_the_enumerated_distribution():
    # Δ* = 0.10·u + 0.04·v: P(Δ* = 0) = 1/16 > 2.5 %, P(Δ* = 0.14) = 1/16 > 2.5 %, so the percentile interval is
    # [0, 0.14]; the point estimate is 0.87 − 0.80 = 0.07; P(Δ* ≤ 0) = 1/16 and P(Δ* ≥ 0) = 1, so p = 2/16 = 0.125
    d = bootstrap_difference(ADDITIVE, FLAT, n_boot=20_000, rng=0)
    assert d.mean == pytest.approx(0.07)
    assert d.ci_low == pytest.approx(0.0, abs=1e-12) and d.ci_high == pytest.approx(0.14)
    assert d.p_bootstrap == pytest.approx(0.125, abs=0.01)
    # FLAT has one repeat, so no Welch test: the paired t over seeds of the repeat-averaged scores, differences 0.05
    # and 0.09: t = 0.07 / (0.0283 / √2) = 3.5 with 1 degree of freedom, p = 1 − 2·atan(3.5)/π
    assert d.p_repeats == pytest.approx(1 - 2 * math.atan(3.5) / math.pi)
    assert d.p_value == max(d.p_bootstrap, d.p_repeats)
    assert (d.n_seeds, d.n_repeats, d.seeds, d.p_adjusted) == (2, (2, 1), (7, 8), None)
    # the bootstrap's standard error by hand: Var(0.10·u + 0.04·v) = 0.01·⅛ + 0.0016·⅛ (Var u = Var v = ⅛)
    assert d.se == pytest.approx(math.sqrt((0.01 + 0.0016) / 8), rel=0.03)
    # every draw value is one of the nine atoms 0.10·u + 0.04·v
    assert decide(d) is Verdict.NO_CLEAR_DIFFERENCE
    assert bootstrap_difference(ADDITIVE, FLAT, n_boot=20_000, rng=0) == d  # a fixed seed: the same numbers


def test_bootstrap_difference_pairs_seeds_across_arms():
    # b is a 2 points below on every seed, whatever the seed does: paired, every draw is exactly +0.02
    a = {0: {1: 0.50, 2: 0.90, 3: 0.70}, 1: {1: 0.50, 2: 0.90, 3: 0.70}}
    b = {0: {1: 0.48, 2: 0.88, 3: 0.68, 4: 0.10}, 1: {1: 0.48, 2: 0.88, 3: 0.68}}  # seed 4: not in every repeat
    d = bootstrap_difference(a, b, n_boot=2_000, rng=1)
    assert d.seeds == (1, 2, 3)
    assert d.ci_low == pytest.approx(0.02) and d.ci_high == pytest.approx(0.02)
    assert d.p_value == pytest.approx(2 / 2_001)  # no draw at or below 0: the smallest p the +1 rule allows
    assert decide(d) is Verdict.BETTER
    assert decide(bootstrap_difference(b, a, n_boot=2_000, rng=1)) is Verdict.WORSE
    with pytest.raises(ValueError, match="same seeds"):
        bootstrap_difference({0: {1: 0.5}}, {0: {2: 0.5}})


def test_repeats_that_disagree_keep_a_separated_bootstrap_from_a_verdict():
    # The first published run's case (batch 1024, TVLARS against LARS + warm-up): every score of a below every score
    # of b, so no bootstrap draw crosses 0, yet a's two tunings differ by 1.2 points. Welch on the repeat means by hand:
    # means 0.9505, 0.9621 and 0.9703, 0.9717; variances 2·0.0058² and 2·0.0007²; se² = (va + vb) / 2.
    a = {0: {1: 0.9500, 2: 0.9510}, 1: {1: 0.9616, 2: 0.9626}}
    b = {0: {1: 0.9698, 2: 0.9708}, 1: {1: 0.9712, 2: 0.9722}}
    d = bootstrap_difference(a, b, n_boot=2_000, rng=0)
    assert d.p_bootstrap == pytest.approx(2 / 2_001)
    va, vb = 2 * 0.0058**2, 2 * 0.0007**2
    se2 = (va + vb) / 2
    t = (0.9563 - 0.9710) / math.sqrt(se2)
    df = se2**2 / ((va / 2) ** 2 + (vb / 2) ** 2)  # Welch–Satterthwaite, n − 1 = 1 per arm
    assert d.p_repeats == pytest.approx(2 * scipy_stats.t.sf(abs(t), df), rel=1e-6)
    assert 0.2 < d.p_value == d.p_repeats < 0.3
    assert decide(d) is Verdict.NO_CLEAR_DIFFERENCE


def test_one_seed_and_one_repeat_give_no_interval():
    d = bootstrap_difference({0: {5: 0.9}}, {0: {5: 0.1}})
    assert d.mean == pytest.approx(0.8) and (d.ci_low, d.ci_high, d.p_value) == (None, None, None)
    assert decide(d) is Verdict.INCONCLUSIVE
    one = bootstrap_mean({0: {5: 0.9}})
    assert (one.n_seeds, one.n_repeats, one.mean, one.std, one.ci_low, one.ci_high) == (1, 1, 0.9, None, None, None)


def test_bootstrap_mean_and_the_spread_of_repeats():
    s = bootstrap_mean(ADDITIVE, n_boot=20_000, rng=0)
    # mean 0.87; repeat means 0.82 and 0.92; resampled mean 0.80 + 0.10·u + 0.04·v → interval [0.80, 0.94]
    assert s.mean == pytest.approx(0.87) and s.repeat_means == pytest.approx([0.82, 0.92])
    assert (s.n_repeats, s.n_seeds) == (2, 2)
    assert s.ci_low == pytest.approx(0.80) and s.ci_high == pytest.approx(0.94)
    assert s.std == pytest.approx(np.std([0.80, 0.84, 0.90, 0.94], ddof=1))
    assert common_seeds({0: {1: 0.1, 2: 0.2}, 1: {2: 0.3}}) == (2,)


def test_holm_matches_a_hand_computation():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.3, 0.6]) == pytest.approx([0.6, 0.6])  # capped and monotone
    assert holm([0.5]) == [0.5] and holm([]) == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([1.5])


@pytest.mark.parametrize(
    ("mean", "p", "p_adjusted", "expected"),
    [
        (0.02, 0.001, None, Verdict.BETTER),
        (-0.02, 0.001, None, Verdict.WORSE),
        (0.02, 0.001, 0.06, Verdict.NO_CLEAR_DIFFERENCE),  # Holm's adjusted value decides once it is set
        (-0.02, 0.04, 0.049, Verdict.WORSE),
        (0.02, 0.05, None, Verdict.NO_CLEAR_DIFFERENCE),  # at α exactly: not below it
        (0.02, None, None, Verdict.INCONCLUSIVE),
    ],
)
def test_decide_follows_the_adjusted_p_value(mean, p, p_adjusted, expected):
    assert decide(Difference(mean, None, None, None, p, 3, (3, 3), (1, 2, 3), p_adjusted)) is expected


def test_verdict_vocabulary_is_one_str_enum():
    assert [v.value for v in Verdict] == [
        "better", "no clear difference", "worse", "inconclusive: search failure", "inconclusive",
    ]  # fmt: skip
    assert Verdict("inconclusive: search failure") is Verdict.SEARCH_FAILURE and Verdict.BETTER == "better"
    assert [v.is_conclusive for v in Verdict] == [True, True, True, False, False]


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
