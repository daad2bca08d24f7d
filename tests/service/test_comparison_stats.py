"""Comparison statistics against hand computations on fixed numbers (the hand numbers are written out)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from service.comparisons.stats import (
    Difference,
    Verdict,
    compute_spent,
    expected_best,
    expected_max,
    lr_sensitivity,
    paired_difference,
    summarize,
    time_to_target,
    verdict,
)


def test_summarize_matches_a_hand_t_interval():
    # mean 0.82; s = sqrt((0.02² + 0 + 0.02²) / 2) = 0.02; se = 0.02/√3 = 0.0115470;
    # t(0.975, 2) = 4.302653 → half width 0.0496828 → [0.7703172, 0.8696828]
    s = summarize([0.80, 0.82, 0.84])
    assert s.n_seeds == 3
    assert s.mean == pytest.approx(0.82)
    assert s.std == pytest.approx(0.02)
    assert s.ci_low == pytest.approx(0.7703172, abs=1e-6)
    assert s.ci_high == pytest.approx(0.8696828, abs=1e-6)
    assert s.to_dict() == {"n_seeds": 3, "mean": s.mean, "std": s.std, "ci_low": s.ci_low, "ci_high": s.ci_high}


def test_summarize_one_seed_gives_no_interval_and_identical_seeds_a_zero_width_one():
    one = summarize([0.9])
    assert (one.n_seeds, one.mean, one.std, one.ci_low, one.ci_high) == (1, 0.9, None, None, None)
    same = summarize([0.5, 0.5])
    assert same.std == 0.0 and same.ci_low == same.ci_high == 0.5
    with pytest.raises(ValueError, match="no values"):
        summarize([])
    with pytest.raises(ValueError, match="finite"):
        summarize([0.5, float("nan")])


def test_paired_difference_uses_common_seeds_and_matches_a_hand_interval():
    a = {1: 0.90, 2: 0.92, 3: 0.91, 4: 0.93}
    b = {1: 0.88, 2: 0.89, 3: 0.90, 4: 0.90, 5: 0.50}  # seed 5 has no partner: left out
    # differences 0.02, 0.03, 0.01, 0.03: mean 0.0225; s² = (0.0025² + 0.0075² + 0.0125² + 0.0075²)/3 = 9.1667e-5,
    # s = 0.0095743; se = 0.0047871; t(0.975, 3) = 3.182446 → half 0.0152347 → [0.0072653, 0.0377347]
    d = paired_difference(a, b)
    assert d.n_pairs == 4 and d.seeds == (1, 2, 3, 4)
    assert d.mean == pytest.approx(0.0225)
    assert d.std == pytest.approx(0.0095743, abs=1e-6)
    assert d.ci_low == pytest.approx(0.0072653, abs=1e-6)
    assert d.ci_high == pytest.approx(0.0377347, abs=1e-6)
    assert verdict(d) is Verdict.BETTER
    assert paired_difference(b, a).ci_high == pytest.approx(-0.0072653, abs=1e-6)
    assert verdict(paired_difference(b, a)) is Verdict.WORSE
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference({1: 0.5}, {2: 0.5})


@pytest.mark.parametrize(
    ("ci", "expected"),
    [
        ((0.001, 0.02), Verdict.BETTER),
        ((-0.02, -0.001), Verdict.WORSE),
        ((-0.01, 0.01), Verdict.NO_CLEAR_DIFFERENCE),
        ((0.0, 0.02), Verdict.NO_CLEAR_DIFFERENCE),  # touching 0: the interval allows no difference
        ((-0.02, 0.0), Verdict.NO_CLEAR_DIFFERENCE),
        ((None, None), Verdict.NO_CLEAR_DIFFERENCE),  # one seed: no interval, no claim
    ],
)
def test_verdict_says_only_what_the_interval_allows(ci, expected):
    assert verdict(ci) is expected
    assert verdict(Difference(2, 0.0, None, ci[0], ci[1], (1, 2))) is expected


def test_one_pair_gives_no_verdict():
    d = paired_difference({7: 0.9}, {7: 0.1})
    assert d.ci_low is None and verdict(d) is Verdict.NO_CLEAR_DIFFERENCE


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


def test_compute_spent_counts_pruned_and_failed_trials():
    spent = compute_spent([30, 5, 5, 2], [12.0, 2.0, None, 1.5])
    assert (spent.n_trials, spent.epochs, spent.wall_seconds) == (4, 42, 15.5)
    assert not math.isnan(spent.wall_seconds)
